"""s3rec/stacked.py: several seeds of one variant pretrained as one stacked model (vmap).

The stacked step is each run's own step (losses, gradients, Adam); a stacked pretraining of
seeds 0 and 1 ends where each seed's own run ends when both draw the same batches; it is
deterministic and resumable; and it refuses what it cannot do, by name."""
from __future__ import annotations

import copy
import json
import logging

import polars as pl
import pytest
import torch

from s3rec import files, runs, runtime, stacked
from s3rec.config import RunConfig
from s3rec.cuda_graphs import GRID_INPUTS
from s3rec.data import leave_one_out, load_dataset, write_prepared
from s3rec.encoder import SelfAttention
from s3rec.pretrain_batches import item_attribute_table, split_instances
from s3rec.pretrain_batches import iterate_batches as pretrain_batches
from s3rec.pretraining import PretrainModel
from s3rec.synthetic import SyntheticSpec, generate
from s3rec.training import adam
from scripts_import import load_script

# CPU attention without dropout is SDPA, which vmap runs once per run (torch warns; the same values)
pytestmark = pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")

SETTINGS = {"model": {"hidden_size": 16, "num_heads": 2, "max_len": 12},
            "pretrain": {"epochs": 2, "batch_size": 32, "batching": "padded"},
            "finetune": {"epochs": 1, "batch_size": 32},
            "eval": {"sampled_negatives": 20}}
NO_DROPOUT = {**SETTINGS, "model": {**SETTINGS["model"], "hidden_dropout": 0.0, "attention_dropout": 0.0}}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "tiny"
    write_prepared(generate(SyntheticSpec(users=60, items=40, attributes=8, seed=5, max_length=15)), out)
    return out


def weights(folder) -> dict[str, torch.Tensor]:
    return files.load_torch(folder / "pretrain.pt")["state_dict"]


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def test_stacked_runs_are_each_runs_own_losses_and_gradients():
    """The stacked step computes what N separate runs compute: each run's losses of its own
    batch, and, from the summed loss, each run's own gradients and Adam step (dropout off;
    double precision)."""
    torch.manual_seed(0)
    count, size, length, items, attributes = 3, 6, 12, 40, 9
    cfg = RunConfig.from_dict({"model": {"rank": None, "max_len": length}, "pretrain": {"preset": "paper"}})
    models = [PretrainModel(cfg, items, attributes).double().eval() for _ in range(count)]
    table = (torch.rand(items + 2, attributes) < 0.3).double()

    def ids(top):
        x = torch.randint(1, top + 1, (count, size, length))
        x[:, :, : length // 3] = 0  # left padding
        return x

    batch = stacked.StackedBatch(items=ids(items), masked_items=ids(items + 1), negative_items=ids(items),
                                 masked_segments=ids(items + 1), pos_segments=ids(items + 1),
                                 neg_segments=ids(items + 1))
    runs_ = stacked.StackedRuns(models, table)
    assert sum(w.numel() for w in runs_.parameters()) == count * sum(p.numel() for p in models[0].parameters())
    losses = runs_.losses(batch)
    losses["loss"].backward()
    for i, model in enumerate(models):
        fields = {name: getattr(batch, name)[i] for name in GRID_INPUTS}
        own = model.grid_forward(stacked.grid_batch(fields, torch.zeros(0, dtype=torch.long)), table)
        own["loss"].backward()
        for row, name in enumerate(stacked.LOSSES):
            assert losses["per_run"][row, i].item() == pytest.approx(own[name].item(), rel=1e-12), name
        for weight, (name, parameter) in zip(runs_.weights, model.named_parameters()):
            torch.testing.assert_close(weight.grad[i], parameter.grad, rtol=1e-10, atol=1e-12, msg=name)
    # one Adam over the stacked weights is each run's own Adam (it is elementwise)
    adam(runs_.parameters(), lr=1e-3, weight_decay=0.0).step()
    for i, model in enumerate(models):
        adam(model.parameters(), lr=1e-3, weight_decay=0.0).step()
        for name, parameter in model.named_parameters():
            torch.testing.assert_close(runs_.run_state_dict(i)[name], parameter.detach(), rtol=1e-12, atol=1e-14,
                                       msg=name)


@pytest.fixture
def stacked_and_batch(tiny_data):
    """Two stacked runs of the paper's model on the tiny data set, and their first stacked batch."""
    dataset = load_dataset(tiny_data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=50)
    cfg = RunConfig.from_dict({"model": {"rank": None}, "pretrain": {"preset": "paper"}})
    models = [PretrainModel(cfg, dataset.num_items, dataset.num_attributes) for _ in range(2)]
    draws = [pretrain_batches(instances, 32, runtime.epoch_generators(seed, 1), mask_prob=0.2, batching="padded",
                              bounds=(), length=50) for seed in (0, 1)]
    (first,), (second,) = next(zip(*draws))
    return stacked.StackedRuns(models, item_attribute_table(instances)), stacked.StackedBatch.of([first, second])


def test_a_stacked_batch_hands_on_its_tensors_without_copying_them(stacked_and_batch, monkeypatch):
    """fields() and to() (on a CPU, where nothing travels) give the batch's own tensors, and the
    step reads them as they are: dataclasses.asdict deep-copied all six each step (on a GPU, six
    copies of the packed device buffer, recorded into the graph too)."""
    runs_, batch = stacked_and_batch
    pointers = [getattr(batch, name).data_ptr() for name in GRID_INPUTS]
    assert [t.data_ptr() for t in batch.fields().values()] == pointers
    assert [getattr(batch.to("cpu"), name).data_ptr() for name in GRID_INPUTS] == pointers
    monkeypatch.setattr(stacked.copy, "deepcopy", lambda *_: pytest.fail("the step deep-copied its batch"))
    runs_.losses(batch)["loss"].backward()


def test_the_stacked_probe_names_the_ops_vmap_runs_once_per_run(stacked_and_batch):
    """With dropout the CPU attends by matmul (nothing to name); without, with SDPA, which vmap
    has no rule for: the probe names it. The probe changes no weight and no random state."""
    runs_, batch = stacked_and_batch
    before = [w.detach().clone() for w in runs_.weights]
    state = torch.get_rng_state()
    assert runs_.prepare(batch) == runs_.vmap_fallbacks == [] and not runs_.attention_spelled_out
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(before, runs_.weights))
    runs_.eval()
    assert [op for op in runs_.probe(batch) if "scaled_dot_product" in op] != []


