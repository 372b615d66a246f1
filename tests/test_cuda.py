"""The CUDA path against the CPU path: same losses, same ranks, no host synchronisation in a
training step, runs that resume. Skipped where torch sees no CUDA device (the CPU-only CI);
run it on a GPU machine with `python -m pytest tests/test_cuda.py`.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import polars as pl
import pytest
import torch

from s3rec import evaluation, files, runs, runtime
from s3rec.config import RunConfig
from s3rec.data import leave_one_out, load_dataset
from s3rec.encoder import Dropout, Encoder, SelfAttention
from s3rec.evaluation import full_ranking_ranks, sample_negatives, sampled_ranks
from s3rec.finetuning import iterate_batches as finetune_batches
from s3rec.finetuning import fixed_shape_loss, score_function, step_loss
from s3rec.pretrain_batches import build_instances
from s3rec.pretrain_batches import iterate_batches as pretrain_batches
from s3rec.pretraining import LOSS_NAMES, PretrainModel, step_losses
from s3rec.training import adam
from test_runs import SETTINGS as RUN_SETTINGS
from test_runs import tiny_data  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")

CUDA = torch.device("cuda")
# test_runs' tiny data set and settings, with the paper preset and a third finetuning epoch
SETTINGS = {**RUN_SETTINGS, "pretrain": {**RUN_SETTINGS["pretrain"], "preset": "paper"},
            "finetune": {**RUN_SETTINGS["finetune"], "epochs": 3}}


@pytest.fixture(scope="module")
def dataset(tiny_data):
    data = load_dataset(tiny_data)
    return data, leave_one_out(data.sequences)


def config(rank=None) -> RunConfig:
    return RunConfig.from_dict({**SETTINGS, "model": {**SETTINGS["model"], "rank": rank}})


def pretrain_step(dataset, seed=0):
    data, split = dataset
    cfg = config()
    instances = build_instances(split.train, data.item_attributes, data.num_items, data.num_attributes,
                                max_len=cfg.model.max_len)
    step = next(pretrain_batches(instances, 32, np.random.default_rng(seed), mask_prob=0.2, batching="padded"))
    return cfg, step


@pytest.mark.parametrize("rank", [None, 4])
def test_a_cuda_pretraining_step_has_the_cpu_steps_losses_and_gradients(dataset, rank):
    data, _ = dataset
    _, step = pretrain_step(dataset)
    cfg = config(rank)
    torch.manual_seed(0)
    cpu_model = PretrainModel(cfg, data.num_items, data.num_attributes).eval()  # eval: no dropout draws
    cuda_model = PretrainModel(cfg, data.num_items, data.num_attributes).eval()
    cuda_model.load_state_dict(cpu_model.state_dict())
    cuda_model.to(CUDA)
    on_cpu = step_losses(cpu_model, step)
    on_cuda = step_losses(cuda_model, [chunk.to(CUDA) for chunk in step])
    on_cpu["loss"].backward()
    on_cuda["loss"].backward()
    for name, value in on_cpu.items():
        torch.testing.assert_close(on_cuda[name].cpu(), value, rtol=1e-4, atol=1e-4, msg=name)
    for (name, p), q in zip(cpu_model.named_parameters(), cuda_model.parameters()):
        torch.testing.assert_close(q.grad.cpu(), p.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_a_cuda_finetuning_step_has_the_cpu_steps_loss(dataset):
    data, split = dataset
    torch.manual_seed(0)
    cpu_encoder = Encoder(config().model, data.num_items).eval()
    cuda_encoder = Encoder(config().model, data.num_items).eval()
    cuda_encoder.load_state_dict(cpu_encoder.state_dict())
    cuda_encoder.to(CUDA)
    step = next(finetune_batches(split.train, split.train, data.num_items, 12, 32, np.random.default_rng(0), "padded"))
    for loss in ("bce", "ce"):
        want = step_loss(cpu_encoder, step, loss)
        got = step_loss(cuda_encoder, [chunk.to(CUDA) for chunk in step], loss)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5, msg=loss)


def test_training_steps_never_wait_for_the_gpu(dataset):
    """torch's sync debug mode raises on any operation that synchronises the host with the GPU."""
    data, split = dataset
    cfg, step = pretrain_step(dataset)
    model = PretrainModel(cfg, data.num_items, data.num_attributes).to(CUDA)
    optimizer = adam(model.parameters(), lr=1e-3, weight_decay=0.0)
    encoder = Encoder(cfg.model, data.num_items).to(CUDA)
    encoder_optimizer = adam(encoder.parameters(), lr=1e-3, weight_decay=0.0)
    finetune_step = next(finetune_batches(split.train, split.train, data.num_items, 12, 32,
                                          np.random.default_rng(0), "padded"))
    def steps():
        losses = step_losses(model, [chunk.to(CUDA) for chunk in step])
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        loss = step_loss(encoder, [chunk.to(CUDA) for chunk in finetune_step], "bce")
        encoder_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        encoder_optimizer.step()

    steps()  # warm-up: the first steps allocate (optimizer state, pinned and device caches)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        steps()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_full_and_sampled_ranking_on_cuda_give_the_cpu_ranks(dataset):
    """The ranks stay on the device until the last batch (one copy), full and sampled alike."""
    data, split = dataset
    torch.manual_seed(0)
    encoder = Encoder(config().model, data.num_items).double().eval()  # float64: no rank flips by rounding
    negatives = sample_negatives(data.sequences, data.num_items, n=10, seed=0)
    ranks = {}
    for name, device in (("cpu", torch.device("cpu")), ("cuda", CUDA)):
        encoder.to(device)
        ranks[name] = (
            full_ranking_ranks(score_function(encoder, device), split.train, split.valid_target, data.num_items,
                               batch_size=16),
            sampled_ranks(score_function(encoder, device), split.train, split.valid_target, negatives, batch_size=16))
    for got, want in zip(ranks["cuda"], ranks["cpu"]):
        np.testing.assert_array_equal(got, want)


