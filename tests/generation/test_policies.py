"""Registering policies: generation.services.policy_register and the register_policy command."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from config.errors import Invalid
from generation.models import Policy
from generation.services import policy_register


@pytest.mark.django_db
def test_register_policy_checks_the_model_now(chat_model_dir, tmp_path):
    policy = policy_register(name="tiny", location=str(chat_model_dir))
    assert policy.location_kind == "directory"
    with pytest.raises(Invalid, match="no such directory"):
        policy_register(name="x", location=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(Invalid, match=r"no config\.json"):
        policy_register(name="x", location=str(tmp_path / "empty"))
    with pytest.raises(Invalid, match="not a LoRA adapter directory"):
        policy_register(name="x", location=str(chat_model_dir), adapter=str(tmp_path / "empty"))
    with pytest.raises(Invalid, match="cannot be loaded"):
        policy_register(name="x", location="some-org/not-in-the-cache")
    with pytest.raises(CommandError, match="already exists"):
        call_command("register_policy", "tiny", "--path", str(chat_model_dir))
    assert Policy.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db
def test_register_embedded_policy():
    out = StringIO()
    call_command("register_policy", "--embedded", stdout=out)
    call_command("register_policy", "--embedded", stdout=out)
    policy = Policy.objects.get()
    assert policy.name == "smollm2-135m-instruct"
    assert "smollm2" in out.getvalue()


@pytest.mark.django_db
def test_a_location_typed_in_the_admin_gets_register_policys_checks(client, chat_model_dir):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    policy = Policy.objects.create(name="p", location=str(chat_model_dir), location_kind="hub")
    url = f"/admin/generation/policy/{policy.pk}/change/"
    form = {"name": "p", "adapter": "", "notes": "", "held_back_reason": ""}

    refused = client.post(url, {**form, "location": "/etc"})
    policy.refresh_from_db()
    assert (
        refused.status_code == 200 and "/etc: not a Hugging Face model directory" in refused.content.decode()
    )
    assert policy.location == str(chat_model_dir)  # nothing saved

    hub = client.post(url, {**form, "location": "someone/not-in-the-cache"})
    assert "cannot be loaded" in hub.content.decode()  # nothing is downloaded to check it

    client.post(url, {**form, "location": str(chat_model_dir)})
    policy.refresh_from_db()
    assert policy.location_kind == "directory"  # from what the location is, not what was typed
