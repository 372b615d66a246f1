"""Finetuning: batches, negatives, losses, overfitting, determinism, resume, strict loading."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import files, runs, runtime
from s3rec.config import ModelConfig
from s3rec.cuda_graphs import NEXT_ITEM_INPUTS
from s3rec.data import write_prepared
from s3rec.encoder import Encoder
from s3rec.batching import CHUNK_BOUNDS, bucketed_batches, chunk_bounds, length_chunks, training_batches
from s3rec.finetuning import (TARGET_SLOTS, NextItemBatch, check_negatives_drawable, fixed_shape, fixed_shape_loss,
                              iterate_batches, make_batch, sample_negatives, score_function, step_loss)
from s3rec.pairs import contains, pair_keys
from s3rec.synthetic import SyntheticSpec, generate

SMALL_MODEL = {"hidden_size": 16, "num_heads": 2, "max_len": 12}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_prepared(generate(SyntheticSpec(users=80, items=40, attributes=8, seed=3, max_length=15)), out)
    return out


def settings(**finetune):
    return {"model": SMALL_MODEL, "finetune": {"epochs": 3, "batch_size": 32, **finetune},
            "eval": {"batch_size": 64, "sampled_negatives": 20}}


def run(data, out, seed=0, variant="none", pretrained=None, stop_after=None, threads=None, **finetune):
    cfg = runs.resolve_config(settings(**finetune), variant, seed, device="cpu", threads=threads)
    return runs.finetune(data, out, cfg, variant, pretrained=pretrained, stop_after=stop_after)


def test_bucketed_batches_cover_every_instance_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 50, size=1000)
    batches = bucketed_batches(lengths, 64, rng, window_batches=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread < 20  # sorted within chunks: far less than the 48 of random batches


def test_negatives_are_drawn_as_by_redrawing_every_clash_in_place():
    """sample_negatives searches sorted keys and checks again only what clashed: the same draws,
    in the same order, as the plain rule (draw all, redraw every clash, until none is left),
    and the generator left in the same state."""
    def redraw_every_clash(targets, excluded, num_items, rng):
        negatives = rng.integers(1, num_items + 1, size=targets.shape)
        while True:
            clash = (negatives[:, :, None] == excluded[:, None, :]).any(-1) & (targets > 0)
            if not clash.any():
                return np.where(targets > 0, negatives, 0)
            negatives[clash] = rng.integers(1, num_items + 1, size=int(clash.sum()))

    cases = np.random.default_rng(1)
    for seed in range(300):
        rows, columns, width, num_items = (int(x) for x in cases.integers((1, 1, 1, 10), (7, 9, 10, 20)))
        targets = cases.integers(0, num_items + 1, size=(rows, columns))  # 0: no target there
        excluded = cases.integers(0, num_items + 1, size=(rows, width))  # 0: padding; repeats allowed
        got, want = np.random.default_rng(seed), np.random.default_rng(seed)
        np.testing.assert_array_equal(sample_negatives(targets, excluded, num_items, got),
                                      redraw_every_clash(targets, excluded, num_items, want))
        assert got.integers(1 << 30) == want.integers(1 << 30)


def test_pair_keys_do_not_wrap_and_no_keys_contain_nothing():
    """pairs.py, under the negatives of both trainings and the sampled protocol. A key is
    row * (num_items + 1) + item in int64 even for int32 rows: row 100,000 of 100,000 items gives
    100,000 * 100,001 + 5 = 10,000,100,005, past int32's 2,147,483,647 (a wrapped key would match
    another user's item). An empty key set contains nothing: were every query found, redrawing
    would never end for a user who owns no item."""
    assert pair_keys(np.array([100_000], dtype=np.int32), np.array([5]), 100_000).tolist() == [10_000_100_005]
    assert pair_keys(np.array([0, 1]), np.array([9, 0]), 9).tolist() == [9, 10]  # item 9 of row 0 != item 0 of row 1
    assert contains(np.zeros(0, dtype=np.int64), np.array([0, 3, 7])).tolist() == [False, False, False]
    assert contains(np.array([3, 7]), np.array([0, 3, 5, 7, 8])).tolist() == [False, True, False, True, False]


def test_batch_targets_are_the_next_items_and_negatives_avoid_the_training_part():
    train = [np.array([1, 2, 3, 4]), np.array([5, 6])]
    excluded = [t for t in train]
    batch = make_batch(np.array([0, 1]), train, excluded, num_items=9, max_len=10, rng=np.random.default_rng(0))
    assert batch.inputs.tolist() == [[1, 2, 3], [0, 0, 5]]
    assert batch.targets.tolist() == [[2, 3, 4], [0, 0, 6]]
    for _ in range(50):
        batch = make_batch(np.array([0, 1]), train, excluded, 9, 10, np.random.default_rng(_))
        negatives = batch.negatives.numpy()
        assert not set(negatives[0]) & {1, 2, 3, 4}
        assert not set(negatives[1][-1:]) & {5, 6}
        assert (negatives[batch.targets.numpy() == 0] == 0).all()
    assert batch.target_positions.tolist() == [0, 1, 2, 5]  # flat indices of the targets 2, 3, 4 and 6


def test_a_user_whose_excluded_items_are_the_whole_catalogue_is_an_error_naming_it():
    """Redrawing a negative until it misses the user's items would never end: refused at once."""
    train = [np.array([1, 2]), np.array([1, 1, 2, 2]), np.array([3])]
    check_negatives_drawable(train, train, num_items=3)  # row 1 is 4 long but holds 2 items; row 2 has no target
    whole = [np.array([1, 2, 3])] * 2
    check_negatives_drawable(train, whole, num_items=4)  # 3 of 4 items: one is left to draw
    with pytest.raises(ValueError, match=r"^user 7: all 3 items are among those its finetuning negatives must avoid"):
        check_negatives_drawable(train[:2], whole, num_items=3, user_ids=np.array([7, 4]))


