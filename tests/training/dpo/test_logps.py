"""The chunked LM head and packed rows give the plain path's log-probs and gradients."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from training.dpo import logps as logps_module
from training.dpo.attention import varlen_enable
from training.dpo.data import TokenizedPair, batch_collate
from training.dpo.logps import TokenLogps, label_logps, sequence_logps, sequence_logps_full_logits


def tiny_llama(vocab=300, tie=False, heads=4, kv_heads=2):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config)


def ragged_batch(vocab=300):
    """Three pairs of different prompt and response lengths: padding in every row but the longest."""
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    items = [(0, TokenizedPair(ids(2), ids(9), ids(1))), (1, TokenizedPair(ids(7), ids(3), ids(12)))]
    items.append((2, TokenizedPair(ids(4), ids(5), ids(5))))
    return batch_collate(items, pad_id=0)


def grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("layout", ["padded", "packed", "pairs"])
def test_chunked_head_matches_full_logits_in_values_and_gradients(layout, tie, monkeypatch):
    """Padded rows, packed rows, and packed pairs (each prompt once, both responses after it)."""
    packed = layout != "padded"
    monkeypatch.setattr(logps_module, "LOGIT_CHUNK_ELEMENTS", 300 * 5)  # 5 positions per chunk
    model = tiny_llama(tie=tie)
    batch = ragged_batch()
    expected, expected_tokens = sequence_logps_full_logits(model, batch)
    (expected * torch.arange(1.0, 7.0)).sum().backward()  # distinct weights: rows cannot swap unseen
    expected_grads = grads(model)
    model.zero_grad()

    if packed:
        assert varlen_enable(model)
    scorer = TokenLogps(model, packed=packed, share_prompt=layout == "pairs")
    assert scorer.chunked
    got, tokens = sequence_logps(scorer, batch)
    (got * torch.arange(1.0, 7.0)).sum().backward()

    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert tokens.tolist() == expected_tokens.tolist() == [9, 3, 5, 1, 12, 5]
    for a, b in zip(grads(model), expected_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_a_head_with_a_bias_goes_through_the_models_own_forward():
    model = tiny_llama()
    model.lm_head = torch.nn.Linear(32, 300, bias=True)
    batch = ragged_batch()
    expected, _ = sequence_logps_full_logits(model, batch)
    for packed, share in ((False, False), (True, False), (True, True)):
        if packed:
            varlen_enable(model)
        scorer = TokenLogps(model, packed=packed, share_prompt=share)
        assert not scorer.chunked
        got, _ = sequence_logps(scorer, batch)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("share", [False, True])
def test_packed_rows_attend_only_to_themselves(share):
    """A row's log-probs do not change with what it is packed beside."""
    model = tiny_llama()
    varlen_enable(model)
    scorer = TokenLogps(model, packed=True, share_prompt=share)
    alone = batch_collate([(0, TokenizedPair([5, 6, 7], [8, 9], [10]))], pad_id=0)
    together = batch_collate(
        [(1, TokenizedPair([11] * 20, [12] * 30, [13] * 4)), (0, TokenizedPair([5, 6, 7], [8, 9], [10]))],
        pad_id=0,
    )
    with torch.no_grad():
        one, _ = sequence_logps(scorer, alone)
        both, _ = sequence_logps(scorer, together)
    torch.testing.assert_close(both[[1, 3]], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("vocab", [1_000, 128_256])
def test_what_the_head_keeps_for_the_backward_does_not_grow_with_the_vocabulary(vocab):
    """Saved tensors of one forward: the plain path keeps positions × vocabulary floats (the logits and
    their log-softmax); the chunked head keeps the hidden states, the weight it shares with the model
    and one log-sum-exp per position. A 128k vocabulary at 512 positions: 260 MB against 64 kB."""
    positions, hidden_size = 512, 32
    hidden = torch.randn(positions, hidden_size, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, requires_grad=True)
    labels = torch.randint(0, vocab, (positions,))

    def saved_bytes(compute):
        seen = []

        def pack(t):
            if t.data_ptr() not in (hidden.data_ptr(), weight.data_ptr()):  # the inputs exist anyway
                seen.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            compute().sum().backward()
        return sum(seen)

    chunked = saved_bytes(lambda: label_logps(hidden, weight, labels))
    plain = saved_bytes(
        lambda: -torch.nn.functional.cross_entropy((hidden @ weight.T).float(), labels, reduction="none")
    )
    assert plain >= positions * vocab * 4
    assert chunked == positions * (4 + 8)  # float32 log-sum-exps and int64 labels, whatever the vocabulary


def test_rows_that_do_not_share_a_prompt_are_never_packed_as_a_pair():
    """Same prompt lengths, different prompts (SFT rows, or any odd batch): packed as rows."""
    model = tiny_llama()
    batch = batch_collate(
        [(0, TokenizedPair([5, 6, 7], [8, 9], [10])), (1, TokenizedPair([11, 12, 13], [14], [15, 16]))],
        pad_id=0,
        sides=("chosen_ids",),
    )
    expected, _ = sequence_logps_full_logits(model, batch)
    varlen_enable(model)
    got, _ = sequence_logps(TokenLogps(model, packed=True, share_prompt=True), batch)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
