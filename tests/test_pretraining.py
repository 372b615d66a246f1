"""Pretraining instances, batches and losses, on a tiny generated corpus.

Checked: instance counts and contents; masking (last position always, rate elsewhere); MIP
negatives and SP segments never touch a user's sequence / any held-out item; segment layouts;
attribute targets; padding invariance; which parameters each loss reaches; the batched losses
against a plain per-position reference (both pair losses, dense and low-rank heads);
determinism; that a few dozen training steps lower the loss; and the SP stall check (the
authors' pair loss has next to no gradient once the scores saturate).
"""
from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from s3rec import runtime
from s3rec.config import RunConfig
from s3rec.data import leave_one_out
from s3rec.batching import bucketed_batches
from s3rec.pretrain_batches import (
    Batch,
    build_batch,
    build_instances,
    grid_positions,
    item_attribute_table,
    iterate_batches,
    sample_negatives,
    split_instances,
)
from s3rec.pretraining import LOSS_NAMES, PretrainModel, step_losses
from conftest import shared_data_or_skip

NUM_ITEMS, NUM_ATTRIBUTES = 60, 12
TRAIN_ITEMS = 40  # training parts use items 1..40, held-out targets 41..60: any id > 40 is a leak
MAX_LEN = 10  # instance truncation; some users are longer
MASK = NUM_ITEMS + 1
MATRICES = ("items", "masked_items", "negative_items", "masked_segments", "pos_segments", "neg_segments")


@pytest.fixture
def corpus(seed):
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([[0, 1, 2, 3, 25], rng.integers(1, 20, size=25)])
    train = [rng.choice(TRAIN_ITEMS, size=n, replace=False).astype(np.int64) + 1 for n in lengths]
    heldout = np.stack([rng.choice(NUM_ITEMS - TRAIN_ITEMS, size=2, replace=False) + TRAIN_ITEMS + 1 for _ in train])
    item_attributes = [np.zeros(0, np.int64)] + [
        np.sort(rng.choice(NUM_ATTRIBUTES, size=rng.integers(0, 4), replace=False) + 1) for _ in range(NUM_ITEMS)
    ]
    return train, heldout, item_attributes


@pytest.fixture
def instances(corpus):
    train, heldout, item_attributes = corpus
    return build_instances(train, item_attributes, NUM_ITEMS, NUM_ATTRIBUTES, max_len=MAX_LEN, heldout=heldout)


def make_cfg(pair_loss="logsigmoid", rank=None, **model) -> RunConfig:
    settings = {"hidden_size": 16, "num_heads": 2, "num_layers": 2, "max_len": 30, "rank": rank, **model}
    preset = "seed" if pair_loss == "logsigmoid" else "paper"
    return RunConfig.from_dict({"model": settings, "pretrain": {"preset": preset}})


def epoch(instances, seed=0, batch_size=8, mask_prob=0.2, batching="bucketed") -> list[Batch]:
    """Every chunk batch of one epoch, in order."""
    steps = iterate_batches(instances, batch_size, np.random.default_rng(seed), mask_prob=mask_prob, batching=batching)
    return [chunk for step in steps for chunk in step]


def one_batch(instances, seed=0) -> Batch:
    index = np.arange(0, len(instances), 7)  # lengths 1..10, including single-item prefixes
    return build_batch(instances, index, np.random.default_rng(seed), mask_prob=0.3)


# ---------------------------------------------------------------------------- instances


def test_instance_counts_and_contents(corpus):
    train, heldout, item_attributes = corpus
    build = lambda kind: build_instances(train, item_attributes, NUM_ITEMS, NUM_ATTRIBUTES, max_len=MAX_LEN, kind=kind)
    prefixes, sequences = build("prefixes"), build("sequences")
    assert len(prefixes) == sum(min(len(s), MAX_LEN) for s in train)
    assert len(sequences) == sum(len(s) > 0 for s in train)
    got = sorted(tuple(prefixes.items[a:b]) for a, b in zip(prefixes.start, prefixes.end))
    want = sorted(tuple(s[-MAX_LEN:][:k]) for s in train for k in range(1, min(len(s), MAX_LEN) + 1))
    assert got == want
    got = [tuple(sequences.items[a:b]) for a, b in zip(sequences.start, sequences.end)]
    assert got == [tuple(s[-MAX_LEN:]) for s in train if len(s)]
    with pytest.raises(ValueError, match="prefixes or sequences"):
        build("users")


