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
