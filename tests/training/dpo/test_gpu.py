"""The trainer's GPU paths (bf16, torch's varlen_attn, fused AdamW): run by benchmarks/gpu.sh on a
lent GPU (``pytest --noconftest -m gpu tests/training/dpo/test_gpu.py``), skipped everywhere else."""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _model(dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32_000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config).to("cuda", dtype)


def _batch():
    from training.dpo.data import TokenizedPair, batch_collate

    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(3, 32_000, (n,), generator=g).tolist()

    items = [(i, TokenizedPair(ids(20 + 90 * i), ids(200 - 60 * i), ids(15 + 40 * i))) for i in range(3)]
    return batch_collate(items, pad_id=0).to("cuda")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_chunked_log_probs_match_the_plain_path_on_the_gpu(dtype):
    from training.dpo.attention import varlen_enable
    from training.dpo.logps import TokenLogps, sequence_logps, sequence_logps_full_logits

    model = _model(dtype)
    batch = _batch()
    with torch.no_grad():
        expected, _ = sequence_logps_full_logits(model, batch)
        padded, _ = sequence_logps(TokenLogps(model, packed=False), batch)
        assert varlen_enable(model)
        packed, _ = sequence_logps(TokenLogps(model, packed=True, share_prompt=False), batch)
        pairs, _ = sequence_logps(TokenLogps(model, packed=True, share_prompt=True), batch)
    tolerance = 1e-3 if dtype == torch.float32 else 0.5  # bf16: summed over ~200 tokens
    torch.testing.assert_close(padded, expected, atol=tolerance, rtol=1e-2)
    torch.testing.assert_close(packed, expected, atol=tolerance, rtol=1e-2)
    torch.testing.assert_close(pairs, expected, atol=tolerance, rtol=1e-2)


def test_a_bf16_step_with_fused_adamw_lowers_the_loss():
    from training.dpo.attention import varlen_enable
    from training.dpo.logps import TokenLogps, sequence_logps

    model = _model(torch.bfloat16)
    varlen_enable(model)
    scorer = TokenLogps(model, packed=True)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=1e-3, fused=True)
    batch = _batch()
    losses = []
    for _ in range(5):
        logps, tokens = sequence_logps(scorer, batch)
        loss = -(logps / tokens).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