def test_a_ranking_pass_never_makes_the_host_wait_before_its_last_batch(dataset):
    """Validation runs every finetuning epoch: each batch's histories, targets, excluded
    history items and sampled candidates travel without a blocking copy, and nothing is read
    back until _rank_all gathers the ranks (one copy, after the loop)."""
    data, split = dataset
    encoder = Encoder(config().model, data.num_items).to(CUDA).eval()
    negatives = sample_negatives(data.sequences, data.num_items, n=10, seed=0)
    targets = np.asarray(split.valid_target, dtype=np.int64)

    def ranking_loop():
        return evaluation._batch_ranks(score_function(encoder, CUDA), split.train, targets, data.num_items, True,
                                       negatives, 16, ("full", "sampled"))

    ranking_loop()  # warm-up: pinned and device caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        parts, nan_targets = ranking_loop()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(nan_targets) == len(parts["full"]) == len(parts["sampled"]) > 1


def run_finetune(data, out, stop_after=None, compile=None):
    cfg = runs.resolve_config(SETTINGS, "none", 0, device="cuda", compile=compile)
    return runs.finetune(data, out, cfg, "none", stop_after=stop_after)


def test_a_cuda_run_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    """Every epoch's randomness comes from (seed, epoch), on the GPU too; only the order of
    floating-point sums in some CUDA kernels (atomics) may differ, hence the tolerance."""
    whole = run_finetune(tiny_data, tmp_path / "whole")
    assert run_finetune(tiny_data, tmp_path / "parts", stop_after=1) is None
    resumed = run_finetune(tiny_data, tmp_path / "parts")
    assert resumed["best_epoch"] == whole["best_epoch"]
    for split in ("valid", "test"):
        for name, value in whole["metrics"]["full"][split].items():
            assert resumed["metrics"]["full"][split][name] == pytest.approx(value, abs=1e-3), (split, name)
    recorded = json.loads((tmp_path / "whole" / "metrics.json").read_text())["execution"]
    assert recorded["device"].startswith("cuda:") and recorded["gpu"] == torch.cuda.get_device_name()
    assert recorded["peak_gpu_mib"] > 0


