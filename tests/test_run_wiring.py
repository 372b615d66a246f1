"""How the pieces are wired into a run, where hand mutants survived the unit tests: the best
epoch's weights are the ones evaluated, early stopping watches the validation item, the
negatives setting reaches the batches, the length cut of finetuning and scoring, the logits'
columns, the recorded parameter counts, the popularity scores, a tie in validation, the patience
count, each epoch's random generators and each epoch's timing columns."""
from __future__ import annotations

import json
import types

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import runs, runtime, training
from s3rec.batching import chunk_bounds
from s3rec.config import ModelConfig, RunConfig
from s3rec.data import Prepared, write_prepared
from s3rec.encoder import Encoder
from s3rec.finetuning import item_logits, make_batch, score_function
from s3rec.pretraining import PretrainModel
from scripts_import import load_script
from test_runs import tiny_data  # noqa: F401 - the fixture: 60 generated users

SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12},
            "finetune": {"epochs": 30, "batch_size": 16, "patience": 2, "lr": 0.01},
            "eval": {"sampled_negatives": 20}}


@pytest.fixture(scope="module")
def finished(tiny_data, tmp_path_factory):
    """`none` finetuned until early stopping: (metrics.json, finetune_history.csv)."""
    out = tmp_path_factory.mktemp("none")
    runs.finetune(tiny_data, out, runs.resolve_config(SETTINGS, "none", 0, device="cpu"), "none")
    return json.loads((out / "metrics.json").read_text()), pl.read_csv(out / "finetune_history.csv")


def test_the_best_epoch_is_the_one_evaluated_on_the_validation_item(finished):
    """Evaluating the last epoch instead of the best, or validating on the test item, left every
    other test green: the final validation metrics must be the best epoch's history row."""
    result, history = finished
    assert result["early_stopped"] and result["best_epoch"] < result["epochs_run"]
    best = history.row(result["best_epoch"] - 1, named=True)
    valid, test = result["metrics"]["full"]["valid"], result["metrics"]["full"]["test"]
    for metric, value in valid.items():
        assert best[f"valid_{metric}"] == pytest.approx(value, rel=1e-9, abs=1e-12), metric
    assert any(best[f"valid_{metric}"] != pytest.approx(test[metric]) for metric in test)


@pytest.mark.parametrize("heldout", [False, True])
def test_the_negatives_setting_reaches_the_finetuning_batches(tiny_data, tmp_path, monkeypatch, heldout):
    seen = []
    original = runs.excluded_negatives
    monkeypatch.setattr(runs, "excluded_negatives", lambda *args: seen.append(args[2]) or original(*args))
    settings = {**SETTINGS, "finetune": {**SETTINGS["finetune"], "epochs": 1, "negatives_exclude_heldout": heldout}}
    result = runs.finetune(tiny_data, tmp_path, runs.resolve_config(settings, "none", 0, device="cpu"), "none")
    assert seen == [heldout] and result["finetune"]["negatives_exclude_heldout"] is heldout


def test_a_long_sequence_is_cut_to_its_last_max_len_inputs_and_targets():
    train = [np.arange(1, 21, dtype=np.int32)]
    batch = make_batch(np.array([0]), train, train, num_items=30, max_len=5, rng=np.random.default_rng(0))
    assert batch.inputs.tolist() == [[15, 16, 17, 18, 19]] and batch.targets.tolist() == [[16, 17, 18, 19, 20]]


def test_scores_read_the_last_max_len_items_of_a_history():
    torch.manual_seed(0)
    encoder = Encoder(ModelConfig(hidden_size=16, num_heads=2, max_len=5), num_items=30).eval()
    score = score_function(encoder, torch.device("cpu"))
    history = np.arange(1, 9)
    assert torch.equal(score([history]), score([history[-5:]]))
    assert not torch.allclose(score([history]), score([history[-4:]]))
    assert score([history]).shape == (1, 31)  # padding column 0, items 1..30: [MASK] is no candidate


def test_item_logits_cover_the_real_items_only():
    encoder = Encoder(ModelConfig(hidden_size=16, num_heads=2, max_len=5), num_items=30)
    states = torch.randn(7, 16)
    logits = item_logits(encoder, states)
    assert logits.shape == (7, 30)
    assert torch.allclose(logits[:, 0], states @ encoder.item_embeddings.weight[1])