def test_a_finetuning_that_could_draw_no_negative_fails_before_writing_anything(tmp_path):
    data = tmp_path / "six_items"  # 6 items: some users' sequences hold them all
    write_prepared(generate(SyntheticSpec(users=20, items=6, attributes=2, seed=0, max_length=15)), data)
    cfg = runs.resolve_config({**settings(negatives_exclude_heldout=True), "eval": {"protocols": ["full"]}}, "none", 0,
                              device="cpu")  # sampled-99 ranking would refuse these users first
    with pytest.raises(ValueError, match=r"^user \d+: all 6 items are among"):
        runs.finetune(data, tmp_path / "out", cfg, "none")
    assert not (tmp_path / "out").exists()


def test_negatives_avoid_the_held_out_items_only_when_excluded_says_so():
    """make_batch draws around `excluded`, not around the training part it batches: before this
    test every caller passed the training part as both, so drawing around `train` passed too."""
    train, sequence = [np.array([1, 2, 3, 4])], [np.array([1, 2, 3, 4, 5, 6])]  # 5, 6: validation, test
    drawn = {excluded: set() for excluded in ("train", "sequence")}
    for seed in range(40):
        for name, excluded in (("train", train), ("sequence", sequence)):
            batch = make_batch(np.array([0]), train, excluded, num_items=7, max_len=10, rng=np.random.default_rng(seed))
            drawn[name] |= set(batch.negatives[batch.targets > 0].tolist())
    assert drawn == {"train": {5, 6, 7}, "sequence": {7}}


def test_batch_to_keeps_every_field_also_when_packed_into_one_copy():
    train = [np.array([1, 2, 3, 4]), np.array([5, 6])]
    batch = make_batch(np.array([0, 1]), train, train, 9, 10, np.random.default_rng(0))
    for moved in (batch.to("cpu"), NextItemBatch(**runtime.to_device(vars(batch), "cpu", pack=True))):
        for name, value in vars(batch).items():
            assert torch.equal(getattr(moved, name), value) and getattr(moved, name).dtype == value.dtype, name


