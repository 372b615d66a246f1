"""Speed and memory benchmark: prints one JSON object.

Times, on Beauty (../shared/data/s3rec) or, when that is absent, on generated data of the
same size: one pretraining epoch (prefix instances, batch 100; and one-instance-per-user
`sequences`), one finetuning epoch (batch 256), one full-ranking and one sampled evaluation
pass over all users; the peak resident memory; and the achieved GFLOP/s of the pretraining
step against a fp32 matmul peak measured in the same run.

    python benchmarks/speed.py                      # whole epochs
    python benchmarks/speed.py --batches 200        # time 200 batches and extrapolate (said in the output)
    python benchmarks/speed.py --device cuda        # the same on a GPU, plus its name and peak memory
    python benchmarks/speed.py --source DIR         # Beauty.txt and its attributes from DIR
    python benchmarks/speed.py --compile reduce-overhead   # the encoder through torch.compile
    python benchmarks/speed.py --fixed-shapes --compile reduce-overhead   # a whole pretraining step
    python benchmarks/speed.py --fixed-shapes --compile cuda-graph   # each step replayed as a CUDA graph
    python benchmarks/speed.py --fixed-shapes --compile cuda-graph-inductor   # its loss compiled first (an experiment)
    python benchmarks/speed.py --eval-batch-sizes 256 1024 4096   # the evaluation passes per users-per-batch

`--compile MODE` runs the encoder through torch.compile (dynamic shapes; with
`reduce-overhead`, as CUDA graphs): a measurement of whether compiling pays, not how runs
train. Its warm-up (compiling, recording graphs) is reported apart from the timed batches.
`--fixed-shapes` gives every pretraining step the same shapes: one batch of 100 padded to
max_len, losses at every position, weighted (PretrainModel.grid_forward). With `--compile`,
the whole loss, forward and backward, is then one graph (on a GPU, with reduce-overhead,
replayed as CUDA graphs) instead of the encoder alone; `--compile cuda-graph` records the whole
step, Adam included, as a CUDA graph without torch.compile (s3rec/cuda_graphs.py; CUDA only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from s3rec import cli, runs, runtime
from s3rec.config import RunConfig
from s3rec.authors_data import read_s3rec
from s3rec.data import Prepared, leave_one_out, load_dataset, write_prepared
from s3rec.encoder import Encoder
from s3rec.evaluation import full_ranking_ranks, sample_negatives, sampled_ranks
from s3rec.finetuning import iterate_batches as finetune_batches
from s3rec.finetuning import score_function
from s3rec.pretrain_batches import split_instances
from s3rec.pretrain_batches import iterate_batches as pretrain_batches
from s3rec.pretraining import PretrainModel
from s3rec.training import adam

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "s3rec"
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs", "cuda-graph",
                 "cuda-graph-inductor")
PRETRAIN_BATCH = 100  # the paper preset's pretraining batch
GRAPH_MODES = ("cuda-graph", "cuda-graph-inductor")  # each step replayed as a CUDA graph (--fixed-shapes only)


def prepare(workdir: Path, source: Path | None = None) -> tuple[str, Path]:
    """Beauty prepared under `workdir`, from `source` (a folder holding the authors' Beauty.txt
    and Beauty_item2attributes.json; an error if they are not there), else from ../shared when
    present, else generated data of Beauty's size."""
    out = workdir / "data"
    if source is not None:
        for name in ("Beauty.txt", "Beauty_item2attributes.json"):
            if not (Path(source) / name).is_file():
                raise FileNotFoundError(f"--source {source}: no {name}; expected Beauty.txt and "
                                        "Beauty_item2attributes.json there")
    folder = Path(source) if source is not None else SHARED
    if (folder / "Beauty.txt").exists():
        write_prepared(read_s3rec(folder / "Beauty.txt", folder / "Beauty_item2attributes.json"), out)
        return "beauty", out
    write_prepared(beauty_sized(seed=0), out)
    return "generated, Beauty's size", out


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    """--source, for every benchmark that prepares Beauty with `prepare`."""
    parser.add_argument("--source", type=Path, default=None,
                        help="folder with the authors' Beauty.txt and Beauty_item2attributes.json (default: ../shared's)")