def test_packed_copies_arrive_intact(dataset):
    _, step = pretrain_step(dataset)
    chunk = step[0]
    moved = chunk.to(CUDA)
    torch.cuda.synchronize()
    for name, value in vars(chunk).items():
        if torch.is_tensor(value):
            assert torch.equal(getattr(moved, name).cpu(), value), name
            assert getattr(moved, name).device.type == "cuda"
    assert runtime.peak_device_memory_mib(CUDA) > 0


@pytest.mark.filterwarnings("ignore:.*torch.jit.script_method.*:DeprecationWarning")
def test_a_traced_fixed_shape_cuda_run_trains_as_the_cpu_step(tiny_data, tmp_path, monkeypatch):
    """compile: eager on CUDA (the fixed-shape step traced whole, the table on the device, no
    compiler, so it costs seconds here; device_check.sh's grid step times reduce-overhead):
    two epochs give the CPU eager step's losses. Dropout off; the CPU step as on a GPU, one
    chunk a step, so that both draw the same masks, negatives and segments."""
    settings = {**SETTINGS, "model": {**SETTINGS["model"], "hidden_dropout": 0.0, "attention_dropout": 0.0},
                "pretrain": {**SETTINGS["pretrain"], "batching": "padded"}}
    monkeypatch.setattr(runs, "chunk_bounds", lambda device: ())
    losses = {}
    for device, mode in (("cpu", "none"), ("cuda", "eager")):
        cfg = runs.resolve_config(settings, "r4", 0, device=device, compile=mode)
        runs.pretrain(tiny_data, tmp_path / mode, cfg, "r4")
        losses[mode] = pl.read_csv(tmp_path / mode / "pretrain_history.csv").select("loss", *LOSS_NAMES).to_numpy()
    np.testing.assert_allclose(losses["eager"], losses["none"], rtol=1e-4, atol=1e-5)


def graph_and_eager_training(dataset, epochs=2, settings=SETTINGS, losses_of=None):
    """Per mode ("none": the eager fixed-shape step; "cuda-graph"): every step's losses over
    `epochs` epochs of batches of 32 (the last one short: two graphs), the model and the step
    function, from the same initial model and the same random state. Also a full batch on the
    device. `losses_of(step's loss function)`: another loss function for the graphed step."""
    data, split = dataset
    instances = build_instances(split.train, data.item_attributes, data.num_items, data.num_attributes,
                                max_len=config().model.max_len)
    assert len(instances) % 32, "the test wants a short last batch"
    results = {}
    for mode in ("none", "cuda-graph"):
        cfg = RunConfig.from_dict({**settings, "compile": mode})
        torch.manual_seed(0)
        model = PretrainModel(cfg, data.num_items, data.num_attributes).to(CUDA)
        optimizer = adam(model.parameters(), lr=1e-3, weight_decay=0.0)
        train_step, layout = runs.pretraining_steps(model, optimizer, instances, cfg, CUDA, fixed_shapes=True)
        if mode == "cuda-graph" and losses_of is not None:
            train_step.losses_of = losses_of(train_step.losses_of)
        steps, full_batch = [], None
        for epoch in range(epochs):
            torch.manual_seed(100 + epoch)  # as runtime.epoch_generators does between epochs
            for step in pretrain_batches(instances, 32, np.random.default_rng(epoch), mask_prob=0.2,
                                         batching="padded", **layout):
                chunks = [chunk.to(CUDA) for chunk in step]
                full_batch = chunks if full_batch is None and step[0].num_instances == 32 else full_batch
                losses = train_step(chunks)
                steps.append(torch.stack([losses[name].detach() for name in ("loss", *LOSS_NAMES)]).cpu())
        results[mode] = (torch.stack(steps), model, train_step)
    return results, full_batch