def test_heldout_flag_excludes_validation_and_test_items(tiny_data):
    from s3rec.data import leave_one_out, load_dataset

    data = load_dataset(tiny_data)
    split = leave_one_out(data.sequences)
    for include, excluded in [(False, split.train), (True, data.sequences)]:
        assert runs.excluded_negatives(data, split, include) is excluded
    rng = np.random.default_rng(0)
    for step in iterate_batches(split.train, data.sequences, data.num_items, 12, 16, rng):
        users_rows = step[0].negatives.numpy()
        assert users_rows.max() <= data.num_items


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_tiny_data_set_is_overfit(seed, loss):
    """Eight fixed sequences, no dropout: every next item outranks every item the loss contrasts it with.

    CE contrasts with all items; BCE only with items outside the user's sequence (its negatives).
    """
    rng = np.random.default_rng(0)
    train = [rng.permutation(np.arange(1, 21))[:8] for _ in range(8)]
    cfg = ModelConfig(hidden_size=32, num_heads=2, max_len=10, hidden_dropout=0.0, attention_dropout=0.0)
    encoder = Encoder(cfg, num_items=20)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    for _ in range(200):
        batch = make_batch(np.arange(8), train, train, 20, 10, rng)  # fresh negatives each step
        loss_value = step_loss(encoder, [batch], loss)
        optimizer.zero_grad()
        loss_value.backward()
        optimizer.step()
    encoder.eval()
    with torch.no_grad():
        scores = encoder(batch.inputs, causal=True) @ encoder.item_embeddings.weight[:21].T  # (B, L, 21)
    for user, seq in enumerate(train):
        rivals = np.setdiff1d(np.arange(1, 21), seq) if loss == "bce" else np.arange(1, 21)
        for pos in np.flatnonzero(batch.targets[user].numpy()):
            target = int(batch.targets[user, pos])
            others = rivals[rivals != target]
            assert scores[user, pos, target] > scores[user, pos, others].max(), (user, pos)


def test_training_writes_every_output_and_is_deterministic(tiny_data, tmp_path):
    first = run(tiny_data, tmp_path / "a")
    second = run(tiny_data, tmp_path / "b")
    other = run(tiny_data, tmp_path / "c", seed=1)
    assert first["metrics"] == second["metrics"]
    assert first["metrics"] != other["metrics"]
    for name in ("finetune.pt", "finetune_history.csv", "ranks.parquet", "metrics.json"):
        assert (tmp_path / "a" / name).exists()
    assert not (tmp_path / "a" / "finetune.state.pt").exists()
    saved = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert set(saved["metrics"]) == {"full", "sampled"}
    assert set(saved["metrics"]["sampled"]["test"]) >= {"HR@10", "NDCG@10", "MRR", "AUC"}
    assert saved["finetune"] == {"loss": "bce", "negatives_exclude_heldout": False, "batching": "padded",
                                 "early_stopping_metric": "NDCG@20", "early_stopping_protocol": "full"}
    assert saved["parameters"]["heads"] == {}
    assert "pretrain" not in saved["config"]  # `none` was never pretrained
    assert saved["execution"]["device"] == "cpu" and saved["execution"]["threads"] >= 1
    assert saved["early_stopped"] is False and saved["epochs_run"] == 3  # the 3-epoch cap, not patience
    assert saved["cpu_seconds"]["finetune"] > 0


@pytest.mark.parametrize("metric", ["NDCG@20", "HR@1"])
def test_early_stopping_selects_on_the_configured_metric(tiny_data, tmp_path, metric):
    result = run(tiny_data, tmp_path / "r", epochs=30, patience=2, early_stopping_metric=metric, lr=0.01)
    history = runtime_history(tmp_path / "r")
    scores = history[f"valid_{metric}"]
    assert result["best_epoch"] == int(np.argmax(scores)) + 1  # first epoch with the best score
    assert result["early_stopped"] == (result["epochs_run"] < 30)
    assert result["epochs_run"] - result["best_epoch"] == 2 or result["epochs_run"] == 30


def runtime_history(run_dir):
    import polars as pl
    return pl.read_csv(run_dir / "finetune_history.csv").to_dict(as_series=False)


def test_padded_steps_are_random_batches_of_batch_size_in_length_chunks():
    train = [np.arange(1, n + 1) for n in (2, 3, 9, 30, 4, 12, 20)]
    steps = list(iterate_batches(train, train, 40, 12, 3, np.random.default_rng(0), "padded"))
    assert [sum(len(c.inputs) for c in step) for step in steps] == [3, 3, 1]
    for step in steps:
        for chunk in step:  # each chunk padded only to its own longest sequence
            assert chunk.inputs.shape[1] == (chunk.inputs > 0).sum(1).max()


