from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate, pre_migrate


def _remove(sender, using, **kwargs):
    from annotate.triggers import triggers_remove

    triggers_remove(connection=connections[using])


def _install(sender, using, **kwargs):
    from annotate.triggers import triggers_install

    triggers_install(connection=connections[using])


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Annotation"

    def ready(self) -> None:
        # The cross-table trigger lives outside migrations: see annotate/triggers.py.
        pre_migrate.connect(_remove, sender=self, dispatch_uid="annotate_triggers_remove")
        post_migrate.connect(_install, sender=self, dispatch_uid="annotate_triggers_install")