def test_cuda_graph_steps_train_as_the_eager_fixed_shape_steps(dataset):
    """compile: cuda-graph. The recorded steps replay the eager step's kernels, dropout draws
    included (torch's graph-safe random state), and the eager warm-up before recording is undone:
    the same losses at every step and the same weights after two epochs. Replays never make the
    host wait."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, full_batch = graph_and_eager_training(dataset)
    # recording a second shape does not accumulate gradients across streams
    assert not [w for w in caught if "AccumulateGrad" in str(w.message)]
    (eager, eager_model, _), (graphed, graphed_model, train_step) = results["none"], results["cuda-graph"]
    assert len(train_step.graphs) == 2  # the full batches' shape and the last one's
    torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
    for (name, want), got in zip(eager_model.state_dict().items(), graphed_model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(full_batch)  # its shape's graph is recorded: a copy and a replay
    finally:
        torch.cuda.set_sync_debug_mode("default")


def run_pretrain(data, out, compile, stop_after=None):
    cfg = runs.resolve_config(SETTINGS, "r4", 0, device="cuda", compile=compile)
    return runs.pretrain(data, out, cfg, "r4", stop_after=stop_after)


def test_a_cuda_graph_run_resumes_and_takes_an_eager_checkpoint(tiny_data, tmp_path):
    whole = run_pretrain(tiny_data, tmp_path / "whole", "cuda-graph")
    assert whole["config"]["compile"] == "cuda-graph"
    assert run_pretrain(tiny_data, tmp_path / "parts", "cuda-graph", stop_after=1) is None
    run_pretrain(tiny_data, tmp_path / "parts", "cuda-graph")
    a = files.load_torch(tmp_path / "whole" / "pretrain.pt")["state_dict"]
    b = files.load_torch(tmp_path / "parts" / "pretrain.pt")["state_dict"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)
    # an eager run's checkpoint (Adam not capturable) goes on under cuda-graph
    assert run_pretrain(tiny_data, tmp_path / "mixed", "none", stop_after=1) is None
    run_pretrain(tiny_data, tmp_path / "mixed", "cuda-graph")
    assert len(pl.read_csv(tmp_path / "mixed" / "pretrain_history.csv")) == SETTINGS["pretrain"]["epochs"]


def test_dropout_on_cuda_keeps_the_distribution_of_the_cpu_dropout():
    """On a GPU, Dropout is F.dropout and attention dropout is SDPA's (fewer kernels): the same
    distribution as the CPU's uniform-threshold dropout. Kept values are scaled by 1/(1-p),
    a fraction p is zero; dropped attention weights average out to the undropped output."""
    torch.manual_seed(0)
    dropped = Dropout(0.3).train()(torch.ones(1000, 1000, device=CUDA))
    assert abs((dropped == 0).float().mean().item() - 0.3) < 0.003
    torch.testing.assert_close(dropped[dropped != 0], torch.full_like(dropped[dropped != 0], 1 / 0.7))
    attention = SelfAttention(config().model).to(CUDA)
    attention.attention_dropout.p = 0.3
    q, k, v = (torch.randn(1, 2, 8, 4, device=CUDA).expand(20000, 2, 8, 4) for _ in range(3))
    allowed = torch.ones(20000, 1, 8, 8, dtype=torch.bool, device=CUDA)
    attention.eval()
    want = attention.attend(q[:1], k[:1], v[:1], allowed[:1])
    attention.train()
    draws = attention.attend(q, k, v, allowed)
    assert not torch.allclose(draws[0], want[0])  # dropout did drop
    torch.testing.assert_close(draws.mean(0, keepdim=True), want, rtol=0.0, atol=0.03)


def test_a_graph_of_the_inductor_compiled_loss_trains_as_the_eager_step(dataset):
    """speed.py --compile cuda-graph-inductor (an experiment): inductor's fused kernels inside
    the recorded step. Dropout off, as inductor draws its masks its own way; fused kernels add
    in another order, hence the looser tolerance."""
    from scripts_import import load_script
    speed = load_script("speed", folder="benchmarks")
    settings = {**SETTINGS, "model": {**SETTINGS["model"], "hidden_dropout": 0.0, "attention_dropout": 0.0}}
    results, _ = graph_and_eager_training(dataset, settings=settings, losses_of=speed.inductor_losses)
    (eager, eager_model, _), (graphed, graphed_model, train_step) = results["none"], results["cuda-graph"]
    assert len(train_step.graphs) == 2
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)
    for (name, want), got in zip(eager_model.state_dict().items(), graphed_model.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_cuda_graph_finetuning_steps_train_as_the_eager_fixed_shape_steps(dataset, loss):
    """compile: cuda-graph in finetuning: the recorded steps (a graph per batch shape and number
    of target slots) give the eager fixed-shape step's losses at every step, dropout on."""
    data, split = dataset
    max_len = config().model.max_len
    results = {}
    for graphed in (False, True):
        torch.manual_seed(0)
        encoder = Encoder(config().model, data.num_items).to(CUDA)
        optimizer = adam(encoder.parameters(), lr=1e-3, weight_decay=0.0)
        if graphed:
            cfg = RunConfig.from_dict({**SETTINGS, "finetune": {**SETTINGS["finetune"], "loss": loss},
                                       "compile": "cuda-graph"})
            train_step, layout = runs.finetuning_steps(encoder, optimizer, cfg, CUDA)
        else:
            train_step = runs.optimizer_steps(lambda chunks: {"loss": fixed_shape_loss(encoder, chunks[0], loss)},
                                              optimizer)
            layout = {"bounds": (), "fixed_shapes": True}
        losses = []
        for epoch in range(2):
            torch.manual_seed(100 + epoch)
            for step in finetune_batches(split.train, split.train, data.num_items, max_len, 16,
                                         np.random.default_rng(epoch), "padded", **layout):
                losses.append(train_step([chunk.to(CUDA) for chunk in step])["loss"].detach().cpu())
        results[graphed] = (torch.stack(losses), encoder)
    assert len(train_step.graphs) == 2  # the full batches and the last one (one slot count here)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-5, atol=1e-6)
    for (name, want), got in zip(results[False][1].state_dict().items(), results[True][1].state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6, msg=name)


