"""Where a training step's time goes: torch.profiler over a few steps; prints one JSON object.

    python benchmarks/profile_step.py --threads 1                 # pretraining step, as the study runs it
    python benchmarks/profile_step.py --what finetune --threads 1  # bce finetuning step, batch 256
    python benchmarks/profile_step.py --device cuda               # adds each op's GPU time
    python benchmarks/profile_step.py --data resources/beauty     # a prepared data set
    python benchmarks/profile_step.py --source DIR                # Beauty.txt and its attributes from DIR
    python benchmarks/profile_step.py --shapes                    # one row per op and input shapes

The step is benchmarks/speed.py's: dense heads, the `paper` preset's padded batches of 100
(finetuning: bce, batch 256), on Beauty (../shared/data/s3rec) or, when that is absent,
generated data of its size. `step_ms` is the mean wall time of --steps steps timed without the
profiler (after --warmup steps); `ops` are the operators with the most self time per step
while profiled (the profiler's own overhead inflates them a little), with their share of the
profiled self time. Nested ops (e.g. `aten::zeros` inside `aten::embedding_dense_backward`)
count where the time is spent, once.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import speed  # benchmarks/speed.py, beside this file
from s3rec import cli, runtime
from s3rec.data import leave_one_out, load_dataset


def profile_steps(step, batches: list, steps: int, warmup: int, device, top: int, shapes: bool = False) -> dict:
    """Time `steps` steps, then profile as many more (an epoch shorter than that is cycled)."""
    batches = [batches[i % len(batches)] for i in range(warmup + 2 * steps)]
    for batch in batches[:warmup]:
        step(batch)
    speed.synchronize(device)
    start = time.perf_counter()
    for batch in batches[warmup:warmup + steps]:
        step(batch)
    speed.synchronize(device)
    step_ms = (time.perf_counter() - start) / steps * 1e3
    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=shapes) as prof:
        for batch in batches[warmup + steps:warmup + 2 * steps]:
            step(batch)
        speed.synchronize(device)
    events = [e for e in prof.key_averages(group_by_input_shape=shapes) if e.self_cpu_time_total > 0 or (cuda and e.self_device_time_total > 0)]
    host_total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -(e.self_device_time_total if cuda else e.self_cpu_time_total))
    ops = []
    for e in events[:top]:
        op = {"op": e.key, "calls_per_step": round(e.count / steps, 2),
              "host_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
              "host_share": round(e.self_cpu_time_total / host_total, 4)}
        if shapes:
            op["input_shapes"] = str(e.input_shapes)
        if cuda:
            op["device_ms_per_step"] = round(e.self_device_time_total / 1e3 / steps, 3)
        ops.append(op)
    result = {"step_ms": round(step_ms, 3), "profiled_steps": steps,
              "profiled_host_ms_per_step": round(host_total / 1e3 / steps, 3), "ops": ops}
    if cuda:
        result["profiled_device_ms_per_step"] = round(sum(e.self_device_time_total for e in events) / 1e3 / steps, 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=["pretrain", "finetune"], default="pretrain")
    parser.add_argument("--data", type=Path, default=None, help="a prepared data set (default: Beauty or its size)")
    speed.add_source_argument(parser)
    parser.add_argument("--steps", type=cli.positive_int, default=30, help="steps timed, then as many profiled")
    parser.add_argument("--warmup", type=cli.integer_argument(0), default=10)
    parser.add_argument("--top", type=cli.positive_int, default=15, help="how many ops to list")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    parser.add_argument("--device", type=cli.device_argument, default="auto")
    parser.add_argument("--batching", default="padded", choices=["padded", "bucketed"])
    parser.add_argument("--shapes", action="store_true", help="split each op by its input shapes")
    args = parser.parse_args(argv)
    runtime.set_threads(args.threads)
    device = cli.device_argument_checked(parser, args.device)
    torch.manual_seed(0)
    with cli.clear_errors():  # a bad --data or --source: its message alone
        if args.data is None:
            with tempfile.TemporaryDirectory() as tmp:
                name, path = speed.prepare(Path(tmp), args.source)
                dataset = load_dataset(path)
        else:
            name, dataset = str(args.data), load_dataset(args.data)
    split = leave_one_out(dataset.sequences)
    if args.what == "pretrain":
        step, batches, _, _ = speed.pretrain_steps(dataset, split, "prefixes", device, args.batching)
    else:
        step, batches, _, _ = speed.finetune_steps(dataset, split, device, args.batching)
    report = {"dataset": name, "what": args.what, "batching": args.batching,
              **runtime.describe_execution(device), "machine": speed.machine(),
              **profile_steps(step, batches, args.steps, args.warmup, device, args.top, args.shapes)}
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