def test_where_the_attention_fails_under_vmap_the_stacked_step_spells_it_out(stacked_and_batch, caplog):
    """The fallback for a GPU whose fused attention has no vmap rule: rehearsed by making the
    attention fail; the spelled-out attention gives the same losses (dropout off)."""
    runs_, batch = stacked_and_batch
    runs_.eval()
    want = runs_.losses(batch)["per_run"][0]

    def no_rule(*args):
        raise RuntimeError("vmap: no batching rule for this attention (a rehearsal)")

    for module in runs_.template.modules():
        if isinstance(module, SelfAttention):
            module.attend = no_rule
    assert runs_.prepare(batch) == [] and runs_.attention_spelled_out
    assert "the attention failed under vmap (vmap: no batching rule" in caplog.text
    torch.testing.assert_close(runs_.losses(batch)["per_run"][0], want)


def test_out_of_memory_in_the_probe_is_no_missing_vmap_rule(stacked_and_batch, caplog):
    """Before: any RuntimeError, CUDA's out of memory too (too many seeds for the card), was read
    as an attention without a vmap rule, and the attention spelled out, which needs more memory."""
    runs_, batch = stacked_and_batch

    def out_of_memory(*args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (a rehearsal)")

    for module in runs_.template.modules():
        if isinstance(module, SelfAttention):
            module.attend = out_of_memory
    with pytest.raises(torch.OutOfMemoryError):
        runs_.prepare(batch)
    assert not runs_.attention_spelled_out and "failed under vmap" not in caplog.text


def test_stacked_pretraining_ends_where_each_seeds_own_run_ends(tiny_data, tmp_path, monkeypatch):
    """Seeds 0 and 1 stacked against each trained alone (dropout off; one chunk a step, as on a
    GPU, so that a lone run draws its batches as the stacked one does): the same weights to
    float32's rounding after two epochs, the same losses; swapping the seeds would be far off."""
    cfg = runs.resolve_config(NO_DROPOUT, "r4", 0, device="cpu")
    written = stacked.pretrain_stacked(tiny_data, [tmp_path / "g0", tmp_path / "g1"], cfg, "r4", [0, 1])
    monkeypatch.setattr(runs, "chunk_bounds", lambda device: ())
    for seed in (0, 1):
        runs.pretrain(tiny_data, tmp_path / f"alone{seed}", runs.resolve_config(NO_DROPOUT, "r4", seed, device="cpu"),
                      "r4")
    for seed in (0, 1):
        assert largest_difference(weights(tmp_path / f"g{seed}"), weights(tmp_path / f"alone{seed}")) < 1e-4
        assert largest_difference(weights(tmp_path / f"g{seed}"), weights(tmp_path / f"alone{1 - seed}")) > 0.1
        mine = pl.read_csv(tmp_path / f"g{seed}" / "pretrain_history.csv")
        alone = pl.read_csv(tmp_path / f"alone{seed}" / "pretrain_history.csv")
        assert mine.columns == alone.columns
        for name in stacked.LOSSES:
            assert mine[name].to_list() == pytest.approx(alone[name].to_list(), rel=1e-5), name
    group = pl.read_csv(tmp_path / "g0" / stacked.GROUP_HISTORY)
    for seed, run in zip((0, 1), written):  # each run's seconds: its share of the group's
        assert run["seed"] == seed and run["stacked"]["seeds"] == [0, 1]
        assert run["wall_seconds"] == pytest.approx(group["seconds"].sum() / 2)
        assert run["stacked"]["wall_seconds"] == pytest.approx(group["seconds"].sum())
        saved = files.load_torch(tmp_path / f"g{seed}" / "pretrain.pt")
        assert (saved["seed"], saved["config"]["seed"], saved["stacked"]["seeds"]) == (seed, seed, [0, 1])
    assert not (tmp_path / "g0" / stacked.GROUP_CHECKPOINT).exists()


def test_stacked_pretraining_is_deterministic_resumable_and_finetunes_per_seed(tiny_data, tmp_path, caplog):
    """Dropout on: an interrupted and resumed group ends exactly where an uninterrupted one does;
    through scripts/pretrain.py (several --seed), whose seed-1 checkpoint finetune.py takes."""
    def script(out, *extra):
        args = ["--data", str(tiny_data), "--variant", "r4", "--seed", "0", "1", "--out-dir", str(out / "s0"),
                str(out / "s1"), "--settings", json.dumps(SETTINGS), "--device", "cpu", "--threads", "1"]
        return load_script("pretrain").main(args + list(extra))

    assert script(tmp_path / "whole") == 0
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    parts = [tmp_path / "parts" / "s0", tmp_path / "parts" / "s1"]
    assert stacked.pretrain_stacked(tiny_data, parts, cfg, "r4", [0, 1], stop_after=1) is None
    assert (parts[0] / stacked.GROUP_CHECKPOINT).exists() and not (parts[1] / "pretrain.pt").exists()
    with caplog.at_level(logging.INFO, logger="s3rec"):
        assert len(stacked.pretrain_stacked(tiny_data, parts, cfg, "r4", [0, 1])) == 2
    # resumed, not started again (which would end with the same weights too)
    assert f"resuming from {parts[0] / stacked.GROUP_CHECKPOINT} after epoch 1" in caplog.text
    for seed in ("s0", "s1"):
        a, b = weights(tmp_path / "whole" / seed), weights(tmp_path / "parts" / seed)
        assert all(torch.equal(a[name], b[name]) for name in a), seed
        # the group's two processes, in each seed's run file (test_runs: a run resumed elsewhere)
        resumed = json.loads((tmp_path / "parts" / seed / "pretrain_run.json").read_text())
        assert [process["first_epoch"] for process in resumed["processes"]] == [1, 2]
        assert "processes" not in json.loads((tmp_path / "whole" / seed / "pretrain_run.json").read_text())
    assert largest_difference(weights(tmp_path / "whole" / "s0"), weights(tmp_path / "whole" / "s1")) > 0.1

    out = tmp_path / "whole" / "s1"
    finetune = ["--data", str(tiny_data), "--variant", "r4", "--seed", "1", "--out-dir", str(out),
                "--settings", json.dumps(SETTINGS), "--device", "cpu", "--threads", "1",
                "--pretrained", str(out / "pretrain.pt")]
    assert load_script("finetune").main(finetune) == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 1

    # a rerun into the finished folders: each seed's pretraining files go at once (its history,
    # rewritten at the end alone, too); the finetuning's stay
    assert stacked.pretrain_stacked(tiny_data, [tmp_path / "whole" / "s0", out], cfg, "r4", [0, 1], stop_after=1) is None
    for name in ("pretrain.pt", "pretrain_run.json", "pretrain_history.csv"):
        assert not (out / name).exists() and not (tmp_path / "whole" / "s0" / name).exists()
    assert (out / "metrics.json").exists()


def test_draw_workers_are_forked_whatever_the_default_start_method(tiny_data, monkeypatch):
    """Each epoch's worker is a fork of the process: Python 3.14's default on Linux, forkserver,
    would import torch afresh in it every epoch (stacked.WORKER_START says what that costs)."""
    dataset = load_dataset(tiny_data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=12)
    loaders = []

    class Recorded(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recorded)
    steps = stacked.seed_steps(instances, RunConfig.from_dict(SETTINGS).pretrain,
                               runtime.epoch_generators((0, 1), 1), 12, workers=True)
    assert next(steps)[0].shape[0] == len(GRID_INPUTS)
    assert [loader.multiprocessing_context.get_start_method() for loader in loaders] == ["fork", "fork"]


def test_draws_in_worker_processes_are_the_draws_in_process(tiny_data, tmp_path):
    """seed_steps with workers: every seed's batches drawn in a worker process are those drawn
    here, step by step; a group trained so (dropout on) ends with the same weights, bit for bit."""
    dataset = load_dataset(tiny_data)
    instances = split_instances(dataset, leave_one_out(dataset.sequences), max_len=12)
    cfg = RunConfig.from_dict(SETTINGS).pretrain
    here, there = (list(stacked.seed_steps(instances, cfg, runtime.epoch_generators((0, 1), 1), 12, workers))
                   for workers in (False, True))
    assert len(here) == len(there) > 1
    for mine, theirs in zip(here, there):
        for a, b in zip(mine, theirs):
            assert torch.equal(a, b) and a.shape[0] == len(GRID_INPUTS)
    masked = GRID_INPUTS.index("masked_items")
    assert not torch.equal(here[0][0][masked], here[0][1][masked])  # two seeds, two draws
    # what the step reads: the packed fields by name, as StackedBatch.of makes them from Batches
    batches = [next(iter(stacked.SeedBatches(instances, cfg, rng, 12))) for rng in runtime.epoch_generators((0, 1), 1)]
    stacked_batch = stacked.StackedBatch.of(batches)
    assert stacked_batch.items.shape == (2, *batches[0][0].shape)
    assert all(torch.equal(getattr(stacked_batch, name), torch.stack([b[i] for b in batches]))
               for i, name in enumerate(GRID_INPUTS))

    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    for workers in (False, True):
        stacked.pretrain_stacked(tiny_data, [tmp_path / f"{workers}0", tmp_path / f"{workers}1"], cfg, "r4", [0, 1],
                                 draw_workers=workers)
    for seed in (0, 1):
        a, b = weights(tmp_path / f"False{seed}"), weights(tmp_path / f"True{seed}")
        assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("change, message", [
    ({"pretrain": {**SETTINGS["pretrain"], "batching": "bucketed"}}, "stacked pretraining needs padded batches"),
    ({"compile": "eager"}, "compile 'eager': stacked pretraining takes none or cuda-graph"),
    # before: refused only at the first step, after every seed's finished outputs were deleted
    ({"compile": "cuda-graph"}, "compile: cuda-graph records CUDA graphs and needs a CUDA device"),
])
def test_stacked_pretraining_refuses_what_it_cannot_do(tiny_data, tmp_path, change, message):
    cfg = runs.resolve_config({**SETTINGS, **{k: v for k, v in change.items() if k != "compile"}}, "r4", 0,
                              device="cpu", compile=change.get("compile"))
    finished = tmp_path / "done" / "pretrain.pt"  # an earlier finished group's output stays
    finished.parent.mkdir()
    finished.write_bytes(b"an earlier run's")
    with pytest.raises(ValueError, match=message):
        stacked.pretrain_stacked(tiny_data, [tmp_path / "done", tmp_path / "b"], cfg, "r4", [0, 1])
    assert finished.read_bytes() == b"an earlier run's"
    with pytest.raises(ValueError, match=message):
        stacked.pretrain_stacked(tiny_data, [tmp_path / "a", tmp_path / "b"], cfg, "r4", [0, 1])
    for same in ([tmp_path / "a", tmp_path / "a"], [tmp_path / "a", tmp_path / "x" / ".." / "a"]):
        with pytest.raises(ValueError, match="as many distinct seeds as distinct out dirs"):
            stacked.pretrain_stacked(tiny_data, same, cfg, "r4", [0, 1])
    assert not (tmp_path / "a").exists()


def test_the_script_wants_one_folder_per_seed(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_script("pretrain").main(["--data", str(tiny_data), "--variant", "r4", "--seed", "0", "1",
                                      "--out-dir", str(tmp_path / "a")])
    assert "one folder per seed, got 2 seeds and 1 folders" in capsys.readouterr().err


def test_a_diverged_stacked_pretraining_stops_naming_its_loss_column(tiny_data, tmp_path, caplog):
    """The stacked rows have no `loss` column (seed<S>_loss): before, a check of `loss` alone let
    NaN weights of every seed be saved."""
    settings = {**SETTINGS, "pretrain": {**SETTINGS["pretrain"], "lr": 1e30}}
    with pytest.raises(SystemExit) as stop:
        load_script("pretrain").main(["--data", str(tiny_data), "--variant", "r4", "--seed", "0", "1", "--device", "cpu",
                                      "--threads", "1", "--out-dir", str(tmp_path / "a"), str(tmp_path / "b"),
                                      "--settings", json.dumps(settings)])
    assert stop.value.code == 2 and "training seed0_loss nan: the run diverged (learning rate 1e+30)" in caplog.text
    assert not (tmp_path / "a" / "pretrain.pt").exists()


def tiny_stacked_batch(count: int, size: int, length: int, items: int) -> stacked.StackedBatch:
    """`count` runs' batches of random ids, the first third of each row padding."""
    def ids(top):
        x = torch.randint(1, top + 1, (count, size, length))
        x[:, :, : length // 3] = 0
        return x

    return stacked.StackedBatch(items=ids(items), masked_items=ids(items + 1), negative_items=ids(items),
                                masked_segments=ids(items + 1), pos_segments=ids(items + 1),
                                neg_segments=ids(items + 1))


def test_each_stacked_run_draws_its_own_dropout():
    """vmap's randomness "different": two copies of one model on one batch, dropout on, lose
    different amounts (other masks of the same distribution), in eval exactly the same."""
    torch.manual_seed(0)
    cfg = RunConfig.from_dict({"model": {**SETTINGS["model"], "rank": None}, "pretrain": {"preset": "paper"}})
    model = PretrainModel(cfg, 40, 9)
    runs_ = stacked.StackedRuns([model, copy.deepcopy(model)], (torch.rand(42, 9) < 0.3).float())
    one = tiny_stacked_batch(1, 6, 12, 40)
    batch = stacked.StackedBatch(**{name: t.expand(2, -1, -1) for name, t in one.fields().items()})
    trained = runs_.losses(batch)["per_run"]
    assert (trained[:, 0] != trained[:, 1]).all()
    evaluated = runs_.eval().losses(batch)["per_run"]
    assert torch.equal(evaluated[:, 0], evaluated[:, 1])


def test_stacked_runs_refuse_a_model_with_buffers():
    """Only parameters are stacked: a buffer would be left behind, each run reading the template's."""
    cfg = RunConfig.from_dict({"model": {**SETTINGS["model"], "rank": None}})
    models = [PretrainModel(cfg, 40, 9) for _ in range(2)]
    for model in models:
        model.register_buffer("counts", torch.zeros(3))
    with pytest.raises(ValueError, match=r"stacks parameters only; the model has buffers \['counts'\]"):
        stacked.StackedRuns(models, torch.zeros(42, 9))


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("DefaultCPUAllocator: not enough memory (a rehearsal)"),  # a CPU's: no "CUDA" in it
    RuntimeError("CUDA error: an illegal memory access was encountered (a rehearsal)"),
])
def test_a_device_fault_in_the_probe_is_no_missing_vmap_rule(stacked_and_batch, caplog, error):
    """Out of memory on any device, and a CUDA fault, are passed on: the attention is not spelled out."""
    runs_, batch = stacked_and_batch

    def fault(*args):
        raise error

    for module in runs_.template.modules():
        if isinstance(module, SelfAttention):
            module.attend = fault
    with pytest.raises(type(error), match="a rehearsal"):
        runs_.prepare(batch)
    assert not runs_.attention_spelled_out and "failed under vmap" not in caplog.text


def test_stacked_pretraining_refuses_a_seed_twice(tiny_data, tmp_path):
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cpu")
    with pytest.raises(ValueError, match="as many distinct seeds as distinct out dirs"):
        stacked.pretrain_stacked(tiny_data, [tmp_path / "a", tmp_path / "b"], cfg, "r4", [0, 0])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_seeds_row_is_its_own_losses_and_its_share_of_the_groups_counts_and_seconds():
    row = {"epoch": 3, "instances": 300, "seconds": 6.0, "cpu_seconds": 9.0,
           **{f"seed{seed}_{name}": seed + i / 10 for seed in (4, 7) for i, name in enumerate(stacked.LOSSES)}}
    assert stacked.run_row(row, 7, 3) == {"epoch": 3, "loss": 7.0, "aap": 7.1, "mip": 7.2, "map": 7.3, "sp": 7.4,
                                          "instances": 100, "cpu_seconds": 3.0, "seconds": 2.0,
                                          "instances_per_s": 50.0}


def test_each_seed_of_a_group_keeps_its_own_instance_count_and_segment_loss_history(tiny_data, tmp_path,
                                                                                     monkeypatch, caplog):
    """One epoch of seeds 0 and 1: each seed's row counts the instances a lone run counts (the
    group's row both seeds'), the SP stall check sees each seed's own SP losses in a history of
    its own, Adam gets pretrain.lr and weight_decay, and on a CPU the batches are drawn in process."""
    seen, optimizers = [], []

    def stall_check(history, sp, pair_loss):
        history.append(sp)
        seen.append(list(history))

    def recorded_adam(parameters, **settings):
        optimizers.append(settings)
        return adam(parameters, **settings)

    monkeypatch.setattr(stacked, "warn_if_segment_head_stalled", stall_check)
    monkeypatch.setattr(stacked, "adam", recorded_adam)
    settings = {**SETTINGS, "pretrain": {**SETTINGS["pretrain"], "epochs": 1, "lr": 0.002, "weight_decay": 0.01}}
    with caplog.at_level(logging.INFO, logger="s3rec"):
        stacked.pretrain_stacked(tiny_data, [tmp_path / "a", tmp_path / "b"],
                                 runs.resolve_config(settings, "r4", 0, device="cpu"), "r4", [0, 1])
    dataset = load_dataset(tiny_data)
    count = len(split_instances(dataset, leave_one_out(dataset.sequences), max_len=12))
    rows = [pl.read_csv(tmp_path / seed / "pretrain_history.csv").row(0, named=True) for seed in ("a", "b")]
    assert [row["instances"] for row in rows] == [count, count]
    assert pl.read_csv(tmp_path / "a" / stacked.GROUP_HISTORY)["instances"].to_list() == [2 * count]
    assert seen == [[pytest.approx(rows[0]["sp"])], [pytest.approx(rows[1]["sp"])]] and rows[0]["sp"] != rows[1]["sp"]
    assert optimizers == [{"lr": 0.002, "weight_decay": 0.01}]
    assert "each seed's batches drawn in this process" in caplog.text