def beauty_sized(seed: int) -> Prepared:
    """Random data of Beauty's size and shape (22,363 users, 12,101 items, 637 attributes,
    lengths >= 5 with mean ~8.9, Zipf popularity, ~3.7 attributes per item). Speed depends on
    these sizes, not on the planted structure of s3rec.synthetic (capped at 5,000 items)."""
    rng = np.random.default_rng(seed)
    users, items, attributes = 22363, 12101, 637
    lengths = np.minimum(5 + rng.geometric(1 / 4.9, size=users) - 1, 204)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    sequences = [rng.choice(items, size=n, replace=False, p=popularity).astype(np.int32) + 1 for n in lengths]
    item_attributes = [np.zeros(0, np.int32)] + [
        np.unique(rng.integers(1, attributes + 1, size=rng.integers(2, 6))).astype(np.int32) for _ in range(items)]
    return Prepared(format="generated", user_ids=np.arange(1, users + 1, dtype=np.int32), sequences=sequences,
                    item_attributes=item_attributes, num_attributes=attributes)


def synchronize(device) -> None:
    """Wait for the device's queued work: a CUDA step returns before the GPU has done it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def compile_encoder(encoder: Encoder, mode: str) -> None:
    """Route the encoder's two entry points through torch.compile (`mode` "none": leave it).
    Dynamic shapes, because a batch's length varies; the heads and losses stay eager."""
    if mode == "none":
        return
    for name in ("forward", "forward_ends"):
        setattr(encoder, name, torch.compile(getattr(encoder, name), mode=mode, dynamic=True))


def inductor_losses(losses_of):
    """An experiment, not a run mode: a GraphedSteps loss function (grid_forward with its
    attribute table) compiled by inductor (fused kernels, no CUDA graphs of its own), for
    GraphedSteps to record: fewer, larger kernels in the replayed graph,
    since a graphed step's time goes to its ~500 kernels, not to their arithmetic
    (benchmarks/gpu/h200-2026-12-04). Inductor draws dropout masks its own way (the same
    distribution, other numbers): tests/test_cuda.py compares the losses with dropout off."""
    return torch.compile(losses_of, fullgraph=True, dynamic=False)


def new_step(compile_mode: str) -> None:
    """Tell torch a new training step begins: CUDA graphs (reduce-overhead) may then reuse the
    previous step's output memory. Nothing to do when not compiling."""
    if compile_mode != "none":
        torch.compiler.cudagraph_mark_step_begin()


def timed_epoch(step, batches, limit: int | None, device="cpu", ready=lambda: None, warmup: int = 3) -> dict:
    """Run `step` over the batches (all, or the first `limit`) and extrapolate when partial.
    The last `warmup` batches run first, untimed (first calls allocate, pick kernels, compile).
    `ready()` is called between the warm-up and the timed part (benchmarks/jobs_per_device.py waits there)."""
    total = len(batches)
    used = batches[:limit] if limit else batches
    start = time.perf_counter()
    for batch in batches[-warmup:]:
        step(batch)
    synchronize(device)
    warmup_seconds = time.perf_counter() - start
    ready()
    start = time.perf_counter()
    for batch in used:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"batches": total, "timed_batches": len(used), "seconds_timed": round(seconds, 3),
            "seconds_per_epoch": round(seconds * total / len(used), 2), "extrapolated": len(used) < total,
            "warmup_batches": min(warmup, total), "warmup_seconds": round(warmup_seconds, 2)}


def pretrain_steps(dataset, split, kind: str, device, batching: str, compile_mode: str = "none",
                   fixed_shapes: bool = False) -> tuple:
    """(step, an epoch's batches, instances, seconds to build the batches): dense heads, the
    `paper` preset's batches of 100, steps as runs.pretrain makes them (runs.pretraining_steps;
    with `fixed_shapes`, as with RunConfig.compile: padded to max_len, one chunk a step, losses
    by grid_forward, compiled whole in `compile_mode`, or not with "none"; "cuda-graph": each
    step replayed as a CUDA graph)."""
    instances = split_instances(dataset, split, max_len=RunConfig().model.max_len, kind=kind)
    train_step, layout = pretraining_step(dataset, instances, kind, device, compile_mode, fixed_shapes)
    start = time.perf_counter()
    batches = list(pretrain_draws(instances, np.random.default_rng(0), layout, batching))
    build_seconds = time.perf_counter() - start

    def step(batch):
        if not fixed_shapes:  # fixed-shape steps mark their own
            new_step(compile_mode)
        train_step([chunk.to(device) for chunk in batch])

    return step, batches, instances, build_seconds