def test_chunk_bounds_change_how_a_step_is_cut_never_which_users_it_holds():
    """On a GPU (bounds ()) a padded step is one chunk; the batches are those of the CPU's chunks."""
    assert chunk_bounds("cpu") == CHUNK_BOUNDS and chunk_bounds("cuda") == ()
    lengths = np.random.default_rng(1).integers(1, 51, size=500)
    chunked = training_batches(lengths, 64, np.random.default_rng(7), "padded", CHUNK_BOUNDS)
    whole = training_batches(lengths, 64, np.random.default_rng(7), "padded", ())
    assert all(len(step) == 1 for step in whole) and max(len(step) for step in chunked) == 4
    assert [sorted(np.concatenate(a).tolist()) for a in chunked] == [sorted(b[0].tolist()) for b in whole]


def test_padded_batches_are_a_fresh_permutation_cut_in_order_and_chunked_at_the_bounds():
    """The authors' DataLoader: the generator's permutation of the instances cut into consecutive
    batches; each batch split into chunks of length <= 8, 9-16, 17-32 and > 32."""
    lengths = np.array([8, 9, 16, 17, 32, 33, 1, 40, 12, 5])
    steps = training_batches(lengths, 4, np.random.default_rng(3), "padded", ())
    order = np.random.default_rng(3).permutation(10)
    assert [step[0].tolist() for step in steps] == [order[:4].tolist(), order[4:8].tolist(), order[8:].tolist()]
    assert order.tolist() != list(range(10))
    assert [c.tolist() for c in length_chunks(np.arange(10), lengths)] == [[0, 6, 9], [1, 2, 8], [3, 4], [5, 7]]
    with pytest.raises(ValueError, match="expected padded or bucketed, got 'random'"):
        training_batches(lengths, 4, np.random.default_rng(3), "random")


def test_bucketed_batches_by_default_sort_within_windows_of_many_batches():
    # 1000 lengths in 1..50, batches of 8: a window of 50 batches (400 instances) holds about 8 of
    # each length, so a batch spans a length or two; a window of one batch leaves it near random
    # (a spread about 38 on average)
    lengths = np.random.default_rng(0).integers(1, 51, size=1000)
    batches = bucketed_batches(lengths, 8, np.random.default_rng(1))
    assert np.mean([np.ptp(lengths[b]) for b in batches]) < 2


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_a_padded_step_in_chunks_has_the_loss_and_gradient_of_the_batch_padded_to_max_len(loss):
    """The authors pad every row to max_len and average over the batch's target positions."""
    train = [np.arange(1, n + 1) % 19 + 1 for n in (3, 7, 12, 16, 40)]
    encoder = Encoder(ModelConfig(**SMALL_MODEL), 20).double().eval()
    step = next(iterate_batches(train, train, 20, 12, 5, np.random.default_rng(0), "padded"))
    assert len(step) > 1
    chunked = step_loss(encoder, step, loss)
    chunked.backward()
    chunk_grads = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    pad = lambda m: torch.nn.functional.pad(m, (12 - m.shape[1], 0))  # noqa: E731
    whole = NextItemBatch.of(*(torch.cat([pad(getattr(c, name)) for c in step]) for name in ("inputs", "targets", "negatives")))
    want = step_loss(encoder, [whole], loss)
    want.backward()
    torch.testing.assert_close(chunked, want)
    for got, expected in zip(chunk_grads, (p.grad for p in encoder.parameters())):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_a_fixed_shape_step_has_the_loss_and_gradient_of_the_eager_step(loss):
    """compile: cuda-graph's finetuning batches (fixed_shape: padded to max_len, target slots in
    multiples, the empty ones weighted 0) draw what the eager step draws and give its loss."""
    train = [np.arange(1, n + 1) % 19 + 1 for n in (3, 7, 12, 16, 40, 2, 9)]
    encoder = Encoder(ModelConfig(**SMALL_MODEL), 20).double().eval()
    eager = list(iterate_batches(train, train, 20, 12, 4, np.random.default_rng(0), "padded", ()))
    fixed = list(iterate_batches(train, train, 20, 12, 4, np.random.default_rng(0), "padded", (), fixed_shapes=True))
    assert len(eager) == len(fixed) == 2
    for (step,), (batch,) in zip(eager, fixed):
        assert batch.inputs.shape == (len(step.inputs), 12) and len(batch.target_positions) == TARGET_SLOTS
        want = step_loss(encoder, [step], loss)
        want.backward()
        want_grads = [p.grad.clone() for p in encoder.parameters()]
        encoder.zero_grad()
        got = fixed_shape_loss(encoder, fixed_shape(step, 12, slots=16), loss)
        got.backward()
        torch.testing.assert_close(got, want)
        for name, (p, expected) in zip(dict(encoder.named_parameters()), zip(encoder.parameters(), want_grads)):
            torch.testing.assert_close(p.grad, expected, msg=name)
        encoder.zero_grad()
        torch.testing.assert_close(fixed_shape_loss(encoder, batch, loss), want.detach())  # TARGET_SLOTS


