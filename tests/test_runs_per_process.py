"""benchmarks/runs_per_process.py rehearsed on CPU with a tiny generated data set: it runs N
runs in one process and reports epochs per hour per N (on a GPU each run has its own stream;
here they step eagerly one after another, so only the bookkeeping is checked). Also benchmarks/batch_drawing.py, which times the host's
batch drawing alone."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO
from s3rec.cuda_graphs import GRID_INPUTS
from s3rec.data import leave_one_out, load_dataset, write_prepared
from s3rec.encoder import SelfAttention
from s3rec.pretrain_batches import split_instances
from s3rec.synthetic import SyntheticSpec, generate
from s3rec.training import adam
from scripts_import import load_script


@pytest.fixture
def runs_per_process(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports speed.py beside it
    return load_script("runs_per_process", folder="benchmarks")


def test_runs_per_process_reports_each_number_of_runs(runs_per_process, tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert runs_per_process.main(["--device", "cpu", "--threads", "1", "--runs", "1", "2", "--batches", "2",
                                  "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["device"], report["streams"], report["compile"]) == ("cpu", False, "none")
    steps = report["steps_per_epoch"]  # the prefix instances of 300 users' training parts, in batches of 100
    assert 3 < steps < 60
    one, two = report["results"]
    assert (one["runs"], two["runs"], one["speedup_over_one_run"]) == (1, 2, 1.0)
    for result in (one, two):  # an epoch: steps_per_epoch rounds; all runs together: runs epochs a round
        assert result["seconds_per_epoch"] == pytest.approx(steps * result["seconds_per_round"], abs=0.01)
        assert result["epochs_per_hour"] == pytest.approx(result["runs"] * 3600 / result["seconds_per_epoch"],
                                                          rel=0.01)


def test_runs_per_process_refuses_to_time_more_steps_than_an_epoch_has(runs_per_process, tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=40, items=60, attributes=8, seed=3, max_length=6)), data)
    with pytest.raises(SystemExit):
        runs_per_process.main(["--device", "cpu", "--runs", "1", "--batches", "50", "--data", str(data)])
    assert "--batches 50: an epoch has " in capsys.readouterr().err


def test_batch_drawing_times_each_layout(tmp_path, capsys, monkeypatch):
    """benchmarks/batch_drawing.py: an epoch of each kind of batches, drawn and counted."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert load_script("batch_drawing", folder="benchmarks").main(["--repeats", "2", "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("pretrain_fixed_shapes", "pretrain_chunks", "finetune_fixed_shapes", "finetune_chunks"):
        assert len(report[name]["seconds"]) == 2 and report[name]["best_seconds"] == min(report[name]["seconds"])
    assert report["finetune_chunks"]["steps"] == report["finetune_fixed_shapes"]["steps"] == 2  # 300 users, 256 a batch
    assert report["pretrain_chunks"]["steps"] == report["pretrain_fixed_shapes"]["steps"] > 3


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # CPU attention under vmap, dropout off
def test_stacked_runs_are_each_runs_own_losses_and_gradients(runs_per_process):
    """--mode stacked computes what N separate runs compute: each run's losses of its own batch,
    and, from the summed loss, each run's own gradients and Adam step (dropout off; double precision)."""
    from s3rec.config import RunConfig
    from s3rec.pretraining import PretrainModel

    torch.manual_seed(0)
    count, size, length, items, attributes = 3, 6, 12, 40, 9
    cfg = RunConfig.from_dict({"model": {"rank": None, "max_len": length}, "pretrain": {"preset": "paper"}})
    models = [PretrainModel(cfg, items, attributes).double().eval() for _ in range(count)]
    table = (torch.rand(items + 2, attributes) < 0.3).double()

    def ids(top):
        x = torch.randint(1, top + 1, (count, size, length))
        x[:, :, : length // 3] = 0  # left padding
        return x

    stacked = runs_per_process.StackedBatch(items=ids(items), masked_items=ids(items + 1), negative_items=ids(items),
                                            masked_segments=ids(items + 1), pos_segments=ids(items + 1),
                                            neg_segments=ids(items + 1))
    runs = runs_per_process.StackedRuns(models, table)
    assert sum(w.numel() for w in runs.parameters()) == count * sum(p.numel() for p in models[0].parameters())
    losses = runs.losses(stacked)
    losses["loss"].backward()
    for i, model in enumerate(models):
        fields = {name: getattr(stacked, name)[i] for name in GRID_INPUTS}
        own = model.grid_forward(runs_per_process.grid_batch(fields, torch.zeros(0, dtype=torch.long)), table)["loss"]
        own.backward()
        assert losses["per_run"][i].item() == pytest.approx(own.item(), rel=1e-12)
        for weight, (name, parameter) in zip(runs.weights, model.named_parameters()):
            torch.testing.assert_close(weight.grad[i], parameter.grad, rtol=1e-10, atol=1e-12, msg=name)
    # one Adam over the stacked weights is each run's own Adam (it is elementwise)
    adam(runs.parameters(), lr=1e-3, weight_decay=0.0).step()
    for i, model in enumerate(models):
        adam(model.parameters(), lr=1e-3, weight_decay=0.0).step()
        for weight, (name, parameter) in zip(runs.weights, model.named_parameters()):
            torch.testing.assert_close(weight[i], parameter, rtol=1e-12, atol=1e-14, msg=name)


def test_stacked_mode_reports_each_number_of_runs(runs_per_process, tmp_path, capsys):
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=300, items=60, attributes=8, seed=3, max_length=15)), data)
    assert runs_per_process.main(["--device", "cpu", "--threads", "1", "--mode", "stacked", "--runs", "1", "3",
                                  "--batches", "2", "--data", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["mode"], report["streams"]) == ("stacked", False)
    one, three = report["results"]
    assert (one["runs"], three["runs"], one["attention_spelled_out"]) == (1, 3, False)
    assert one["vmap_fallbacks"] == three["vmap_fallbacks"] == []  # dropout on: the CPU attends by matmul
    assert three["epochs_per_hour"] == pytest.approx(3 * 3600 / three["seconds_per_epoch"], rel=0.01)


@pytest.fixture
def stacked_and_batch(runs_per_process, tmp_path):
    """Two stacked runs (StackedRuns) on a tiny data set, and their first stacked batch."""
    data = tmp_path / "tiny"
    write_prepared(generate(SyntheticSpec(users=200, items=60, attributes=8, seed=3, max_length=15)), data)
    dataset = load_dataset(data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=50)
    run = runs_per_process.StackedRun(dataset, instances, 2, torch.device("cpu"))
    (batch,) = next(run.epochs(instances))
    return run.stacked, batch


def test_the_stacked_probe_names_the_ops_vmap_runs_once_per_run(stacked_and_batch):
    """Without dropout the CPU attends with SDPA, which vmap has no rule for: the probe names it."""
    stacked, batch = stacked_and_batch
    assert stacked.prepare(batch) == [] and not stacked.attention_spelled_out
    stacked.template.eval()
    assert [op for op in stacked.probe(batch) if "scaled_dot_product" in op] != []


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # SDPA under vmap, dropout off
def test_where_the_attention_fails_under_vmap_the_stacked_step_spells_it_out(stacked_and_batch, capsys):
    """The fallback for a GPU whose fused attention has no vmap rule: rehearsed by making the
    attention fail; the spelled-out attention gives the same losses (dropout off)."""
    stacked, batch = stacked_and_batch
    stacked.template.eval()
    want = stacked.losses(batch)["per_run"]

    def no_rule(*args):
        raise RuntimeError("vmap: no batching rule for this attention (a rehearsal)")

    for module in stacked.template.modules():
        if isinstance(module, SelfAttention):
            module.attend = no_rule
    assert stacked.prepare(batch) == [] and stacked.attention_spelled_out
    assert "the attention failed under vmap (vmap: no batching rule" in capsys.readouterr().err
    torch.testing.assert_close(stacked.losses(batch)["per_run"], want)