def pretraining_step(dataset, instances, kind: str, device, compile_mode: str = "none",
                     fixed_shapes: bool = False) -> tuple:
    """(train_step, layout) of a new dense-head model of the `paper` preset, its step as
    pretrain_steps says (from torch's current random state)."""
    run_mode = "cuda-graph" if compile_mode == "cuda-graph-inductor" else compile_mode
    model = paper_model(dataset, kind, device, run_mode if fixed_shapes else "none")
    optimizer = adam(model.parameters(), lr=1e-3, weight_decay=0.0)
    train_step, layout = runs.pretraining_steps(model, optimizer, instances, model.cfg, device, fixed_shapes)
    if compile_mode == "cuda-graph-inductor":
        train_step.losses_of = inductor_losses(train_step.losses_of)
    if not fixed_shapes:
        compile_encoder(model.encoder, compile_mode)
    return train_step, layout


def paper_model(dataset, kind: str, device, compile_mode: str = "none") -> PretrainModel:
    """A new dense-head model of the `paper` preset (its config: model.cfg), from torch's
    current random state."""
    cfg = RunConfig.from_dict({"model": {"rank": None}, "pretrain": {"instances": kind, "preset": "paper"},
                               "compile": compile_mode})
    return PretrainModel(cfg, dataset.num_items, dataset.num_attributes).to(device)


def pretrain_draws(instances, rng: np.random.Generator, layout: dict, batching: str = "padded"):
    """An epoch of the paper preset's pretraining batches (100, mask probability 0.2), drawn lazily."""
    return pretrain_batches(instances, PRETRAIN_BATCH, rng, mask_prob=0.2, batching=batching, **layout)


def pretrain_benchmark(dataset, split, kind: str, limit: int | None, device, batching: str,
                       count_flops: bool = True, ready=lambda: None, compile_mode: str = "none",
                       fixed_shapes: bool = False) -> dict:
    step, batches, instances, build_seconds = pretrain_steps(dataset, split, kind, device, batching, compile_mode,
                                                             fixed_shapes)
    result = timed_epoch(step, batches, limit, device, ready, warmup_batches(compile_mode))
    result["seconds_per_epoch"] = round(result["seconds_per_epoch"] + build_seconds, 2)
    result.update(instances=len(instances), batching=batching, fixed_shapes=fixed_shapes,
                  batch_construction_seconds=round(build_seconds, 2))
    if kind == "prefixes" and count_flops and compile_mode == "none":  # the counter does not see into compiled code
        # on as many batches as were timed (200 at most): --batches 5 ran 400 more steps here
        result["gflops"] = achieved_gflops(step, batches[:min(limit or 200, 200)], device)
    return result


def warmup_batches(compile_mode: str) -> int:
    """Untimed batches first: 3, or, when compiling, 100, so that most batch lengths have been
    compiled (and, with CUDA graphs, recorded) before the clock starts. "cuda-graph" steps have
    two shapes, both among the last 3 batches (the last one is short)."""
    return 3 if compile_mode in ("none", *GRAPH_MODES) else 100


def achieved_gflops(step, batches, device) -> dict:
    """FLOPs of forward + backward counted by torch on these batches, over their timed run."""
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:  # a second pass: counting slows the ops down
        for batch in batches:
            step(batch)
    # The counter sees matmuls and attention, the bulk of the arithmetic; elementwise ops are not counted.
    flops = counter.get_total_flops()
    return {"pretrain_step_gflop_per_s": round(flops / seconds / 1e9, 2),
            "gflop_per_batch": round(flops / len(batches) / 1e9, 3), "batches": len(batches)}


def matmul_peak_gflops(device, size: int = 1024, repeats: int = 20) -> float:
    """fp32 matmul throughput of the device (on a GPU with larger matrices, to fill it)."""
    if torch.device(device).type == "cuda":
        size, repeats = 8192, 50
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return round(2 * size**3 * repeats / (time.perf_counter() - start) / 1e9, 2)