def test_a_cuda_graph_finetuning_run_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    whole = run_finetune(tiny_data, tmp_path / "whole", compile="cuda-graph")
    assert run_finetune(tiny_data, tmp_path / "parts", stop_after=1, compile="cuda-graph") is None
    resumed = run_finetune(tiny_data, tmp_path / "parts", compile="cuda-graph")
    assert resumed["best_epoch"] == whole["best_epoch"] and whole["config"]["compile"] == "cuda-graph"
    for split in ("valid", "test"):
        for name, value in whole["metrics"]["full"][split].items():
            assert resumed["metrics"]["full"][split][name] == pytest.approx(value, abs=1e-3), (split, name)


def test_stacked_runs_replayed_as_a_cuda_graph_train_as_the_eager_stacked_step(dataset):
    """s3rec/stacked.py: two runs' weights stacked, their losses by vmap, the step recorded by
    GraphedSteps; its replays give the eager stacked step's per-run losses and weights (dropout
    off: the comparison is of the recording, tests/test_stacked.py compares the stacked step
    with each run's own). With dropout on, the benchmark's run trains (with the fused
    attention, or spelled out where vmap cannot batch it) to finite losses."""
    from scripts_import import load_script
    from s3rec import stacked as stacking
    from s3rec.cuda_graphs import GRID_INPUTS, GraphedSteps
    from s3rec.pretrain_batches import item_attribute_table
    stacked_mode = load_script("runs_per_process", folder="benchmarks")
    data, split = dataset
    settings = {**SETTINGS, "model": {**SETTINGS["model"], "hidden_dropout": 0.0, "attention_dropout": 0.0}}
    cfg = RunConfig.from_dict(settings)
    instances = build_instances(split.train, data.item_attributes, data.num_items, data.num_attributes,
                                max_len=cfg.model.max_len)
    table = item_attribute_table(instances).to(CUDA)
    draws = [pretrain_batches(instances, 32, np.random.default_rng(seed), mask_prob=0.2, batching="padded",
                              bounds=(), length=cfg.model.max_len) for seed in (0, 1)]
    batches = [stacking.StackedBatch.of([a, b]).to(CUDA) for (a,), (b,), _ in zip(*draws, range(4))]

    def train(graphed: bool):
        torch.manual_seed(0)
        stacked = stacking.StackedRuns([PretrainModel(cfg, data.num_items, data.num_attributes).to(CUDA)
                                        for _ in range(2)], table)
        stacked.prepare(batches[0])  # as a run: the attention spelled out where vmap cannot batch it
        optimizer = adam(stacked.parameters(), lr=1e-3, weight_decay=0.0)
        step = (GraphedSteps(stacked, optimizer, stacked.losses, GRID_INPUTS) if graphed
                else runs.optimizer_steps(lambda chunks: stacked.losses(chunks[0]), optimizer))
        return torch.stack([step([batch])["per_run"][0].detach().clone() for batch in batches]), stacked

    (eager, eager_runs), (graphed, graphed_runs) = train(False), train(True)
    assert not torch.equal(eager[:, 0], eager[:, 1])  # two runs, two seeds, two batches
    torch.testing.assert_close(graphed, eager, rtol=1e-5, atol=1e-5)
    for want, got in zip(eager_runs.parameters(), graphed_runs.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    run = stacked_mode.StackedRun(data, instances, 2, CUDA, draw_workers=True)  # dropout on (the paper preset's model)
    for batch, _ in zip(run.epochs(instances), range(3)):
        run.step(batch, CUDA)
    assert torch.isfinite(run.train_step([batch[0].to(CUDA)])["per_run"][0]).all()


def test_a_stacked_cuda_graph_run_trains_each_seed_as_its_own_and_resumes(tiny_data, tmp_path):
    """pretrain_seeds_per_job on a GPU: seeds 0 and 1 stacked under cuda-graph end where each
    seed's own cuda-graph run ends (dropout off: the same draws, one chunk a step on a GPU);
    with dropout on, a group stopped after an epoch and resumed ends where a whole one does."""
    from s3rec import stacked
    no_dropout = {**SETTINGS, "model": {**SETTINGS["model"], "hidden_dropout": 0.0, "attention_dropout": 0.0}}

    def group(settings, out, stop_after=None):
        cfg = runs.resolve_config(settings, "r4", 0, device="cuda", compile="cuda-graph")
        return stacked.pretrain_stacked(tiny_data, [out / "s0", out / "s1"], cfg, "r4", [0, 1], stop_after=stop_after)

    def weights(folder):
        return files.load_torch(folder / "pretrain.pt")["state_dict"]

    group(no_dropout, tmp_path / "group")
    for seed in (0, 1):
        cfg = runs.resolve_config(no_dropout, "r4", seed, device="cuda", compile="cuda-graph")
        runs.pretrain(tiny_data, tmp_path / f"alone{seed}", cfg, "r4")
        mine, alone = weights(tmp_path / "group" / f"s{seed}"), weights(tmp_path / f"alone{seed}")
        for name in mine:
            torch.testing.assert_close(mine[name], alone[name], rtol=1e-3, atol=1e-4, msg=name)
    assert group(SETTINGS, tmp_path / "parts", stop_after=1) is None
    group(SETTINGS, tmp_path / "parts")
    group(SETTINGS, tmp_path / "whole")
    for seed in ("s0", "s1"):
        a, b = weights(tmp_path / "whole" / seed), weights(tmp_path / "parts" / seed)
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)
