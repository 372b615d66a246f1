"""Several pretraining runs in one process: epochs per hour in total, in two ways.

A graphed pretraining step (compile cuda-graph) leaves an H200 mostly idle: ~500 small kernels
one after another, 2.9 ms a step, whatever else is asked of the card; N processes on one card
take turns (time-slicing) and add almost nothing (benchmarks/gpu/h200-2026-12-04: 664 epochs
an hour for one graphed job, 738 for eight). Graphs replayed on different streams of one
process may run at the same time. This measures it: N runs (own seed, model, optimizer, batch
draws, graphs) step in turn, each step's batch drawn on the host as a run draws it, copied
and replayed on the run's stream; the host never waits for the GPU until the end.

    python benchmarks/runs_per_process.py --device cuda --runs 1 2 3 4 6 8 --batches 300
    python benchmarks/runs_per_process.py --device cuda --mode stacked --runs 1 2 4 8 --batches 300
    python benchmarks/runs_per_process.py --device cpu --threads 2 --runs 1 2 --batches 20  # a rehearsal

The runs share torch's default CUDA generator, so replays that overlap may read each other's
dropout offsets (the same distribution, but draws no longer independent between runs): a
throughput figure, not yet a way to train. A run mode would give each run its own generator
state (CUDAGraph.register_generator_state).

--mode stacked (the issue's "several seeds inside one process, stacked weights, torch.func"):
the N runs' weights stacked along a first axis and their losses computed by torch.func.vmap,
each run on its own batch with its own dropout draws, one step (and, on a GPU, one graph) for
all N: as many kernels as one run's step, each N times wider. Adam is elementwise, so one Adam
over the stacked weights is N runs' Adams. tests/test_runs_per_process.py checks on a CPU that
the stacked losses and gradients are each run's own (dropout off). If the GPU's fused attention
has no vmap rule, the step falls back to attention spelled out (SelfAttention.attend_spelled_out,
as on a CPU: the same distribution; "attention_spelled_out" in the JSON), and "vmap_fallbacks" lists
the ops that vmap could only run once per run (slower; the same values).

On a CPU (no streams, no graphs) the runs step eagerly (fixed shapes, compile none), one after
another: that checks the script, not a speed. Prints one JSON object: per N, the seconds a
round of N steps takes, each run's epoch (extrapolated from --batches steps: the epoch's
batches x the seconds per round), and the epochs per hour of all N together, against N = 1.
Data: Beauty from --source, else from ../shared/data/s3rec, else generated data of Beauty's
size (speed.py).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import dataclasses
import json
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (a sibling script, not a package)

from s3rec import runtime  # noqa: E402
from s3rec.config import RunConfig  # noqa: E402
from s3rec.cuda_graphs import GRID_INPUTS, GraphedSteps  # noqa: E402
from s3rec.data import leave_one_out, load_dataset  # noqa: E402
from s3rec.encoder import SelfAttention  # noqa: E402
from s3rec.pretrain_batches import Batch, item_attribute_table, split_instances  # noqa: E402
from s3rec.pretraining import PretrainModel  # noqa: E402
from s3rec.runs import optimizer_steps  # noqa: E402
from s3rec.training import adam  # noqa: E402

WARMUP = 3  # an epoch's last steps, untimed: both of its shapes recorded (the last batch is short)


class Run:
    """One run's training step, batch layout, batch draws and stream (None on a CPU)."""

    def __init__(self, train_step, layout: dict, rng: np.random.Generator, stream):
        self.train_step, self.layout, self.rng, self.stream = train_step, layout, rng, stream

    def on_stream(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def step(self, batch, device) -> None:
        with self.on_stream():
            self.train_step([chunk.to(device) for chunk in batch])


def new_run(dataset, instances, seed: int, device) -> Run:
    """A run as scripts/pretrain.py makes it (paper preset, dense heads, fixed-shape steps;
    cuda-graph on a GPU), seeded with `seed`."""
    torch.manual_seed(seed)
    mode = "cuda-graph" if device.type == "cuda" else "none"
    train_step, layout = speed.pretraining_step(dataset, instances, "prefixes", device, mode, fixed_shapes=True)
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    return Run(train_step, layout, np.random.default_rng(seed), stream)


def draws(run: Run, instances):
    return speed.pretrain_draws(instances, run.rng, run.layout)


@dataclasses.dataclass
class StackedBatch:
    """The fixed-shape fields grid_forward reads, of N runs' batches: each (N, B, L)."""

    items: torch.Tensor
    masked_items: torch.Tensor
    negative_items: torch.Tensor
    masked_segments: torch.Tensor
    pos_segments: torch.Tensor
    neg_segments: torch.Tensor

    @classmethod
    def of(cls, batches: list[Batch]) -> "StackedBatch":
        return cls(**{name: torch.stack([getattr(b, name) for b in batches]) for name in GRID_INPUTS})

    def to(self, device) -> "StackedBatch":
        return StackedBatch(**runtime.to_device(dataclasses.asdict(self), device))


def grid_batch(fields: dict[str, torch.Tensor], empty: torch.Tensor) -> Batch:
    """A Batch of the (B, L) fields grid_forward reads (GRID_INPUTS); the index fields, which it
    does not read, `empty`."""
    return Batch(users=empty, attribute_rows=empty, attribute_ids=empty, real_positions=empty,
                 unmasked_rows=empty, masked_rows=empty, num_instances=fields["items"].shape[0], **fields)


class GridLoss(torch.nn.Module):
    """A PretrainModel whose forward is grid_forward (functional_call calls forward)."""

    def __init__(self, model: PretrainModel, table: torch.Tensor):
        super().__init__()
        self.model, self.table = model, table

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.model.grid_forward(batch, self.table)


class StackedRuns(torch.nn.Module):
    """N PretrainModels of one shape as one module: each weight stacked to (N, ...), the N runs'
    losses by vmap over (weights, batch). losses(stacked batch)["loss"] is the sum of the runs'
    losses, whose gradient with respect to run i's weights is run i's own gradient."""

    def __init__(self, models: list[PretrainModel], table: torch.Tensor):
        super().__init__()
        weights, buffers = stack_module_state(models)
        if buffers:
            raise ValueError(f"StackedRuns stacks parameters only; the model has buffers {list(buffers)}")
        self.names = [f"model.{name}" for name in weights]
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(w.detach()) for w in weights.values())
        # not a submodule: it lends functional_call its code, not its (meta) parameters
        self.__dict__["template"] = GridLoss(copy.deepcopy(models[0]).to("meta"), table).train(models[0].training)
        self.empty = torch.zeros(0, dtype=torch.long, device=table.device)
        self.attention_spelled_out = False

    def run_losses(self, weights: tuple[torch.Tensor, ...], fields: dict[str, torch.Tensor]) -> dict:
        """One run's losses (inside vmap): its weights and its batch's (B, L) fields."""
        return functional_call(self.template, dict(zip(self.names, weights)), (grid_batch(fields, self.empty),))

    def losses(self, batch: StackedBatch) -> dict[str, torch.Tensor]:
        per_run = vmap(self.run_losses, randomness="different")(tuple(self.weights), dataclasses.asdict(batch))
        return {"loss": per_run["loss"].sum(), "per_run": per_run["loss"]}

    def prepare(self, batch: StackedBatch) -> list[str]:
        """Probe a stacked forward and backward on `batch` (the weights left as they are) and return
        the ops vmap could only run once per run (torch warns of each). The fused attention with
        dropout may have no vmap rule at all (an error): then the attention is spelled out
        (attention_spelled_out) and probed again."""
        try:
            return self.probe(batch)
        except (RuntimeError, NotImplementedError) as error:
            if self.attention_spelled_out:
                raise
            print(f"stacked: the attention failed under vmap ({str(error).splitlines()[0]}); "
                  f"spelled out instead", file=sys.stderr)
            self.attention_spelled_out = True
            for module in self.template.modules():
                if isinstance(module, SelfAttention):
                    module.attend = module.attend_spelled_out
            return self.probe(batch)

    def probe(self, batch: StackedBatch) -> list[str]:
        """The ops that vmap ran once per run in a stacked forward and backward (no weight changes)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.autograd.grad(self.losses(batch)["loss"], list(self.parameters()))
        return sorted({match.group(1) for w in caught
                       if (match := re.search(r"batching rule for (\S+?)\.? ", str(w.message)))})


class StackedRun:
    """`count` runs (own seed, weights, batch draws) trained as one stacked step: Run's interface."""

    def __init__(self, dataset, instances, count: int, device):
        models = []
        for seed in range(count):
            torch.manual_seed(seed)
            models.append(speed.paper_model(dataset, "prefixes", device))
        self.stacked = StackedRuns(models, item_attribute_table(instances).to(device))
        self.optimizer = adam(self.stacked.parameters(), lr=1e-3, weight_decay=0.0)
        self.layout = {"bounds": (), "length": models[0].cfg.model.max_len}
        self.rngs = [np.random.default_rng(seed) for seed in range(count)]
        self.graphed = device.type == "cuda"
        self.train_step = None

    def epochs(self, instances):
        """One iterator of stacked batches: the runs' own draws, step by step."""
        return map(lambda *chunks: [StackedBatch.of([c for (c,) in chunks])],
                   *(speed.pretrain_draws(instances, rng, self.layout) for rng in self.rngs))

    def step(self, batch, device) -> None:
        chunks = [chunk.to(device) for chunk in batch]
        if self.train_step is None:
            self.train_step = self.make_step(chunks)
        self.train_step(chunks)

    def make_step(self, first: list[StackedBatch]):
        self.vmap_fallbacks = self.stacked.prepare(first[0])
        if self.graphed:
            return GraphedSteps(self.stacked, self.optimizer, self.stacked.losses, GRID_INPUTS)
        return optimizer_steps(lambda chunks: self.stacked.losses(chunks[0]), self.optimizer)