def finetune_steps(dataset, split, device, batching: str, compile_mode: str = "none") -> tuple:
    """(step, an epoch's batches, the encoder, seconds to build the batches): bce finetuning in
    batches of 256, the steps as runs.finetune makes them (runs.finetuning_steps; GRAPH_MODES:
    fixed shapes, replayed as CUDA graphs), or with the encoder through torch.compile in
    `compile_mode`."""
    graphed = compile_mode in GRAPH_MODES
    cfg = RunConfig.from_dict({"finetune": {"loss": "bce"}, "compile": "cuda-graph" if graphed else "none"})
    encoder = Encoder(cfg.model, dataset.num_items).to(device)
    if not graphed:
        compile_encoder(encoder, compile_mode)
    optimizer = adam(encoder.parameters(), lr=1e-3, weight_decay=0.0)
    train_step, layout = runs.finetuning_steps(encoder, optimizer, cfg, device)
    start = time.perf_counter()
    batches = list(finetune_batches(split.train, split.train, dataset.num_items, 50, 256, np.random.default_rng(0),
                                    batching, **layout))
    build_seconds = time.perf_counter() - start

    def step(batch):
        if not graphed:
            new_step(compile_mode)
        train_step([chunk.to(device) for chunk in batch])

    if graphed:  # record every shape of the epoch before the clock starts (a few target-slot counts)
        for batch in {train_step.shapes_of(chunk): batch for batch in batches for chunk in batch}.values():
            step(batch)
    return step, batches, encoder, build_seconds


def finetune_benchmark(dataset, split, limit: int | None, device, batching: str, compile_mode: str = "none",
                       eval_batch_sizes: tuple[int, ...] = ()) -> dict:
    """A finetuning epoch (its batch construction included, as in the pretraining epoch and in a
    run, which draws each batch before its step), then a full-ranking and a sampled pass, in
    batches of eval.batch_size users; then, per size in `eval_batch_sizes`, both passes again
    (eval_by_batch_size)."""
    step, batches, encoder, build_seconds = finetune_steps(dataset, split, device, batching, compile_mode)
    result = timed_epoch(step, batches, limit, device, warmup=warmup_batches(compile_mode))
    result["seconds_per_epoch"] = round(result["seconds_per_epoch"] + build_seconds, 2)
    result["batch_construction_seconds"] = round(build_seconds, 2)
    encoder.eval()
    score = score_function(encoder, device)
    negatives = sample_negatives(dataset.sequences, dataset.num_items, n=99, seed=0)
    seconds = {}
    for name, evaluate in evaluation_passes(score, dataset, split, negatives).items():
        if compile_mode != "none":
            evaluate()  # untimed: compiles (and records) the evaluation's shapes
        start = time.perf_counter()
        evaluate()  # returns ranks on the host: the device has finished
        seconds[name] = round(time.perf_counter() - start, 3)
    report = {"finetune_epoch": result, "full_ranking_eval_seconds": seconds["full"],
              "sampled_eval_seconds": seconds["sampled"], "users": len(split.train)}
    if eval_batch_sizes:
        report["eval_by_batch_size"] = eval_by_batch_size(score, dataset, split, negatives, eval_batch_sizes)
    return report


def evaluation_passes(score, dataset, split, negatives=None, batch_size: int = RunConfig().eval.batch_size) -> dict:
    """{"full": pass, "sampled": pass}: each a call that ranks every user's validation target
    (the sampled one only with `negatives`) and returns the ranks on the host."""
    passes = {"full": lambda: full_ranking_ranks(score, split.train, split.valid_target, dataset.num_items,
                                                 exclude_history=True, batch_size=batch_size)}
    if negatives is not None:
        passes["sampled"] = lambda: sampled_ranks(score, split.train, split.valid_target, negatives,
                                                  batch_size=batch_size)
    return passes


def eval_by_batch_size(score, dataset, split, negatives, sizes) -> dict:
    """Per users-per-batch size: the full-ranking and sampled passes' seconds (each after one
    untimed pass of that size) and how many users' full-ranking rank differs from the first
    size's (another padded length rounds differently, on a CPU too: a near-tie may flip, 2 of
    22,363 Beauty ranks between 4,096 and 512 users per batch on 2026-12-05)."""
    report, reference = {}, None
    for size in sizes:
        row = {}
        for name, evaluate in evaluation_passes(score, dataset, split, negatives, size).items():
            evaluate()
            start = time.perf_counter()
            ranks = evaluate()
            row[f"{name}_seconds"] = round(time.perf_counter() - start, 3)
            if name == "full":
                if reference is None:  # the first size's ranks
                    reference = ranks
                row["full_ranks_differing"] = int((ranks != reference).sum())
        report[str(size)] = row
    return report


