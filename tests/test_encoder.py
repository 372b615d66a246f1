"""Encoder: shapes, padding invariance (padding never changes a real position), causal mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from s3rec.config import ModelConfig
from s3rec.batching import pad_left
from s3rec.encoder import Dropout, Encoder, attention_mask


def left_pad(rows, max_len):
    length = min(max(len(r) for r in rows), max_len)
    return torch.from_numpy(pad_left([np.asarray(r) for r in rows], length))

NUM_ITEMS = 30


@pytest.fixture
def encoder(seed) -> Encoder:
    return Encoder(ModelConfig(hidden_size=16, num_heads=2, max_len=12), NUM_ITEMS).eval()


def test_shapes_and_mask_id(encoder):
    items = left_pad([[1, 2, 3], [4, 5]], max_len=12)
    assert items.tolist() == [[1, 2, 3], [0, 4, 5]]
    assert encoder(items, causal=True).shape == (2, 3, 16)
    assert encoder.mask_id == NUM_ITEMS + 1
    assert encoder.item_embeddings.num_embeddings == NUM_ITEMS + 2


def test_left_pad_truncates_to_last_items():
    assert left_pad([list(range(1, 20))], max_len=5).tolist() == [[15, 16, 17, 18, 19]]


@pytest.mark.parametrize("causal", [True, False])
def test_padding_never_changes_real_positions(encoder, causal):
    """The same sequence alone, in a longer batch, and in a batch padded to max_len."""
    seq = [3, 7, 1, 9]
    alone = encoder(left_pad([seq], 12), causal)[0]
    in_batch = encoder(left_pad([seq, list(range(1, 11))], 12), causal)[0, -len(seq):]
    padded = torch.zeros(1, 12, dtype=torch.long)
    padded[0, -len(seq):] = torch.tensor(seq)
    full = encoder(padded, causal)[0, -len(seq):]
    torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, full, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(encoder(padded, causal)).all()


def test_causal_output_ignores_future_items(encoder):
    a = encoder(torch.tensor([[1, 2, 3, 4]]), causal=True)
    b = encoder(torch.tensor([[1, 2, 3, 9]]), causal=True)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])
    c = encoder(torch.tensor([[1, 2, 3, 9]]), causal=False)
    assert not torch.allclose(a[:, 0], c[:, 0])  # bidirectional sees the future


def test_attention_mask_values():
    allowed = attention_mask(torch.tensor([[0, 5, 6]]), causal=True)[0, 0]
    expected = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_too_long_sequence_is_an_error(encoder):
    with pytest.raises(ValueError, match="max_len"):
        encoder(torch.ones(1, 13, dtype=torch.long), causal=True)


def test_parameter_count_is_exact():
    d, L, n, M = 64, 2, 50, 100
    enc = Encoder(ModelConfig(hidden_size=d, num_layers=L, max_len=n), M)
    per_layer = (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d) + 2 * d
    expected = (M + 2) * d + n * d + 2 * d + L * per_layer
    assert sum(p.numel() for p in enc.parameters()) == expected


@pytest.mark.parametrize("causal", [True, False])
def test_forward_ends_equals_forward(seed, causal):
    encoder = Encoder(ModelConfig(hidden_size=16, num_heads=2, num_layers=3, max_len=12), NUM_ITEMS).eval()
    items = left_pad([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [3]], 12)
    states = encoder(items, causal)
    full, ends = encoder.forward_ends(items, causal, num_full=2)
    torch.testing.assert_close(full, states[:2])
    torch.testing.assert_close(ends, states[2:, -1])
    _, all_ends = encoder.forward_ends(items, causal)
    torch.testing.assert_close(all_ends, states[:, -1])


def test_training_attention_path_equals_sdpa_without_dropout(seed):
    """Training spells attention out (for the fast dropout); with nothing dropped it is SDPA."""
    cfg = ModelConfig(hidden_size=16, num_heads=2, max_len=12, hidden_dropout=0.0, attention_dropout=1e-12)
    encoder = Encoder(cfg, NUM_ITEMS)
    items = left_pad([[1, 2, 3, 4], [5, 6]], 12)
    for causal in (True, False):
        torch.testing.assert_close(encoder.train()(items, causal), encoder.eval()(items, causal))


def test_dropout_zeroes_a_fraction_p_and_keeps_the_mean(seed):
    dropout = Dropout(0.3).train()
    x = torch.ones(200_000)
    y = dropout(x)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(dropout.eval()(x), x)


def test_init_is_normal_at_init_std_with_zero_biases_and_unit_layer_norms(seed):
    """The authors' init (init_weights): every linear and embedding weight N(0, init_std), every
    bias 0, every LayerNorm weight 1 and bias 0. init_std 0.3, not the default 0.02, and far from
    torch's own inits (N(0, 1) embeddings, linear weights of std about 0.1 or less here)."""
    encoder = Encoder(ModelConfig(hidden_size=32, num_heads=2, max_len=12, init_std=0.3), NUM_ITEMS)
    for name, module in encoder.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            assert module.weight.std().item() == pytest.approx(0.3, rel=0.1), name
            assert abs(module.weight.mean().item()) < 0.05, name
        if isinstance(module, torch.nn.Linear):
            assert not module.bias.any(), name
        if isinstance(module, torch.nn.LayerNorm):
            assert (module.weight == 1).all() and not module.bias.any(), name


def test_training_drops_once_at_each_of_the_authors_dropout_sites(seed):
    """The input after its LayerNorm, the attention probabilities (on a CPU through the fast
    Dropout, not SDPA's own), and each sublayer's output before its residual: every Dropout runs
    once a training forward, at its own rate (attention_dropout for the probabilities)."""
    cfg = ModelConfig(hidden_size=16, num_heads=2, max_len=12, hidden_dropout=0.1, attention_dropout=0.3)
    encoder = Encoder(cfg, NUM_ITEMS).train()
    seen: dict[str, list[torch.Tensor]] = {}  # each Dropout's inputs, by module name
    for name, module in encoder.named_modules():
        if isinstance(module, Dropout):
            module.register_forward_hook(lambda _, args, __, name=name: seen.setdefault(name, []).append(args[0]))
    encoder(left_pad([[1, 2, 3, 4], [5, 6]], 12), causal=True)
    per_layer = ("attention.attention_dropout", "attention.dropout", "feed_forward.dropout")
    sites = ["input_dropout"] + [f"layers.{i}.{site}" for i in range(2) for site in per_layer]
    assert {name: len(inputs) for name, inputs in seen.items()} == dict.fromkeys(sites, 1)
    rates = {name: module.p for name, module in encoder.named_modules() if isinstance(module, Dropout)}
    assert rates == {name: 0.3 if name.endswith("attention_dropout") else 0.1 for name in sites}
    (dropped,) = seen["input_dropout"]  # normalised first: mean 0, variance 1 along d (LayerNorm at init)
    torch.testing.assert_close(dropped.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(dropped.var(-1, unbiased=False), torch.ones(2, 4), atol=1e-4, rtol=0)