def measure_stacked(count: int, dataset, instances, limit: int, device, steps_per_epoch: int) -> dict:
    """`count` runs stacked into one step, for `limit` steps (after an untimed warm-up)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = StackedRun(dataset, instances, count, device)
    for batch in collections.deque(run.epochs(instances), maxlen=WARMUP):  # both shapes recorded
        run.step(batch, device)
    speed.synchronize(device)
    batches = run.epochs(instances)
    start = time.perf_counter()
    for _ in range(limit):
        run.step(next(batches), device)
    speed.synchronize(device)
    return {**rates(count, time.perf_counter() - start, limit, steps_per_epoch, device),
            "attention_spelled_out": run.stacked.attention_spelled_out, "vmap_fallbacks": run.vmap_fallbacks}


def rates(count: int, seconds: float, limit: int, steps_per_epoch: int, device) -> dict:
    epoch = seconds / limit * steps_per_epoch
    return {"runs": count, "seconds_per_round": round(seconds / limit, 5), "seconds_per_epoch": round(epoch, 2),
            "epochs_per_hour": round(count * 3600 / epoch, 1), "peak_gpu_mib": runtime.peak_device_memory_mib(device)}


def measure(count: int, dataset, instances, limit: int, device, steps_per_epoch: int) -> dict:
    """`count` runs stepping in turn for `limit` steps each (after an untimed warm-up)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # each N's own peak
    group = [new_run(dataset, instances, seed, device) for seed in range(count)]
    for run in group:  # warm-up: the last steps of a whole epoch record both shapes
        for batch in collections.deque(draws(run, instances), maxlen=WARMUP):
            run.step(batch, device)
    speed.synchronize(device)
    epochs = [draws(run, instances) for run in group]
    start = time.perf_counter()
    for _ in range(limit):
        for run, batches in zip(group, epochs):
            run.step(next(batches), device)  # drawn here, as a run draws it: host work between replays
    speed.synchronize(device)
    return rates(count, time.perf_counter() - start, limit, steps_per_epoch, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4], help="numbers of runs in the process")
    parser.add_argument("--mode", choices=("streams", "stacked"), default="streams",
                        help="runs on their own streams, or stacked into one step (vmap)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, default=300, help="timed steps per run (extrapolated to an epoch)")
    parser.add_argument("--data", type=Path, default=None, help="a prepared data set instead of Beauty (tests)")
    speed.add_source_argument(parser)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.runs) or args.batches < 1:
        parser.error("--runs and --batches: every number must be at least 1")
    runtime.set_threads(args.threads)
    device = runtime.choose_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        name, path = ("given", args.data) if args.data else speed.prepare(Path(tmp), args.source)
        dataset = load_dataset(path)
    split = leave_one_out(dataset.sequences)
    instances = split_instances(dataset, split, max_len=RunConfig().model.max_len, kind="prefixes")
    steps_per_epoch = -(-len(instances) // speed.PRETRAIN_BATCH)
    if args.batches >= steps_per_epoch:
        parser.error(f"--batches {args.batches}: an epoch has {steps_per_epoch} steps; time fewer (the last, "
                     f"short one is recorded in the warm-up)")
    how = measure_stacked if args.mode == "stacked" else measure
    measured = [how(n, dataset, instances, args.batches, device, steps_per_epoch) for n in args.runs]
    single = next((m["epochs_per_hour"] for m in measured if m["runs"] == 1), None)
    for m in measured:
        m["speedup_over_one_run"] = round(m["epochs_per_hour"] / single, 2) if single else None
    report = {"dataset": name, **runtime.describe_execution(device), "machine": speed.machine(), "mode": args.mode,
              "compile": "cuda-graph" if device.type == "cuda" else "none",
              "streams": device.type == "cuda" and args.mode == "streams",
              "steps_per_epoch": steps_per_epoch, "timed_steps_per_run": args.batches, "results": measured}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
