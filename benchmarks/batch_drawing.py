"""Host time to draw one epoch of training batches (the host's share of a GPU step): prints JSON.

Pretraining (prefix instances, batches of 100) and finetuning (batches of 256, the workflow's
excluded items: each user's training part), each as a run draws them on a GPU (fixed shapes:
one chunk a step padded to max_len) and on a CPU (length chunks); best and all of --repeats
epochs, each from its own seed. No model runs.

With --stacked-seeds N [N ...]: also a stacked pretraining's steps of N seeds
(stacked.seed_steps, then StackedBatch.of), drawn in line and by one worker process per seed
(the default on a GPU): per step, the CPU time of the process that would drive the GPU and
the wall time, over --steps steps after the first; and the first step's wall time apart
(`first_step_s`: with workers, their start-up, which every epoch pays). --worker-start starts
the workers another way than stacked.WORKER_START (fork), e.g. forkserver, Python 3.14's default.

    python benchmarks/batch_drawing.py [--repeats 3] [--source DIR] [--stacked-seeds 2 4 --steps 300]
                                       [--worker-start forkserver]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (a sibling script, not a package)

from s3rec import cli, runtime, stacked  # noqa: E402
from s3rec.batching import CHUNK_BOUNDS  # noqa: E402
from s3rec.config import RunConfig  # noqa: E402
from s3rec.data import leave_one_out, load_dataset  # noqa: E402
from s3rec.finetuning import iterate_batches as finetune_batches  # noqa: E402
from s3rec.pretrain_batches import split_instances  # noqa: E402
from s3rec.stacked import StackedBatch, seed_steps  # noqa: E402


def timed(draw_epoch, repeats: int) -> dict:
    seconds = []
    for seed in range(repeats):
        start = time.perf_counter()
        steps = sum(1 for _ in draw_epoch(np.random.default_rng(seed)))
        seconds.append(round(time.perf_counter() - start, 3))
    return {"steps": steps, "best_seconds": min(seconds), "seconds": seconds}


def stacked_steps(instances, seeds: int, steps: int, max_len: int, worker_start: str | None) -> dict:
    """Per step of `seeds` stacked seeds: this process's CPU ms and wall ms, in line and with workers."""
    cfg = RunConfig.from_dict({"pretrain": {"preset": "paper"}}).pretrain  # padded batches of 100
    report = {"seeds": seeds}
    for workers in (False, True):
        first = time.perf_counter()
        draws = seed_steps(instances, cfg, runtime.epoch_generators(tuple(range(seeds)), 1), max_len, workers,
                           worker_start)
        next(draws)  # the workers' start-up and the first draw: timed apart
        first = time.perf_counter() - first
        cpu, wall, done = time.process_time(), time.perf_counter(), 0
        for done, step in zip(range(1, steps + 1), draws):
            StackedBatch.of(list(step))
        report["workers" if workers else "in_line"] = {
            "steps": done, "process_cpu_ms_per_step": round((time.process_time() - cpu) / max(done, 1) * 1e3, 2),
            "wall_ms_per_step": round((time.perf_counter() - wall) / max(done, 1) * 1e3, 2),
            "first_step_s": round(first, 3)}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=cli.positive_int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="a prepared data set instead of Beauty (tests)")
    parser.add_argument("--stacked-seeds", type=cli.positive_int, nargs="+", default=[], metavar="N",
                        help="also time a stacked pretraining's steps of N seeds, in line and with draw workers")
    parser.add_argument("--steps", type=cli.positive_int, default=300, help="timed steps of --stacked-seeds")
    parser.add_argument("--worker-start", choices=multiprocessing.get_all_start_methods(),
                        default=stacked.WORKER_START, help="how --stacked-seeds' workers start (default: the "
                        f"runs' own, {stacked.WORKER_START})")
    speed.add_source_argument(parser)
    args = parser.parse_args(argv)
    runtime.set_threads(1)
    with tempfile.TemporaryDirectory() as tmp, cli.clear_errors():  # a bad --data or --source: its message alone
        name, path = ("given", args.data) if args.data else speed.prepare(Path(tmp), args.source)
        dataset = load_dataset(path)
    split = leave_one_out(dataset.sequences)
    max_len = RunConfig().model.max_len
    instances = split_instances(dataset, split, max_len=max_len, kind="prefixes")
    layouts = {"fixed_shapes": {"bounds": (), "length": max_len}, "chunks": {"bounds": CHUNK_BOUNDS}}
    report = {"dataset": name, "machine": speed.machine(), "worker_start": args.worker_start}
    for layout, pretrain_layout in layouts.items():
        report[f"pretrain_{layout}"] = timed(lambda rng: speed.pretrain_draws(instances, rng, pretrain_layout),
                                             args.repeats)
        finetune_layout = {"bounds": (), "fixed_shapes": True} if layout == "fixed_shapes" else {}
        report[f"finetune_{layout}"] = timed(
            lambda rng: finetune_batches(split.train, split.train, dataset.num_items, max_len, 256, rng, "padded",
                                         **finetune_layout), args.repeats)
    report["stacked_steps"] = [stacked_steps(instances, n, args.steps, max_len, args.worker_start)
                               for n in args.stacked_seeds]
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