def test_fixed_shape_batches_keep_the_draws_and_shift_the_target_positions():
    train = [np.arange(1, n + 1) % 19 + 1 for n in (3, 7, 12)]
    (step,) = next(iterate_batches(train, train, 20, 12, 3, np.random.default_rng(0), "padded", ()))
    batch = fixed_shape(step, 12, slots=8)
    extra = 12 - step.inputs.shape[1]
    for name in ("inputs", "targets", "negatives"):
        assert torch.equal(getattr(batch, name)[:, extra:], getattr(step, name))
        assert not getattr(batch, name)[:, :extra].any()
    n = len(step.target_positions)
    assert len(batch.target_positions) == -(-n // 8) * 8 and batch.target_weights.sum() == n
    assert torch.equal(batch.targets.flatten()[batch.target_positions[:n]], step.targets.flatten()[step.target_positions])
    assert not batch.target_positions[n:].any() and not batch.target_weights[n:].any()


def test_fixed_shape_slots_are_the_smallest_multiple_that_holds_the_targets():
    """8 targets take 8 slots of 8 or of 4 (not another empty block: another shape, another CUDA
    graph) and 10 slots of 5."""
    train = [np.arange(1, 10)]  # inputs 1..8, targets 2..9
    step = make_batch(np.array([0]), train, train, num_items=20, max_len=12, rng=np.random.default_rng(0))
    assert len(step.target_positions) == 8
    assert [len(fixed_shape(step, 12, slots).target_positions) for slots in (8, 4, 5, 3)] == [8, 8, 10, 9]


def test_a_replayed_finetuning_step_reads_every_field_of_the_new_batch():
    """A CUDA graph replays on the batch it was recorded with, GraphedSteps first copying the
    fields named NEXT_ITEM_INPUTS of each new batch into it: every field fixed_shape_loss reads
    must be named, or the replay reads the recorded batch's (here: its loss)."""
    train = [np.arange(1, n + 1) for n in (3, 7, 12, 5, 10, 14)]
    rng = np.random.default_rng(0)
    recorded, new = (fixed_shape(make_batch(np.array(users), train, train, 20, 12, rng), 12)
                     for users in ([0, 1, 2], [3, 4, 5]))
    encoder = Encoder(ModelConfig(**SMALL_MODEL), 20).double().eval()
    want = {loss: fixed_shape_loss(encoder, new, loss) for loss in ("bce", "ce")}
    assert all(not torch.allclose(fixed_shape_loss(encoder, recorded, loss), want[loss]) for loss in want)
    for name in NEXT_ITEM_INPUTS:
        getattr(recorded, name).copy_(getattr(new, name))
    for loss in want:
        torch.testing.assert_close(fixed_shape_loss(encoder, recorded, loss), want[loss])


def test_bucketed_steps_group_users_by_their_input_length_after_the_cut():
    """Bucketing sorts users by the length of their inputs as cut to max_len: four users of 11
    inputs and four cut to 12 (of 19) make two steps of four without a padding column; sorted by
    lengths capped at max_len instead, the two kinds would tie and mix."""
    train = [np.arange(1, 13)] * 4 + [np.arange(1, 21)] * 4
    steps = list(iterate_batches(train, train, 30, 12, 4, np.random.default_rng(0), "bucketed"))
    assert sorted(chunk.inputs.shape[1] for (chunk,) in steps) == [11, 12]
    assert all((chunk.inputs > 0).all() for (chunk,) in steps)


def test_scores_are_the_causal_state_after_the_history_against_each_item(seed):
    """score_function: the last state computed causally, as finetuning trained it (bidirectional,
    the lower layers' earlier states would see later items), against item embeddings 0..num_items:
    column i scores item i. init_std 0.2: at the default init's near-uniform attention the two
    differ by 1e-6, here by 0.2."""
    encoder = Encoder(ModelConfig(**SMALL_MODEL, init_std=0.2), 20).double().eval()
    scores = score_function(encoder, torch.device("cpu"))([np.array([3, 1, 4, 1, 5]), np.array([9, 2])])
    inputs = torch.tensor([[3, 1, 4, 1, 5], [0, 0, 0, 9, 2]])
    with torch.no_grad():
        want = {causal: (encoder(inputs, causal)[:, -1] @ encoder.item_embeddings.weight[:21].T).float()
                for causal in (True, False)}
    assert scores.shape == (2, 21) and not torch.allclose(want[True], want[False], atol=0.01)
    torch.testing.assert_close(scores, want[True])


def test_interrupted_run_resumes_to_the_same_metrics(tiny_data, tmp_path):
    whole = run(tiny_data, tmp_path / "whole")
    assert run(tiny_data, tmp_path / "parts", stop_after=1) is None
    assert (tmp_path / "parts" / "finetune.state.pt").exists()
    first_epoch = runtime_history(tmp_path / "parts")["seconds"]
    resumed = run(tiny_data, tmp_path / "parts", threads=1)  # where it runs is not part of what it computes
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["epochs_run"] == whole["epochs_run"]
    history = runtime_history(tmp_path / "parts")
    assert history["seconds"][:1] == first_epoch  # epoch 1 was resumed from the checkpoint, not rerun
    # wall and CPU time cover every epoch, the interrupted invocation's too
    assert resumed["wall_seconds"]["finetune"] > sum(history["seconds"]) + sum(history["valid_seconds"])
    assert resumed["cpu_seconds"]["finetune"] > sum(history["cpu_seconds"]) + sum(history["valid_cpu_seconds"])


def _fake_pretrained(path, variant, hidden_size=16, num_items=40, seed=0, data=None, recorded_model=None):
    """A pretraining checkpoint; `recorded_model` is the model config it records (none by default)."""
    encoder = Encoder(ModelConfig(**{**SMALL_MODEL, "hidden_size": hidden_size}), num_items)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    digest = runtime.digest(runs.data_files(data)) if data else "0" * 64
    config = {"model": recorded_model} if recorded_model else {}
    files.save_torch(path, {"config": config, "variant": variant, "seed": seed, "data_digest": digest, "epoch": 1,
                              "state_dict": state})
    return encoder


def test_pretrained_encoder_is_loaded_strictly(tiny_data, tmp_path):
    encoder = _fake_pretrained(tmp_path / "full.pt", "full", data=tiny_data)
    result = run(tiny_data, tmp_path / "ok", variant="full", pretrained=tmp_path / "full.pt", epochs=1)
    assert result["parameters"]["heads"]["aap"] == 16 * 16 + 16
    loaded = files.load_torch(tmp_path / "ok" / "finetune.pt")
    assert loaded["variant"] == "full"
    del encoder


@pytest.mark.parametrize("case", ["missing", "wrong_variant", "wrong_shape", "no_checkpoint", "other_seed",
                                  "other_data", "other_heads", "recorded_other_size", "bare_state_dict", "heads_only",
                                  "a_list"])
def test_bad_pretrained_checkpoint_is_an_error(tiny_data, tmp_path, case):
    path = tmp_path / "pre.pt"
    if case == "wrong_variant":
        _fake_pretrained(path, "r8", data=tiny_data)
    elif case == "wrong_shape":
        _fake_pretrained(path, "full", hidden_size=8, data=tiny_data)
    elif case == "other_seed":
        _fake_pretrained(path, "full", seed=1, data=tiny_data)
    elif case == "other_data":  # same item count, other interactions
        other = tmp_path / "other"
        write_prepared(generate(SyntheticSpec(users=80, items=40, attributes=8, seed=9, max_length=15)), other)
        _fake_pretrained(path, "full", data=other)
    elif case == "other_heads":  # the same shapes: only the recorded settings tell
        _fake_pretrained(path, "full", data=tiny_data, recorded_model={**SMALL_MODEL, "num_heads": 4})
    elif case == "recorded_other_size":
        _fake_pretrained(path, "full", hidden_size=8, data=tiny_data, recorded_model={**SMALL_MODEL, "hidden_size": 8})
    elif case == "bare_state_dict":  # as the authors release theirs; before: "pretrained as variant None"
        torch.save({"item_embeddings.weight": torch.zeros(3, 2)}, path)
    elif case == "heads_only":  # a study's heads.pt; before: "does not fit this model: 28 missing tensors"
        _fake_pretrained(path, "full", data=tiny_data)
        torch.save({**files.load_torch(path), "state_dict": {"heads.aap.weight": torch.zeros(16, 16)}}, path)
    elif case == "a_list":  # before: an AttributeError traceback
        torch.save([1, 2], path)
    if case == "no_checkpoint":
        with pytest.raises(ValueError, match="needs --pretrained"):
            run(tiny_data, tmp_path / "x", variant="full")
        return
    expected = {"missing": "does not exist", "wrong_variant": "pretrained as variant", "wrong_shape": "does not fit",
                "other_seed": "pretrained with seed 1, not 0", "other_data": "pretrained on other data",
                "other_heads": r"other model settings \(num_heads 4 there, 2 here\)",
                "recorded_other_size": r"other model settings \(hidden_size 8 there, 16 here\)",
                "bare_state_dict": "a bare state dict .* convert it first with scripts/import_checkpoint.py",
                "heads_only": "only the pretraining heads .* expected the pretrain.pt it was cut from",
                "a_list": r"not a pretrain.pt \(expected a dict with `variant`, `config` and `state_dict`"}
    with pytest.raises((FileNotFoundError, ValueError), match=expected[case]):
        run(tiny_data, tmp_path / "x", variant="full", pretrained=path)
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_every_mismatch_of_a_pretrained_checkpoint_is_named_at_once(tiny_data, tmp_path):
    """Before: the first mismatch alone (the variant), so a user fixed them one rerun at a time."""
    other = tmp_path / "other"
    write_prepared(generate(SyntheticSpec(users=80, items=40, attributes=8, seed=9, max_length=15)), other)
    _fake_pretrained(tmp_path / "pre.pt", "r8", seed=1, data=other,
                     recorded_model={**SMALL_MODEL, "num_heads": 4, "num_layers": 1})
    with pytest.raises(ValueError) as error:
        run(tiny_data, tmp_path / "x", variant="full", pretrained=tmp_path / "pre.pt")
    message = str(error.value)
    for part in ("pretrained as variant 'r8', not 'full'", "pretrained with seed 1, not 0", "pretrained on other data",
                 "num_layers 1 there, 2 here; num_heads 4 there, 2 here"):
        assert part in message
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_a_rerun_into_a_finished_finetuning_folder_removes_its_metrics_at_once(tiny_data, tmp_path, caplog):
    """Before: an interrupted rerun (other settings) left the earlier metrics.json, ranks.parquet
    and finetune.pt beside its own history, a report reading them as the new run's."""
    out = tmp_path / "run"
    run(tiny_data, out, epochs=2)
    assert run(tiny_data, out, epochs=2, lr=0.01, stop_after=1) is None
    assert not any((out / name).exists() for name in runs.FINETUNE_OUTPUTS)
    assert pl.read_csv(out / "finetune_history.csv")["epoch"].to_list() == [1]
    assert "removed the outputs of an earlier finished run" in caplog.text


def test_a_checkpoint_of_other_data_is_not_resumed(tiny_data, tmp_path):
    """A state file left by a failed run on different data starts the run afresh, never crashes."""
    other = tmp_path / "other"
    write_prepared(generate(SyntheticSpec(users=80, items=60, attributes=8, seed=4, max_length=15)), other)
    assert run(other, tmp_path / "run", stop_after=1) is None
    result = run(tiny_data, tmp_path / "run")
    assert result["metrics"] == run(tiny_data, tmp_path / "clean")["metrics"]