def test_beauty_has_the_papers_instance_count():
    path = shared_data_or_skip() / "Beauty.txt"
    train = [np.array(line.split()[1:-2], dtype=np.int64) for line in path.read_text().splitlines()]
    num_items = max(int(s.max()) for s in train if len(s))
    no_attributes = [np.zeros(0, np.int64)] * (num_items + 1)
    assert len(build_instances(train, no_attributes, num_items, 1, max_len=50)) == 150_258


def test_every_epoch_covers_each_instance_once_with_batches_padded_to_their_longest(instances):
    index = np.concatenate(bucketed_batches(instances.lengths, 8, np.random.default_rng(0)))
    assert np.array_equal(np.sort(index), np.arange(len(instances)))
    batches = epoch(instances)
    assert sum(b.num_instances for b in batches) == len(instances)
    for b in batches:
        assert b.items.shape[1] == (b.items != 0).sum(1).max()  # no column of pure padding


# ---------------------------------------------------------------------------- masking


def test_last_position_always_masked_and_others_at_mask_prob(instances):
    masked_other, real_other = 0, 0
    for seed in range(20):
        for b in epoch(instances, seed, mask_prob=0.2):
            masked, real = b.masked_items == MASK, b.items != 0
            assert masked[:, -1].all()
            assert not (masked & ~real).any()  # padding is never masked
            assert torch.equal(b.masked_items[~masked], b.items[~masked])
            masked_other += masked[:, :-1].sum().item()
            real_other += real[:, :-1].sum().item()
    assert real_other > 5000
    assert masked_other / real_other == pytest.approx(0.2, abs=4 * (0.2 * 0.8 / real_other) ** 0.5)  # 4 standard errors


def test_mip_negatives_avoid_the_users_sequence_and_heldout_items(corpus, instances):
    train, heldout, _ = corpus
    for seed in range(5):
        for b in epoch(instances, seed):
            masked = b.masked_items == MASK
            assert (b.negative_items[~masked] == 0).all()
            for row, col in masked.nonzero().tolist():
                user, negative = b.users[row].item(), b.negative_items[row, col].item()
                assert 1 <= negative <= NUM_ITEMS
                assert negative not in set(train[user]) | set(heldout[user])


def test_heldout_argument_is_what_keeps_heldout_items_out_of_negatives(corpus):
    train, heldout, item_attributes = corpus
    leaky = build_instances(train, item_attributes, NUM_ITEMS, NUM_ATTRIBUTES, max_len=MAX_LEN)
    users = np.repeat(np.arange(len(train)), 200)
    draws = sample_negatives(leaky, users, np.random.default_rng(0))
    assert (draws[:, None] == heldout[users]).any(1).any()  # without `heldout` they do occur


def test_split_instances_keep_each_users_validation_and_test_items_out_of_negatives():
    """What runs.pretrain and the benchmarks build from a data set: the split's held-out items
    are passed on: of 7 items, each user's training part holds 3 and its held-out items 2, so
    only items 6 and 7 may be drawn (4 and 5, held out, would be without them)."""
    sequences = [np.array([1, 2, 3, 4, 5]), np.array([5, 4, 3, 2, 1])]
    dataset = types.SimpleNamespace(item_attributes=[np.zeros(0, np.int64)] * 8, num_items=7, num_attributes=1)
    split = leave_one_out(sequences)
    inst = split_instances(dataset, split, max_len=50)
    draws = sample_negatives(inst, np.repeat([0, 1], 300), np.random.default_rng(0))
    assert set(draws[:300]) == {6, 7} and set(draws[300:]) == {6, 7}


def test_negative_sampling_terminates_when_one_item_is_left():
    train = [np.arange(1, 10)]  # holds 9 of 10 items: item 10 is the only negative
    inst = build_instances(train, [np.zeros(0, np.int64)] * 11, 10, 1, max_len=50)
    assert (sample_negatives(inst, np.zeros(500, np.int64), np.random.default_rng(0)) == 10).all()
    with pytest.raises(ValueError, match="every item"):
        build_instances(train, [np.zeros(0, np.int64)] * 11, 10, 1, max_len=50, heldout=np.array([[10]]))


