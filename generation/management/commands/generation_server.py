from django.conf import settings
from django.db import connections

from config.commands import Command as BaseCommand
from generation.models import Policy
from generation.server import server_make


def _registered(location: str) -> bool:
    """Only registered policies' locations load (each check runs in a request's own thread)."""
    try:
        return Policy.objects.filter(location=location).exists()
    finally:
        connections.close_all()


class Command(BaseCommand):
    help = (
        "Serve live answers (the arena) from registered policies on the transformers backend, with "
        "vLLM's OpenAI-compatible chat API, until stopped. Listens on PREFLOOP_ARENA_URL's port."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, help="default: PREFLOOP_ARENA_URL's port")
        parser.add_argument("--models", type=int, default=4, help="models kept loaded at once")
        parser.add_argument("--concurrency", type=int, default=8, help="answers generated at once")

    def handle(self, *args, host, port, models, concurrency, **options):
        from urllib.parse import urlsplit

        port = port or urlsplit(settings.PREFLOOP_ARENA_URL).port or 8011
        server = server_make(
            host=host, port=port, allowed=_registered, capacity=models, concurrency=concurrency
        )
        self.say(
            f"generation server on http://{host}:{server.server_address[1]} (transformers; Ctrl-C stops it)"
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
