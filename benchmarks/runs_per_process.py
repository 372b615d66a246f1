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
s3rec/stacked.py's StackedRuns, what scripts/pretrain.py trains with several --seed values:
the N runs' weights stacked along a first axis and their losses computed by torch.func.vmap,
each run on its own batch with its own dropout draws, one step (and, on a GPU, one graph) for
all N: as many kernels as one run's step, each N times wider. Batches are drawn as a stacked
run draws them: on a GPU each run's in a worker process of its own (--draw-in-process: all in
this process, one after another). If the GPU's fused attention has
no vmap rule, the step falls back to attention spelled out ("attention_spelled_out" in the
JSON), and "vmap_fallbacks" lists the ops that vmap could only run once per run (slower; the
same values).

On a CPU (no streams, no graphs) the runs step eagerly (fixed shapes, compile none), one after
another: that checks the script, not a speed. Prints one JSON object: per N, the seconds a
round of N steps takes, each run's epoch (extrapolated from --batches steps: the epoch's
batches x the seconds per round), and the epochs per hour of all N together, against N = 1;
and the host's part of a round spent drawing the N batches (host_drawing_seconds_per_round:
near seconds_per_round, the host sets the pace; about 0.8 ms a Beauty batch on the CPUs
measured so far, benchmarks/batch_drawing.py).
Data: Beauty from --source, else from ../shared/data/s3rec, else generated data of Beauty's
size (speed.py).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (a sibling script, not a package)

from s3rec import cli, runtime  # noqa: E402
from s3rec.config import RunConfig  # noqa: E402
from s3rec.data import leave_one_out, load_dataset  # noqa: E402
from s3rec.pretrain_batches import item_attribute_table, split_instances  # noqa: E402
from s3rec.stacked import StackedBatch, StackedRuns, seed_steps, stacked_steps  # noqa: E402
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


class StackedRun:
    """`count` runs (own seed, weights, batch draws) trained as one stacked step: Run's interface."""

    def __init__(self, dataset, instances, count: int, device, draw_workers: bool):
        models = []
        for seed in range(count):
            torch.manual_seed(seed)
            models.append(speed.paper_model(dataset, "prefixes", device))
        self.stacked = StackedRuns(models, item_attribute_table(instances).to(device))
        self.optimizer = adam(self.stacked.parameters(), lr=1e-3, weight_decay=0.0)
        self.cfg = models[0].cfg
        self.rngs = [np.random.default_rng(seed) for seed in range(count)]
        self.draw_workers = draw_workers
        self.graphed = device.type == "cuda"
        self.train_step = None

    def epochs(self, instances):
        """One iterator of stacked batches: the runs' own draws, step by step, drawn as a stacked
        run draws them (seed_steps: in worker processes with draw_workers)."""
        steps = seed_steps(instances, self.cfg.pretrain, self.rngs, self.cfg.model.max_len, self.draw_workers)
        return map(lambda batches: [StackedBatch.of(list(batches))], steps)

    def step(self, batch, device) -> None:
        chunks = [chunk.to(device) for chunk in batch]
        if self.train_step is None:
            self.train_step = stacked_steps(self.stacked, self.optimizer, chunks[0],
                                            "cuda-graph" if self.graphed else "none")
        self.train_step(chunks)


def measure_stacked(count: int, dataset, instances, limit: int, device, steps_per_epoch: int,
                    draw_workers: bool) -> dict:
    """`count` runs stacked into one step, for `limit` steps (after an untimed warm-up)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    run = StackedRun(dataset, instances, count, device, draw_workers)
    for batch in collections.deque(run.epochs(instances), maxlen=WARMUP):  # both shapes recorded
        run.step(batch, device)
    speed.synchronize(device)
    batches = run.epochs(instances)
    drawing = 0.0
    start = time.perf_counter()
    for _ in range(limit):
        began = time.perf_counter()
        batch = next(batches)
        drawing += time.perf_counter() - began
        run.step(batch, device)
    speed.synchronize(device)
    # The host draws every run's batch for each step; where this is near seconds_per_round, the
    # host, not the GPU, sets the pace (the GPU replays the last step meanwhile).
    return {**rates(count, time.perf_counter() - start, limit, steps_per_epoch, device),
            "host_drawing_seconds_per_round": round(drawing / limit, 5), "draw_workers": draw_workers,
            "attention_spelled_out": run.stacked.attention_spelled_out,
            "vmap_fallbacks": run.stacked.vmap_fallbacks}


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
    drawing = 0.0
    start = time.perf_counter()
    for _ in range(limit):
        for run, batches in zip(group, epochs):
            began = time.perf_counter()
            batch = next(batches)  # drawn here, as a run draws it: host work between replays
            drawing += time.perf_counter() - began
            run.step(batch, device)
    speed.synchronize(device)
    return {**rates(count, time.perf_counter() - start, limit, steps_per_epoch, device),
            "host_drawing_seconds_per_round": round(drawing / limit, 5)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=cli.positive_int, nargs="+", default=[1, 2, 4], help="numbers of runs in the process")
    parser.add_argument("--mode", choices=("streams", "stacked"), default="streams",
                        help="runs on their own streams, or stacked into one step (vmap)")
    parser.add_argument("--draw-in-process", action="store_true",
                        help="stacked: draw every run's batches in this process (default on a GPU, as a stacked run: "
                             "each run's in a worker process of its own; on a CPU always in process)")
    parser.add_argument("--device", type=cli.device_argument, default="auto")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    parser.add_argument("--batches", type=cli.positive_int, default=300, help="timed steps per run (extrapolated to an epoch)")
    parser.add_argument("--data", type=Path, default=None, help="a prepared data set instead of Beauty (tests)")
    speed.add_source_argument(parser)
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.runs) or args.batches < 1:
        parser.error("--runs and --batches: every number must be at least 1")
    runtime.set_threads(args.threads)
    device = cli.device_argument_checked(parser, args.device)
    with tempfile.TemporaryDirectory() as tmp, cli.clear_errors():  # a bad --data or --source: its message alone
        name, path = ("given", args.data) if args.data else speed.prepare(Path(tmp), args.source)
        dataset = load_dataset(path)
    split = leave_one_out(dataset.sequences)
    instances = split_instances(dataset, split, max_len=RunConfig().model.max_len, kind="prefixes")
    steps_per_epoch = -(-len(instances) // speed.PRETRAIN_BATCH)
    if args.batches >= steps_per_epoch:
        parser.error(f"--batches {args.batches}: an epoch has {steps_per_epoch} steps; time fewer (the last, "
                     f"short one is recorded in the warm-up)")
    if args.mode == "stacked":
        workers = device.type == "cuda" and not args.draw_in_process
        how = functools.partial(measure_stacked, draw_workers=workers)
    else:
        how = measure
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
