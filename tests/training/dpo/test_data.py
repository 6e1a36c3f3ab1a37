import pytest
from transformers import AutoTokenizer

from generation.embedded import embedded_materialise
from tests.training.dpo.conftest import write_jsonl
from training.dpo.data import Pair, batch_collate, pair_tokenize, pairs_read

MSG = [{"role": "user", "content": "What is the capital of France?"}]


def answer(text):
    return [{"role": "assistant", "content": text}]


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    return AutoTokenizer.from_pretrained(embedded_materialise())


def test_bad_lines_are_all_reported_with_numbers_before_training(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "ok", "chosen": "a", "rejected": "b"},
            {"prompt": "x", "rejected": "b"},
            {"prompt": "x", "chosen": "  ", "rejected": "b"},
            {"prompt": "x", "chosen": "same", "rejected": "same"},
            {"prompt": MSG, "chosen": answer("a"), "rejected": answer("b")},
            {"prompt": 3, "chosen": "a", "rejected": "b"},
        ],
    )
    with open(path, "a", encoding="utf-8") as stream:
        stream.write("{broken\n")
    with pytest.raises(ValueError) as excinfo:
        pairs_read(path)
    message = str(excinfo.value)
    assert "6 bad line(s), nothing trained" in message
    for line, reason in [
        (2, "missing field 'chosen'"),
        (3, "'chosen' is empty"),
        (4, "'chosen' and 'rejected' are identical"),
        (5, "mixes conversational and standard rows"),
        (6, "'prompt' must be a string or a list of messages"),
        (7, "not valid JSON"),
    ]:
        assert f"{path}:{line}: {reason}" in message


@pytest.mark.slow
def test_conversational_pair_on_smollm2_counts_exactly_the_answer_and_its_eos(smollm2_tokenizer):
    tok = smollm2_tokenizer
    pair = Pair(1, MSG, answer("Paris."), answer("London, obviously."))

    tokenized = pair_tokenize(tok, pair, max_length=512, max_prompt_length=None)

    assert (
        tokenized.prompt_ids
        == tok.apply_chat_template(MSG, add_generation_prompt=True, return_dict=True)["input_ids"]
    )
    assert tok.decode(tokenized.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tokenized.chosen_ids == tok(text="Paris.")["input_ids"] + [tok.eos_token_id]
    assert tok.decode(tokenized.chosen_ids) == "Paris.<|im_end|>"
    assert tok.decode(tokenized.rejected_ids) == "London, obviously.<|im_end|>"
    assert tok.decode(tokenized.chosen_ids[:1]) == "Paris"


def test_standard_pair_without_chat_template_is_tokenised_as_is_with_eos(plain_model_dir):
    tok = AutoTokenizer.from_pretrained(plain_model_dir)
    assert not tok.chat_template
    pair = Pair(1, "name a colour:", " blue.", " the lazy dog")

    tokenized = pair_tokenize(tok, pair, max_length=128, max_prompt_length=None)

    assert tokenized.prompt_ids == tok(text="name a colour:")["input_ids"]
    assert (
        tokenized.prompt_ids + tokenized.chosen_ids == tok(text="name a colour: blue.<|im_end|>")["input_ids"]
    )
    assert tokenized.chosen_ids[-1] == tokenized.rejected_ids[-1] == tok.eos_token_id
    assert tok.decode(tokenized.chosen_ids) == " blue.<|im_end|>"


def test_conversational_data_needs_a_chat_template(plain_model_dir):
    tok = AutoTokenizer.from_pretrained(plain_model_dir)
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        pair_tokenize(tok, Pair(4, MSG, answer("a"), answer("b")), max_length=64, max_prompt_length=None)


def test_truncation_keeps_the_prompt_end_and_the_response_start(plain_model_dir):
    tok = AutoTokenizer.from_pretrained(plain_model_dir)
    prompt = " ".join(["the quick brown fox"] * 10) + " what is the capital?"
    response = " paris is the capital." * 10
    full_prompt = tok(text=prompt)["input_ids"]

    tokenized = pair_tokenize(tok, Pair(1, prompt, response, " no."), max_length=40, max_prompt_length=16)

    assert tokenized.prompt_ids == full_prompt[-16:]
    assert tok.decode(tokenized.prompt_ids).endswith("what is the capital?")
    assert len(tokenized.prompt_ids) + len(tokenized.chosen_ids) == 40
    assert tok.decode(tokenized.chosen_ids).startswith(" paris is the capital.")
    assert tokenized.rejected_ids[-1] == tok.eos_token_id  # short enough to keep whole

    no_budget = pair_tokenize(tok, Pair(1, prompt, response, " no."), max_length=20, max_prompt_length=None)
    assert no_budget.prompt_ids == full_prompt[-10:]  # a prompt filling max_length keeps its last half
    assert len(no_budget.chosen_ids) == 10


def test_batch_is_chosen_rows_then_rejected_rows_with_a_completion_mask():
    from training.dpo.data import TokenizedPair

    a = TokenizedPair([1, 2], [3, 4, 9], [5, 9])
    b = TokenizedPair([6], [7, 9], [8, 8, 8, 9])
    batch = batch_collate([(0, a), (1, b)], pad_id=0)
    assert batch.input_ids.tolist() == [
        [1, 2, 3, 4, 9],
        [6, 7, 9, 0, 0],
        [1, 2, 5, 9, 0],
        [6, 8, 8, 8, 9],
    ]
    assert batch.completion_mask.tolist() == [
        [0, 0, 1, 1, 1],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 1, 1, 1, 1],
    ]
    assert batch.attention_mask.sum(-1).tolist() == [5, 3, 4, 5]
    assert batch.index.tolist() == [0, 1]


def test_length_grouped_batches_pad_little_and_keep_every_pair_once():
    from training.dpo.data import TokenizedPair, batches

    data = [TokenizedPair([1] * n, [2] * (n % 7 + 1), [3]) for n in (30, 2, 17, 3, 29, 16, 1, 18)]
    grouped = batches(data, list(range(8)), batch_size=2, pad_id=0, shuffle_seed=5, group_by_length=True)
    again = batches(data, list(range(8)), batch_size=2, pad_id=0, shuffle_seed=5, group_by_length=True)
    plain = batches(data, list(range(8)), batch_size=2, pad_id=0, shuffle_seed=5)

    assert sorted(i for b in grouped for i in b.index.tolist()) == list(range(8))
    assert [b.index.tolist() for b in grouped] == [b.index.tolist() for b in again]  # reproducible

    def padding(bs):
        return sum(int((b.attention_mask == 0).sum()) for b in bs)

    assert padding(grouped) < padding(plain)
    assert {frozenset(b.index.tolist()) for b in grouped} == {
        frozenset(p) for p in ({6, 1}, {3, 5}, {2, 7}, {4, 0})
    }