def test_no_heldout_item_is_ever_a_target_negative_or_segment_item(corpus, instances):
    _, heldout, _ = corpus
    for seed in range(5):
        for b in epoch(instances, seed):
            for name in ("items", "masked_items", "masked_segments", "pos_segments", "neg_segments"):
                ids = getattr(b, name)
                assert not ((ids > TRAIN_ITEMS) & (ids != MASK)).any(), name
            own = torch.from_numpy(heldout)[b.users]  # (B, 2)
            assert not (b.negative_items[:, :, None] == own[:, None, :]).any()


# ---------------------------------------------------------------------------- segments


def test_segment_layouts(instances):
    pool = instances.items.tolist()
    seen, differs, long_rows, pool_starts = set(), 0, 0, []
    for seed in range(5):
        for b in epoch(instances, seed):
            for row in range(b.num_instances):
                real = b.items[row] != 0
                items = b.items[row][real]
                context, pos, neg = (getattr(b, f)[row][real] for f in ("masked_segments", "pos_segments", "neg_segments"))
                for name in ("masked_segments", "pos_segments", "neg_segments"):
                    assert (getattr(b, name)[row][~real] == 0).all()  # padding stays padding
                n = len(items)
                if n < 2:  # the authors' fallback: the sequence itself, three times
                    assert torch.equal(context, items) and torch.equal(pos, items) and torch.equal(neg, items)
                    continue
                inside = (context == MASK).nonzero().flatten()
                start, length = inside[0].item(), len(inside)
                assert 1 <= length <= n // 2
                assert torch.equal(inside, torch.arange(start, start + length))  # one contiguous segment
                segment = slice(start, start + length)
                assert torch.equal(context[~(context == MASK)], torch.cat([items[:start], items[start + length :]]))
                assert torch.equal(pos[segment], items[segment])
                outside = torch.ones(n, dtype=torch.bool)
                outside[segment] = False
                assert (pos[outside] == MASK).all() and (neg[outside] == MASK).all()
                window = neg[segment].tolist()
                matches = [s for s in range(len(pool) - length + 1) if pool[s : s + length] == window]
                assert matches  # a stretch of the training pool
                pool_starts.append(matches[0])
                seen.add((n, length, "first" if start == 0 else "last" if start == n - length else "middle"))
                differs += not torch.equal(neg[segment], pos[segment])
                long_rows += 1
    assert {(10, 1), (10, 5)} <= {(n, length) for n, length, _ in seen}  # both ends of uniform{1..n//2}
    assert {(10, 2, "first"), (10, 2, "middle"), (10, 2, "last")} <= seen  # starts cover 0..n-length
    assert differs > 0.9 * long_rows  # negatives come from anywhere in the pool, not the user
    assert max(pool_starts) - min(pool_starts) > 0.9 * len(pool)


def test_negative_segments_are_every_stretch_of_the_pool_its_last_included():
    """One user of 4 training items (pool 1, 2, 3, 4), one instance of 4: segments of length
    uniform{1, 2}, a negative one cut at a uniform start of the pool in 0..4 - length, so the
    stretches (1) (2) (3) (4) (1 2) (2 3) (3 4): each turns up in 400 draws (an end excluded
    would never give (4) nor (3 4))."""
    inst = build_instances([np.array([1, 2, 3, 4])], [np.zeros(0, np.int64)] * 7, 6, 1, max_len=50, kind="sequences")
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        b = build_batch(inst, np.array([0]), rng, mask_prob=0.2)
        seen.add(tuple(b.neg_segments[b.masked_segments == inst.mask_id].tolist()))
    assert seen == {(1,), (2,), (3,), (4,), (1, 2), (2, 3), (3, 4)}


