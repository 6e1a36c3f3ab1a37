import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotate.models import Comparison
from annotate.services.judgments import import_user
from tests.factories import UserFactory


@pytest.mark.django_db
def test_demo_setup_runs_in_debug_mode_and_creates_the_published_users(settings):
    settings.DEBUG = True
    call_command("demo_setup", "--canned")
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_staff and admin.check_password("prefloop-admin")
    assert get_user_model().objects.get(username="annotator1").check_password("prefloop-annotator1")
    assert Comparison.objects.filter(campaign__name="demo").count() == 10


@pytest.mark.django_db
def test_demo_setup_refuses_production_mode_unless_forced(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG mode only"):
        call_command("demo_setup")
    assert not get_user_model().objects.filter(username="admin").exists()
    call_command("demo_setup", "--force")
    assert get_user_model().objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_demo_setup_refuses_a_database_where_other_people_log_in(settings):
    settings.DEBUG = True
    import_user()  # a system user (no password) does not count
    UserFactory(username="alice")
    with pytest.raises(CommandError, match=r"1 other user\(s\) who can log in \(alice\)"):
        call_command("demo_setup")
    assert not get_user_model().objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_demo_setup_never_resets_an_existing_users_password(settings, capsys):
    settings.DEBUG = True
    admin = UserFactory(username="admin", is_staff=True)
    admin.set_password("our real admin password")
    admin.save()
    UserFactory(username="alice")
    call_command("demo_setup", "--force")
    admin.refresh_from_db()
    assert admin.check_password("our real admin password")
    assert "admin       / (existing: unchanged)" in capsys.readouterr().out
    assert get_user_model().objects.get(username="annotator2").check_password("prefloop-annotator2")
