from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project's own settings-level parts that Django must load: the deploy checks."""

    name = "config"
    verbose_name = "prefloop"

    def ready(self) -> None:
        from config import security  # noqa: F401  registers its deploy check