@pytest.mark.parametrize("train, attributes, message", [
    ([np.array([1, 7])], 7, r"item ids must lie in 1\.\.6"),  # item 7 of 6 would be the [MASK] id
    ([np.array([0, 2])], 7, r"item ids must lie in 1\.\.6"),  # 0 is the padding
    ([np.array([1, 2])], 6, "expected 7 entries"),  # item 6 would have no attribute row
])
def test_items_and_attributes_outside_the_catalogue_are_refused(train, attributes, message):
    """Items are 1..num_items and item_attributes has one entry per id 0..num_items: anything else
    would draw [MASK] as an item, or read another item's attributes, without a word."""
    with pytest.raises(ValueError, match=message):
        build_instances(train, [np.zeros(0, np.int64)] * attributes, 6, 1, max_len=50)


def test_attribute_pairs_are_the_multi_hot_of_the_real_items(corpus, instances):
    _, _, item_attributes = corpus
    b = one_batch(instances)
    real_items = b.items[b.items != 0].tolist()
    got = torch.zeros(len(real_items), NUM_ATTRIBUTES + 1)
    got[b.attribute_rows, b.attribute_ids] = 1
    want = torch.zeros_like(got)
    for row, item in enumerate(real_items):
        want[row, item_attributes[item]] = 1
    assert torch.equal(got, want)


# ---------------------------------------------------------------------------- model


def with_matrices(batch: Batch, **matrices) -> Batch:
    """`batch` with other (B, L) matrices, its host-made position indices made anew from them."""
    batch = dataclasses.replace(batch, **matrices)
    return dataclasses.replace(batch, **grid_positions(batch.items.numpy(), (batch.masked_items == MASK).numpy()))


def left_pad(batch: Batch, length: int) -> Batch:
    return with_matrices(batch, **{name: F.pad(getattr(batch, name), (length - batch.items.shape[1], 0))
                                   for name in MATRICES})


def test_losses_and_states_do_not_depend_on_padding(instances):
    model = PretrainModel(make_cfg(rank=4), NUM_ITEMS, NUM_ATTRIBUTES).eval()
    b = one_batch(instances)
    assert b.items.shape[1] == MAX_LEN
    long = left_pad(b, 30)
    with torch.no_grad():
        for name, value in model(b).items():
            torch.testing.assert_close(model(long)[name], value, msg=name)
        short_states = model.encoder(b.masked_items, causal=False)
        long_states = model.encoder(long.masked_items, causal=False)[:, -MAX_LEN:]
        real = b.items != 0
        torch.testing.assert_close(long_states[real], short_states[real])


def grad_norm(module_or_param) -> float:
    params = [module_or_param] if isinstance(module_or_param, torch.nn.Parameter) else module_or_param.parameters()
    return sum(p.grad.norm().item() for p in params if p.grad is not None)


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_each_loss_reaches_only_its_own_head(instances, loss_name):
    model = PretrainModel(make_cfg(rank=4), NUM_ITEMS, NUM_ATTRIBUTES)
    model(one_batch(instances))[loss_name].backward()
    for name, head in model.heads.items():
        assert (grad_norm(head) > 0) == (name == loss_name), name
    assert grad_norm(model.encoder) > 0
    attributes = model.attribute_embeddings.weight
    assert (grad_norm(attributes) > 0) == (loss_name in ("aap", "map"))
    if attributes.grad is not None:
        assert (attributes.grad[0] == 0).all()  # attribute 0 is padding, never scored


