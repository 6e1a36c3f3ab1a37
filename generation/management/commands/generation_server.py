from django.conf import settings
from django.db import connections

from config.commands import Command as BaseCommand
from generation.engines import ENGINES, MAX_LORA_RANK, MAX_LORAS, Served
from generation.server import serve_until_stopped, server_make
from generation.services import policy_served


def _resolve(model: str) -> Served | None:
    """Only registered policies start an engine (each lookup runs in a request's own thread)."""
    try:
        return policy_served(model)
    finally:
        connections.close_all()


def memory_default_gb() -> float:
    """Half the machine's memory: the web, the workers and the database keep the rest."""
    import psutil

    return round(psutil.virtual_memory().total / 1024**3 / 2, 1)


class Command(BaseCommand):
    help = (
        "The generation process: live answers (the arena) for every registered policy, from engines it "
        "starts and stops within a memory budget (vLLM where `make vllm` built it: a base model's LoRA "
        "policies share its engine; else transformers, one answer at a time), with vLLM's "
        "OpenAI-compatible chat API, until stopped. Listens on PREFLOOP_ARENA_URL's port."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, help="default: PREFLOOP_ARENA_URL's port")
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="auto",
            help="auto: vllm where .venv-vllm is built, else plain",
        )
        parser.add_argument(
            "--memory-gb",
            type=float,
            help="memory the engines may take together; least recently used idle engines stop to make "
            "room (default: PREFLOOP_ENGINE_MEMORY_GB, else half the machine's memory)",
        )
        parser.add_argument("--max-loras", type=int, default=MAX_LORAS, help="adapters in one vLLM batch")
        parser.add_argument(
            "--max-lora-rank", type=int, default=MAX_LORA_RANK, help="the highest adapter rank engines take"
        )
        parser.add_argument("--concurrency", type=int, default=64, help="answers streamed at once")

    def handle(self, *args, host, port, engine, memory_gb, max_loras, max_lora_rank, concurrency, **options):
        from urllib.parse import urlsplit

        port = port or urlsplit(settings.PREFLOOP_ARENA_URL).port or 8011
        memory_gb = memory_gb or settings.PREFLOOP_ENGINE_MEMORY_GB or memory_default_gb()
        server = server_make(
            host=host,
            port=port,
            resolve=_resolve,
            engine=engine,
            memory_gb=memory_gb,
            concurrency=concurrency,
            max_loras=max_loras,
            max_lora_rank=max_lora_rank,
        )
        self.say(
            f"generation server on http://{host}:{server.server_address[1]} ({server.engines.kind} engines, "
            f"{memory_gb:g} GiB for them; Ctrl-C stops it)"
        )
        serve_until_stopped(server)
