import pytest

from generation.models import Prompt
from tests.db_rules import violates


@pytest.mark.django_db
def test_prompt_with_both_text_and_messages_is_rejected_by_the_database():
    with violates("prompt_text_xor_messages"):
        Prompt.objects.create(text="hi", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.django_db
def test_prompt_with_neither_text_nor_messages_is_rejected_by_the_database():
    with violates("prompt_text_xor_messages"):
        Prompt.objects.create(text="")


@pytest.mark.django_db
def test_plain_prompt_and_single_user_message_share_a_content_hash():
    plain = Prompt.objects.create(text="What is DPO?")
    with violates("content_hash"):  # the same hash: the unique column, named on either database
        Prompt.objects.create(messages=[{"role": "user", "content": "What is DPO?"}])
    assert plain.as_messages() == [{"role": "user", "content": "What is DPO?"}]
    assert not plain.is_chat