def reference_losses(model: PretrainModel, b: Batch, item_attributes, pair_loss: str) -> dict[str, torch.Tensor]:
    """The authors' layout, written plainly: four separate encoder passes, a dense (B, L, A)
    multi-hot, BCE on probabilities, one position at a time."""
    encoder = model.encoder
    states = encoder(b.masked_items, causal=False)  # (B, L, d)
    context = encoder(b.masked_segments, causal=False)[:, -1]
    pos_segment = encoder(b.pos_segments, causal=False)[:, -1]
    neg_segment = encoder(b.neg_segments, causal=False)[:, -1]
    B, L = b.items.shape
    multi_hot = torch.zeros(B, L, NUM_ATTRIBUTES, dtype=states.dtype)
    for row in range(B):
        for col in range(L):
            for attribute in item_attributes[b.items[row, col]]:
                multi_hot[row, col, attribute - 1] = 1.0
    attributes = model.attribute_embeddings.weight[1:]
    item_embedding = encoder.item_embeddings.weight

    def score(name, x, y):  # the authors' y . (W x + b)
        head = model.heads[name]
        return y @ (head.effective_weight() @ x + head.bias)

    def pair(positive, negative):
        if pair_loss == "logsigmoid":
            return -(torch.log(torch.sigmoid(positive)) + torch.log(1 - torch.sigmoid(negative)))
        distance = torch.sigmoid(torch.sigmoid(positive) - torch.sigmoid(negative))
        return F.binary_cross_entropy(distance, torch.ones_like(distance))

    losses = {name: torch.zeros((), dtype=states.dtype) for name in LOSS_NAMES}
    for row in range(B):
        for col in range(L):
            token, x = b.masked_items[row, col].item(), states[row, col]
            if token == 0:
                continue
            name = "map" if token == MASK else "aap"
            probabilities = torch.sigmoid(score(name, x, attributes))
            losses[name] += F.binary_cross_entropy(probabilities, multi_hot[row, col], reduction="sum")
            if token == MASK:
                true, negative = item_embedding[b.items[row, col]], item_embedding[b.negative_items[row, col]]
                losses["mip"] += pair(score("mip", x, true), score("mip", x, negative))
        losses["sp"] += pair(score("sp", context[row], pos_segment[row]), score("sp", context[row], neg_segment[row]))
    p = model.cfg.pretrain
    losses["loss"] = sum(getattr(p, f"{name}_weight") * losses[name] for name in LOSS_NAMES)
    return losses


def test_padded_steps_cover_every_instance_once_in_random_batches_of_batch_size(instances):
    steps = list(iterate_batches(instances, 8, np.random.default_rng(0), mask_prob=0.2, batching="padded"))
    assert [sum(c.num_instances for c in step) for step in steps[:-1]] == [8] * (len(steps) - 1)
    users = np.concatenate([c.users.numpy() for step in steps for c in step])
    assert sorted(users.tolist()) == sorted(instances.user.tolist())
    for step in steps:  # each chunk is padded to its own longest instance only
        for chunk in step:
            assert chunk.items.shape[1] == (chunk.items != 0).sum(1).max()


def concat_padded(batches: list[Batch], length: int) -> Batch:
    """Chunk batches as one batch left-padded to `length`, the authors' layout."""
    def pad(m):
        return F.pad(m, (length - m.shape[1], 0))

    fields = {name: torch.cat([pad(getattr(b, name)) for b in batches]) for name in MATRICES}
    offsets = np.cumsum([0] + [int((b.items != 0).sum()) for b in batches[:-1]])
    return with_matrices(dataclasses.replace(
        batches[0], users=torch.cat([b.users for b in batches]),
        attribute_rows=torch.cat([b.attribute_rows + int(o) for b, o in zip(batches, offsets)]),
        attribute_ids=torch.cat([b.attribute_ids for b in batches]),
        num_instances=sum(b.num_instances for b in batches)), **fields)


@pytest.mark.parametrize("pair_loss", ["logsigmoid", "sigmoid_difference"])
def test_a_padded_step_in_chunks_has_the_loss_and_gradient_of_the_batch_padded_to_max_len(instances, pair_loss):
    model = PretrainModel(make_cfg(pair_loss, rank=4), NUM_ITEMS, NUM_ATTRIBUTES).double().eval()
    step = next(iterate_batches(instances, 24, np.random.default_rng(3), mask_prob=0.3, batching="padded"))
    assert len(step) > 1  # the step really was computed in several chunks
    chunked = step_losses(model, step)
    chunked["loss"].backward()
    chunk_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    whole = model(concat_padded(step, MAX_LEN))  # MAX_LEN: the instances' max_len
    whole["loss"].backward()
    for name in whole:
        torch.testing.assert_close(chunked[name], whole[name], rtol=1e-9, atol=1e-9, msg=name)
    for got, want in zip(chunk_grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("pair_loss", ["logsigmoid", "sigmoid_difference"])
@pytest.mark.parametrize("rank", [None, 4])
def test_batched_losses_match_a_plain_reference(corpus, instances, pair_loss, rank):
    model = PretrainModel(make_cfg(pair_loss, rank), NUM_ITEMS, NUM_ATTRIBUTES).double().eval()
    for head in model.heads.values():  # non-zero biases, so the bias term is checked too
        torch.nn.init.normal_(head.bias, std=0.1)
    b = one_batch(instances)
    with torch.no_grad():
        got = model(b)
        want = reference_losses(model, b, corpus[2], pair_loss)
    assert set(got) == {*LOSS_NAMES, "loss"}
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-9, atol=1e-9, msg=name)


