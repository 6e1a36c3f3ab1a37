from pathlib import Path

from annotate.models import AIJudge
from annotate.services.ai_judges import judge_register
from config.commands import Command as BaseCommand
from config.errors import Invalid
from generation.services import policy_named


class Command(BaseCommand):
    help = (
        "Register an AI judge: a policy the project serves (--policy), or any OpenAI-compatible chat API "
        "(--url with --model; its key read from the environment variable --api-key-env names, never stored)."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--policy", help="a registered policy, answered by the generation process")
        parser.add_argument("--url", default="", help="an OpenAI-compatible API's base URL")
        parser.add_argument("--model", default="", help="the model name that URL serves")
        parser.add_argument("--api-key-env", default="", help="the environment variable holding its key")
        parser.add_argument(
            "--rubric", type=Path, help="a file with the judge's instructions ({prompt}, {first}, {second})"
        )
        parser.add_argument(
            "--exist-ok", action="store_true", help="a judge of that name already there is fine"
        )

    def handle(self, *args, name, policy, url, model, api_key_env, rubric, exist_ok, **options):
        if exist_ok and AIJudge.objects.filter(name=name.strip()).exists():
            self.say(f"AI judge {name.strip()!r} is registered already")
            return
        text = ""
        if rubric is not None:
            try:
                text = rubric.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise Invalid(f"{rubric}: {exc}") from exc
        judge = judge_register(
            name=name,
            policy=policy_named(policy) if policy else None,
            url=url,
            model=model,
            api_key_env=api_key_env,
            rubric=text,
        )
        where = f"policy {judge.policy.name}" if judge.policy else f"{judge.url} ({judge.model})"
        self.say(f"AI judge {judge.name!r} registered: {where}")