@pytest.mark.parametrize("variant", ["full", "r4"])
def test_recorded_parameter_counts_are_the_models(variant):
    cfg = runs.resolve_config(SETTINGS, variant, 0, device="cpu")
    counts = runs.parameter_counts(cfg, num_items=40, num_attributes=8, pretrained=True)
    model = PretrainModel(cfg, 40, 8)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["attribute_embeddings"] == model.attribute_embeddings.weight.numel()
    assert counts["encoder"] == sum(p.numel() for p in model.encoder.parameters())
    none = runs.parameter_counts(RunConfig.from_dict(SETTINGS), 40, 8, pretrained=False)
    assert none["total"] == sum(p.numel() for p in Encoder(cfg.model, 40).parameters())


def test_fixed_shapes_given_decide_the_step_layout_over_the_compile_mode(tiny_data):
    """benchmarks/speed.py times the gathered and the fixed-shape steps of one mode side by side:
    `fixed_shapes` decides, cfg.compile (here none: gathered) only when it is not given."""
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    setup = runs.pretraining_setup(tiny_data, cfg, "r4", "seed 0", check_evaluation=False)
    model = PretrainModel(cfg, setup.dataset.num_items, setup.dataset.num_attributes)
    optimizer = training.adam(model.parameters(), lr=1e-3, weight_decay=0.0)

    def layout(**fixed_shapes):
        return runs.pretraining_steps(model, optimizer, setup.instances, cfg, "cpu", **fixed_shapes)[1]

    assert layout() == layout(fixed_shapes=False) == {"bounds": chunk_bounds("cpu")}
    assert layout(fixed_shapes=True) == {"bounds": (), "length": 12}