def test_a_batch_padded_to_a_fixed_length_draws_the_same_and_only_adds_padding(instances):
    index = np.arange(0, len(instances), 7)
    plain = build_batch(instances, index, np.random.default_rng(5), mask_prob=0.3)
    padded = build_batch(instances, index, np.random.default_rng(5), mask_prob=0.3, length=MAX_LEN + 4)
    assert padded.items.shape == (len(index), MAX_LEN + 4) and plain.items.shape == (len(index), MAX_LEN)
    for name in MATRICES:
        matrix = getattr(padded, name)
        assert (matrix[:, :4] == 0).all() and torch.equal(matrix[:, 4:], getattr(plain, name)), name
    for name in ("attribute_rows", "attribute_ids", "unmasked_rows", "masked_rows"):
        assert torch.equal(getattr(padded, name), getattr(plain, name)), name
    states = torch.randn(len(index), MAX_LEN, 3)  # the real positions are the same grid cells
    assert torch.equal(F.pad(states, (0, 0, 4, 0)).flatten(0, 1)[padded.real_positions],
                       states.flatten(0, 1)[plain.real_positions])
    with pytest.raises(ValueError, match="longer than 9"):
        build_batch(instances, index, np.random.default_rng(5), mask_prob=0.3, length=MAX_LEN - 1)


def test_the_item_attribute_table_holds_each_items_attributes(corpus, instances):
    table = item_attribute_table(instances)
    assert table.shape == (NUM_ITEMS + 2, NUM_ATTRIBUTES) and table.dtype == torch.uint8
    for item, attributes in enumerate(corpus[2]):
        assert torch.equal(torch.nonzero(table[item]).flatten() + 1, torch.as_tensor(attributes, dtype=torch.int64))
    assert not table[MASK].any()


@pytest.mark.parametrize("pair_loss", ["logsigmoid", "sigmoid_difference"])
@pytest.mark.parametrize("rank", [None, 4])
def test_grid_losses_and_gradients_are_the_gathered_ones(instances, pair_loss, rank):
    """grid_forward (every position, weighted) against forward (gathered), on one batch padded
    to the model's max_len as the fixed-shape path pads it."""
    model = PretrainModel(make_cfg(pair_loss, rank), NUM_ITEMS, NUM_ATTRIBUTES).double().eval()
    for head in model.heads.values():
        torch.nn.init.normal_(head.bias, std=0.1)
    table = item_attribute_table(instances)
    b = build_batch(instances, np.arange(0, len(instances), 7), np.random.default_rng(2), mask_prob=0.3,
                    length=model.cfg.model.max_len)
    gathered = model(b)
    gathered["loss"].backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    grid = model.grid_forward(b, table)
    grid["loss"].backward()
    assert set(grid) == set(gathered)
    for name in grid:
        torch.testing.assert_close(grid[name], gathered[name], rtol=1e-10, atol=1e-10, msg=name)
    for (name, p), w in zip(model.named_parameters(), want):
        torch.testing.assert_close(p.grad, w, rtol=1e-8, atol=1e-12, msg=name)


def test_the_heads_and_attribute_embeddings_start_at_init_std(seed):
    """model.init_std reaches every head and the attribute embeddings (0.3 here, not the default
    0.02): dense weights and low-rank products U V^T of std init_std, zero biases."""
    model = PretrainModel(make_cfg(rank=4, hidden_size=32, init_std=0.3), NUM_ITEMS, NUM_ATTRIBUTES)
    assert model.attribute_embeddings.weight.std().item() == pytest.approx(0.3, rel=0.1)
    assert {name for name, head in model.heads.items() if hasattr(head, "U")} == {"aap", "map"}
    for name, head in model.heads.items():
        assert head.effective_weight().std().item() == pytest.approx(0.3, rel=0.25), name
        assert not head.bias.any(), name


