"""Several training processes on one device: epochs per hour in total, per N.

Starts N worker processes that each build Beauty's pretraining batches (prefix instances,
batch 100) and a model on the device, warm up, wait until all N are ready, then time the same
batches at once. With `--kind finetune` each times a finetuning epoch instead (bce, batch 256)
and the full-ranking validation a run does after it (speed.finetune_job_epoch). Prints one JSON
object: per N, each worker's seconds per epoch and the total epochs per hour (N x 3600 / the
slowest worker's epoch), against N = 1.

    python benchmarks/jobs_per_device.py --device cuda --jobs 1 2 4 8 --batches 300
    python benchmarks/jobs_per_device.py --device cuda --jobs 1 4 --fixed-shapes --compile cuda-graph
    python benchmarks/jobs_per_device.py --device cuda --jobs 1 4 8 --kind finetune --compile cuda-graph
    python benchmarks/jobs_per_device.py --device cpu --threads 1 --jobs 1 2 --batches 100

On a GPU this answers how many training jobs to put on one card (the `gpu` slots of the
workflow's profiles, README "On a GPU"). Data: Beauty from --source, else from
../shared/data/s3rec, else generated data of Beauty's size (speed.py).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (a sibling script, not a package)

from s3rec import cli, runtime  # noqa: E402
from s3rec.data import leave_one_out, load_dataset  # noqa: E402


def worker(args) -> int:
    """One training process: prepare, signal ready, wait for `go`, time, print JSON."""
    runtime.set_threads(args.threads)
    device = runtime.choose_device(args.device)
    dataset = load_dataset(Path(args.data))
    split = leave_one_out(dataset.sequences)
    workdir = Path(args.workdir)

    def ready():
        (workdir / f"ready.{args.worker}").touch()
        while not (workdir / "go").exists():
            time.sleep(0.01)

    if args.kind == "finetune":
        result = speed.finetune_job_epoch(dataset, split, args.batches, device, args.batching, args.compile, ready)
    else:
        result = speed.pretrain_benchmark(dataset, split, "prefixes", args.batches, device, args.batching,
                                          count_flops=False, ready=ready, compile_mode=args.compile,
                                          fixed_shapes=args.fixed_shapes)
    result["peak_gpu_mib"] = runtime.peak_device_memory_mib(device)
    json.dump(result, sys.stdout)
    return 0


def run_jobs(args, jobs: int, data: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        command = [sys.executable, __file__, "--worker", "0", "--data", str(data), "--workdir", tmp,
                   "--device", args.device, "--batches", str(args.batches), "--batching", args.batching,
                   "--compile", args.compile, "--kind", args.kind, *(["--fixed-shapes"] if args.fixed_shapes else [])]
        if args.threads:
            command += ["--threads", str(args.threads)]
        processes = []
        for index in range(jobs):
            command[3] = str(index)
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        while len(list(workdir.glob("ready.*"))) < jobs:
            if any(p.poll() not in (None, 0) for p in processes):
                for p in processes:  # the others would wait for `go` for ever, holding the device
                    p.kill()
                raise SystemExit("a worker failed before it was ready (its error is above)")
            time.sleep(0.05)
        (workdir / "go").touch()
        outputs = [p.communicate()[0] for p in processes]
        if any(p.returncode for p in processes):
            raise SystemExit("a worker failed (its error is above)")
    results = [json.loads(out) for out in outputs]
    slowest = max(r["seconds_per_epoch"] for r in results)
    parts = {key: [r[key] for r in results] for key in ("train_seconds", "valid_seconds") if key in results[0]}
    return {"jobs": jobs, "seconds_per_epoch": [r["seconds_per_epoch"] for r in results], **parts,
            "epochs_per_hour": round(jobs * 3600 / slowest, 1),
            "peak_gpu_mib_per_job": results[0].get("peak_gpu_mib"), "extrapolated": results[0]["extrapolated"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=cli.positive_int, nargs="+", default=[1, 2, 4], help="numbers of concurrent processes")
    parser.add_argument("--kind", default="pretrain", choices=["pretrain", "finetune"],
                        help="what each process times: a pretraining epoch, or a finetuning epoch and its validation")
    parser.add_argument("--device", type=cli.device_argument, default="auto")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch threads per process")
    parser.add_argument("--batches", type=cli.positive_int, default=300, help="timed batches per process (extrapolated to an epoch)")
    parser.add_argument("--batching", default="padded", choices=["padded", "bucketed"])
    parser.add_argument("--fixed-shapes", action="store_true", help="the steps speed.py --fixed-shapes times")
    parser.add_argument("--compile", default="none", choices=speed.COMPILE_MODES,
                        help="as speed.py --compile (pretraining: cuda-graph only with --fixed-shapes; "
                             "finetuning: cuda-graph records its steps as a run's do)")
    speed.add_source_argument(parser)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args)
    if any(n < 1 for n in args.jobs):
        parser.error("--jobs: every number of processes must be at least 1")
    if args.kind == "finetune" and args.fixed_shapes:
        parser.error("--fixed-shapes: pretraining steps only (finetuning under cuda-graph fixes its own shapes)")
    if args.kind == "pretrain" and args.compile in speed.GRAPH_MODES and not args.fixed_shapes:
        parser.error(f"--compile {args.compile} records fixed-shape steps: add --fixed-shapes")
    runtime.set_threads(args.threads)  # so that the report's "threads" is each worker's
    device = cli.device_argument_checked(parser, args.device, args.compile)
    args.device = str(device)
    with tempfile.TemporaryDirectory() as tmp:
        with cli.clear_errors():  # a bad --source: its message alone
            name, data = speed.prepare(Path(tmp), args.source)
        runs = [run_jobs(args, jobs, data) for jobs in args.jobs]
    single = next((r["epochs_per_hour"] for r in runs if r["jobs"] == 1), None)
    for r in runs:
        r["speedup_over_one_job"] = round(r["epochs_per_hour"] / single, 2) if single else None
    report = {"dataset": name, **runtime.describe_execution(device), "machine": speed.machine(),
              "kind": args.kind, "batching": args.batching, "fixed_shapes": args.fixed_shapes, "compile": args.compile,
              "timed_batches_per_job": args.batches, "runs": runs}
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