def test_popularity_scores_count_the_training_parts_only(tmp_path):
    popularity = load_script("popularity")
    assert popularity.popularity_scores([np.array([1, 1, 2])], 3).tolist() == [0.0, 2.0, 1.0, 0.0]
    # training counts 1: 4, 2: 4, 3: 1, 4 and 5: 0 (the held-out items). Ranked for the validation
    # item 4 among what is not history: users 1, 2 {3 above, 5 tied} -> rank 3, user 3 {5 tied} ->
    # rank 2. Counted from whole sequences (4 and 5 lead) or negated, every rank would be 2.
    sequences = [np.array([1, 2, 1, 4, 5]), np.array([2, 1, 2, 4, 5]), np.array([1, 2, 3, 4, 5])]
    write_prepared(Prepared(format="synthetic", user_ids=np.arange(1, 4, dtype=np.int32), sequences=sequences,
                            item_attributes=[np.zeros(0, dtype=np.int32)] + [np.array([1], dtype=np.int32)] * 5,
                            num_attributes=1), tmp_path / "data")
    assert popularity.main(["--data", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out"), "--settings",
                            json.dumps({"eval": {"protocols": ["full"]}})]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["full"]
    assert metrics["valid"]["MRR"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)


def run_loop(tmp_path, train_epoch, epochs, scores=None, patience=None, validate=None):
    """training.run_epochs on a one-weight model, seed 7; `scores`: validation scores, epoch by
    epoch (or `validate` itself)."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if scores is not None:
        def validate():
            return next(scores), {}
    return training.run_epochs(model=model, optimizer=optimizer, epochs=epochs, seed=7, train_epoch=train_epoch,
                               checkpoint=tmp_path / "state.pt", config={}, history_path=tmp_path / "history.csv",
                               validate=validate, patience=patience)


def test_a_tie_in_validation_keeps_the_first_best_epoch(tmp_path):
    """The docstring's "first epoch with the best score": a >= in place of > survived, as no
    history held a tie."""
    scores = iter([0.5, 0.5, 0.4, 0.4, 0.3])
    state = run_loop(tmp_path, lambda rng: {"loss": 1.0}, epochs=5, scores=scores, patience=2)
    assert (state.best_epoch, state.epoch) == (1, 3)


def test_patience_counts_the_epochs_since_the_last_improvement(tmp_path):
    """Scores .5 .4 .6 .5 .4, patience 2: epoch 2 is one bad epoch, epoch 3 a new best that starts
    the count again, epochs 4 and 5 make two: the run stops after epoch 5 with epoch 3 best (a
    count never reset would stop after epoch 4, having waited one epoch since the best)."""
    scores = iter([0.5, 0.4, 0.6, 0.5, 0.4, 0.3, 0.2])
    state = run_loop(tmp_path, lambda rng: {"loss": 1.0}, epochs=7, scores=scores, patience=2)
    assert (state.best_epoch, state.epoch, state.bad_epochs) == (3, 5, 2)


def test_each_epoch_draws_from_its_seed_and_its_own_number(tmp_path):
    """Epoch k (1-based, as the history numbers it) gets runtime.epoch_generators(seed, k): the
    numpy generator it is handed and torch's global RNG. Epoch 0's are the initial weights'
    (runs.pretrain and runs.finetune seed them with (seed, 0)): drawn again in epoch 1, its
    dropout would repeat the initialisation's random stream."""
    drawn = []
    state = run_loop(tmp_path, lambda rng: drawn.append((rng.integers(1 << 30), torch.rand(1).item())) or {},
                     epochs=3)
    expected = []
    for epoch in (1, 2, 3):
        rng = runtime.epoch_generators(7, epoch)
        expected.append((rng.integers(1 << 30), torch.rand(1).item()))
    assert drawn == expected and [row["epoch"] for row in state.history] == [1, 2, 3]


def test_the_history_times_each_epoch_on_its_own(tmp_path, monkeypatch):
    """seconds is one epoch's training, valid_seconds its validation, instances_per_s the epoch's
    instances over its seconds (CONTRACTS.md's history columns). On a clock that training moves
    10 s an epoch and validation 3 s: 10, 3 and 500 / 10 = 50 in every row, the second too (not
    20 s counted from the start of the loop)."""
    clock = [0.0]

    def train_epoch(rng):
        clock[0] += 10.0
        return {"loss": 1.0, "instances": 500}

    def validate():
        clock[0] += 3.0
        return 0.5, {}

    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    state = run_loop(tmp_path, train_epoch, epochs=2, validate=validate)
    history = pl.read_csv(tmp_path / "history.csv")
    assert history["seconds"].to_list() == [10.0, 10.0] and history["valid_seconds"].to_list() == [3.0, 3.0]
    assert history["instances_per_s"].to_list() == [50.0, 50.0] and state.epoch == 2


# ---------------------------------------------------------------- input checks no test reached


def negatives_folder(tmp_path, frame: pl.DataFrame):
    frame.write_parquet(tmp_path / "sampled_negatives.parquet")
    return tmp_path


@pytest.mark.parametrize("frame, message", [
    (pl.DataFrame({"user_id": [2, 1], "negatives": [[3, 4], [3, 4]]}), "user_id: expected the users of"),
    (pl.DataFrame({"user_id": [1, 2], "negatives": [[3, 4], [3]]}), "expected the same number of negatives"),
    (pl.DataFrame({"user_id": [1, 2], "negatives": [[3, 4], None]}), "expected no null values"),
])
def test_a_damaged_negatives_file_is_refused_naming_it(tmp_path, frame, message):
    from s3rec.data import NEGATIVES_SCHEMA, DataError, load_sampled_negatives
    folder = negatives_folder(tmp_path, frame.cast(NEGATIVES_SCHEMA))
    with pytest.raises(DataError, match=f"sampled_negatives.parquet: .*{message}"):
        load_sampled_negatives(folder, np.array([1, 2], dtype=np.int32))


def test_an_attribute_id_0_in_the_prepared_attributes_is_refused(tiny_data, tmp_path):
    import shutil

    from s3rec.data import DataError, load_dataset
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    path = copy / "item_attributes.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.when(pl.col("item_id") == 1).then(pl.lit([0], dtype=frame.schema["attributes"]))
                       .otherwise(pl.col("attributes")).alias("attributes")).write_parquet(path)
    with pytest.raises(DataError, match=r"item_attributes\.parquet: attributes: expected attribute ids >= 1"):
        load_dataset(copy)


def test_a_sampled_negative_equal_to_the_target_is_refused():
    from s3rec.evaluation import sampled_ranks
    with pytest.raises(ValueError, match="a sampled negative equals its user's target"):
        sampled_ranks(lambda histories: torch.zeros(len(histories), 6), [np.array([1, 2])], np.array([4]),
                      np.array([[4, 1, 2]]))


def test_the_bootstrap_states_the_mean_difference():
    from s3rec.intervals import paired_bootstrap
    assert paired_bootstrap(np.array([[0.0, 0.0, 3.0]]), samples=50)[0] == 1.0  # the median would say 0