def test_same_seed_same_batches_and_losses(instances):
    def run(seed):
        batches = epoch(instances, seed)
        torch.manual_seed(seed)
        model = PretrainModel(make_cfg(), NUM_ITEMS, NUM_ATTRIBUTES)
        return batches, model(batches[0])["loss"]

    (first, loss), (second, loss_again), (other, _) = run(1), run(1), run(2)
    for b, c in zip(first, second):
        for field in dataclasses.fields(Batch):
            value = getattr(b, field.name)
            assert torch.equal(value, getattr(c, field.name)) if torch.is_tensor(value) else value == getattr(c, field.name)
    assert torch.equal(loss, loss_again)
    assert not torch.equal(torch.cat([b.users for b in first]), torch.cat([b.users for b in other]))


def test_batch_to_keeps_every_field_also_when_packed_into_one_copy(instances):
    b = one_batch(instances)
    tensors = [f.name for f in dataclasses.fields(Batch) if f.name != "num_instances"]
    for moved in (b.to("cpu"), dataclasses.replace(b, **runtime.to_device(
            {name: getattr(b, name) for name in tensors}, "cpu", pack=True))):  # the GPU path's packing
        assert moved.num_instances == b.num_instances
        for name in tensors:
            assert torch.equal(getattr(moved, name), getattr(b, name)), name
            assert getattr(moved, name).dtype == getattr(b, name).dtype, name


def test_host_made_positions_select_what_the_boolean_masks_select(instances):
    b = one_batch(instances)
    states = torch.randn(*b.items.shape, 3)
    real, masked = b.items != 0, b.masked_items == MASK
    real_states = states.flatten(0, 1)[b.real_positions]
    assert torch.equal(real_states, states[real])
    assert torch.equal(real_states[b.masked_rows], states[masked])
    assert torch.equal(real_states[b.unmasked_rows], states[real & ~masked])
    assert len(b.masked_rows) + len(b.unmasked_rows) == int(real.sum())


def test_training_lowers_the_loss(instances):
    torch.manual_seed(0)
    model = PretrainModel(make_cfg(hidden_dropout=0.1, attention_dropout=0.1), NUM_ITEMS, NUM_ATTRIBUTES)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    fixed = one_batch(instances, seed=123)

    def held_out_loss():
        model.eval()
        with torch.no_grad():
            loss = model(fixed)["loss"].item()
        model.train()
        return loss

    before = held_out_loss()
    rng = np.random.default_rng(0)
    for _ in range(4):  # 4 epochs x ~25 batches
        for step in iterate_batches(instances, 16, rng, mask_prob=0.2):
            optimizer.zero_grad()
            step_losses(model, step)["loss"].backward()
            optimizer.step()
    assert held_out_loss() < 0.8 * before


# ---------------------------------------------------------------- SP stalled at ln 2

def test_the_authors_pair_loss_has_no_gradient_once_both_scores_saturate():
    """Why an SP head stalls: with sigma(s+) = sigma(s-) ~ 0 the sigmoid_difference loss is ln 2 per
    pair and its gradient all but vanishes; logsigmoid still pulls s+ up."""
    gradients = {}
    for pair_loss in ("sigmoid_difference", "logsigmoid"):
        model = PretrainModel(make_cfg(pair_loss), NUM_ITEMS, NUM_ATTRIBUTES)
        positive = torch.tensor([-53.0, -40.0], requires_grad=True)  # SP scores seen in a stalled Beauty run
        negative = torch.tensor([-54.0, -45.0], requires_grad=True)
        loss = model.pair_loss(positive, negative)
        loss.backward()
        gradients[pair_loss] = positive.grad
        if pair_loss == "sigmoid_difference":
            assert loss.item() == pytest.approx(2 * math.log(2), abs=1e-6)  # float32
    assert gradients["sigmoid_difference"].abs().max() < 1e-15
    assert (gradients["logsigmoid"] < -0.99).all()  # d softplus(-s)/ds ~ -1 far on the wrong side