def finetune_job_epoch(dataset, split, limit: int | None, device, batching: str, compile_mode: str = "none",
                       ready=lambda: None) -> dict:
    """A finetuning run's epoch as benchmarks/jobs_per_device.py times it in N processes at once:
    the training pass (its batch construction added, as in finetune_benchmark) and the
    full-ranking validation that follows every epoch of a run. Both run once before `ready()`
    (allocating, and recording or compiling where asked)."""
    step, batches, encoder, build_seconds = finetune_steps(dataset, split, device, batching, compile_mode)
    full_ranking = evaluation_passes(score_function(encoder, device), dataset, split)["full"]

    def validate() -> float:
        start = time.perf_counter()
        encoder.eval()
        full_ranking()  # ranks on the host: the device has finished
        encoder.train()
        return time.perf_counter() - start

    validate()
    result = timed_epoch(step, batches, limit, device, ready, warmup_batches(compile_mode))
    train_seconds = result["seconds_per_epoch"] + build_seconds
    valid_seconds = validate()
    return result | {"train_seconds": round(train_seconds, 2), "valid_seconds": round(valid_seconds, 3),
                     "seconds_per_epoch": round(train_seconds + valid_seconds, 2),
                     "batch_construction_seconds": round(build_seconds, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=cli.positive_int, default=None, help="time only this many batches per epoch")
    parser.add_argument("--threads", type=cli.positive_int, default=None)
    parser.add_argument("--device", type=cli.device_argument, default="auto")
    parser.add_argument("--batching", default="padded", choices=["padded", "bucketed"],
                        help="training batch layout (s3rec/batching.py); padded is the finetuning default")
    parser.add_argument("--skip-sequences", action="store_true", help="skip the instances=sequences epoch")
    add_source_argument(parser)
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="run the encoder through torch.compile in this mode (default: eager); with "
                             "--fixed-shapes the whole loss, or, cuda-graph (only with it), the whole step "
                             "replayed as a CUDA graph")
    parser.add_argument("--eval-batch-sizes", type=cli.positive_int, nargs="+", default=[], metavar="N",
                        help="also time both evaluation passes in batches of each N users (eval_by_batch_size)")
    parser.add_argument("--fixed-shapes", action="store_true",
                        help="pretraining steps of one shape (batches padded to max_len, grid_forward); "
                             "with --compile, the whole loss is compiled")
    args = parser.parse_args(argv)
    if args.compile in GRAPH_MODES and not args.fixed_shapes:
        parser.error(f"--compile {args.compile} records fixed-shape steps: add --fixed-shapes")
    runtime.set_threads(args.threads)
    device = cli.device_argument_checked(parser, args.device, args.compile)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp, cli.clear_errors():  # a bad --source: its message alone
        name, path = prepare(Path(tmp), args.source)
        dataset = load_dataset(path)
    split = leave_one_out(dataset.sequences)
    report = {"dataset": name, **runtime.describe_execution(device), "machine": machine(),
              "compile": args.compile, "matmul_peak_gflop_per_s": matmul_peak_gflops(device)}
    report["pretrain_prefixes"] = pretrain_benchmark(dataset, split, "prefixes", args.batches, device, args.batching,
                                                     compile_mode=args.compile, fixed_shapes=args.fixed_shapes)
    if not args.skip_sequences:
        report["pretrain_sequences"] = pretrain_benchmark(dataset, split, "sequences", args.batches, device,
                                                          args.batching, compile_mode=args.compile,
                                                          fixed_shapes=args.fixed_shapes)
    report.update(finetune_benchmark(dataset, split, args.batches, device, args.batching, args.compile,
                                     tuple(args.eval_batch_sizes)))
    if "gflops" in report["pretrain_prefixes"]:
        gflops = report["pretrain_prefixes"]["gflops"]["pretrain_step_gflop_per_s"]
        report["pretrain_fraction_of_matmul_peak"] = round(gflops / report["matmul_peak_gflop_per_s"], 3)
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if device.type == "cuda":
        report["peak_gpu_mib"] = runtime.peak_device_memory_mib(device)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


def machine() -> dict:
    return {"cpu": runtime.cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}


if __name__ == "__main__":
    sys.exit(main())
