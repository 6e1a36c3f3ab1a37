from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project's own settings-level parts that Django must load: the deploy checks, and API
    tokens ending with a password change."""

    name = "config"
    verbose_name = "prefloop"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_save

        from config import security  # noqa: F401  registers its deploy check
        from config.authentication import tokens_revoke_on_password_change

        post_save.connect(
            tokens_revoke_on_password_change, sender=get_user_model(), dispatch_uid="tokens_revoke"
        )
