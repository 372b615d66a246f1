"""Several seeds of one variant pretrained as one model: weights stacked, losses by vmap.

On a GPU a pretraining step is paced by its number of kernels, not their size (an H200 ran a
graphed Beauty step in 2.9 ms, the card mostly idle; benchmarks/gpu/). Stacking N runs' weights
along a first axis and computing their losses with torch.func.vmap gives one step with one
run's number of kernels, each N times wider; benchmarks/runs_per_process.py --mode stacked
measures what that buys. Adam is elementwise, so one Adam over the stacked weights is the N
runs' own Adams, and the summed loss's gradient with respect to run i's weights is run i's own
gradient (tests/test_stacked.py).

What a stacked run shares with the same seed trained alone (runs.pretrain): its initial
weights, its batch, mask, negative and segment draws (each seed keeps its own numpy stream,
runtime.epoch_generators; a lone run draws so when it takes one chunk a step, as on a GPU or
under a fixed-shape mode, not in length chunks as on a CPU with compile none), its optimizer
and the losses of a batch. What differs: the dropout
draws (one torch stream for the group, vmap's randomness="different": the same distribution,
other samples) and the step's form (batches padded to max_len, losses by grid_forward, as under
any compile mode). So seed s trained in a group is another sample of the same training
distribution, not the run seed s alone would be; its files say which group it was in
(`stacked`: the group's seeds and seconds). Resumable as any run: the group's checkpoint holds
every seed's state. On a GPU each seed's batches are drawn in a worker process of its own
(seed_steps): drawn in line, N seeds' batches would take the host longer than the GPU's step.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import multiprocessing
import re
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import torch
from torch.func import functional_call, stack_module_state, vmap

from s3rec import files, runs, runtime
from s3rec.config import STACKED_COMPILE_MODES, PretrainConfig, RunConfig
from s3rec.cuda_graphs import GRID_INPUTS, GraphedSteps
from s3rec.encoder import SelfAttention
from s3rec.pretrain_batches import Batch, PretrainInstances, item_attribute_table
from s3rec.pretrain_batches import iterate_batches as pretrain_batches
from s3rec.pretraining import LOSS_NAMES, PretrainModel
from s3rec.stalls import warn_if_segment_head_stalled
from s3rec.training import adam, remove_earlier_outputs, resumed_processes, run_epochs

log = logging.getLogger("s3rec")

LOSSES = ("loss", *LOSS_NAMES)
GROUP_CHECKPOINT = "pretrain_stacked.state.pt"  # in the first seed's folder, with the group's history:
GROUP_HISTORY = "pretrain_stacked_history.csv"
DRAW_PREFETCH = 8  # steps a seed's draw worker may run ahead


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
    def of(cls, batches: list[Batch | torch.Tensor]) -> "StackedBatch":
        """N runs' batches, each a Batch or its pack(), as one: a single stack of the packs."""
        packs = [b if isinstance(b, torch.Tensor) else pack(b) for b in batches]
        return cls(**dict(zip(GRID_INPUTS, torch.stack(packs, dim=1).unbind(0))))

    def fields(self) -> dict[str, torch.Tensor]:
        """The fields by name, the tensors themselves (dataclasses.asdict would deep-copy each one)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def to(self, device) -> "StackedBatch":
        return StackedBatch(**runtime.to_device(self.fields(), device))


def pack(batch: Batch) -> torch.Tensor:
    """The (B, L) fields grid_forward reads (GRID_INPUTS) as one (6, B, L) tensor."""
    return torch.stack([getattr(batch, name) for name in GRID_INPUTS])


class SeedBatches(torch.utils.data.IterableDataset):
    """One seed's epoch of fixed-shape batches (one chunk a step, padded to `length`), drawn
    from its own `rng` as runs.pretrain draws them, each packed (pack()): iterable in this
    process or, through a DataLoader, in a worker process (which starts from a copy of `rng`:
    the same draws). Packed, because a worker hands each tensor over through shared memory
    and a file descriptor of its own: the twelve tensors of a Batch cost the receiving process,
    the one that drives the GPU, several times the CPU time of drawing in line, one tensor
    about as much (benchmarks/README.md, batch_drawing.py --stacked-seeds)."""

    def __init__(self, instances: PretrainInstances, cfg: PretrainConfig, rng: np.random.Generator, length: int):
        super().__init__()
        self.instances, self.cfg, self.rng, self.length = instances, cfg, rng, length

    def __iter__(self) -> Iterator[torch.Tensor]:
        p = self.cfg
        for (chunk,) in pretrain_batches(self.instances, p.batch_size, self.rng, mask_prob=p.mask_prob,
                                         batching=p.batching, bounds=(), length=self.length):
            yield pack(chunk)


# A worker is a fork of this process, with the instances and rng as they are. Python 3.14 makes
# forkserver the default on Linux: its workers import torch afresh and are sent the instances
# pickled, every epoch (a new loader an epoch). Beauty, 4 seeds, on the 2-core reference machine
# (benchmarks/batch_drawing.py --stacked-seeds 4 --worker-start): the first step came after 5.3 s
# with forkserver, 0.12 s forked; a Beauty epoch's target on a GPU is 2-4 s. The worker only draws numpy
# batches and packs CPU tensors, never CUDA, which a forked child must not touch.
WORKER_START = "fork" if "fork" in multiprocessing.get_all_start_methods() else None


def seed_steps(instances: PretrainInstances, cfg: PretrainConfig, rngs: list[np.random.Generator], length: int,
               workers: bool, worker_start: str | None = WORKER_START) -> Iterator[tuple[torch.Tensor, ...]]:
    """An epoch's steps: each a tuple of every seed's packed batch. With `workers`, each seed's batches
    are drawn in a worker process of its own, DRAW_PREFETCH steps ahead, so that N seeds' draws
    (about 0.8 ms a Beauty batch) run side by side while the GPU trains, instead of one after
    another on the one thread that also drives the GPU; `worker_start` says how they start
    (another than WORKER_START: benchmarks/batch_drawing.py --worker-start)."""
    seeds = [SeedBatches(instances, cfg, rng, length) for rng in rngs]
    if workers:  # a generator of its own: the loader's seed must not be drawn from the global one (dropout's)
        seeds = [torch.utils.data.DataLoader(seed, batch_size=None, num_workers=1, prefetch_factor=DRAW_PREFETCH,
                                             generator=torch.Generator(), multiprocessing_context=worker_start)
                 for seed in seeds]
    return zip(*seeds, strict=True)


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
    losses, whose gradient with respect to run i's weights is run i's own gradient;
    "per_run" holds each run's losses, (len(LOSSES), N): row j is loss LOSSES[j] (stacked inside
    the step, so that under a CUDA graph the epoch's sums take one addition a step)."""

    def __init__(self, models: list[PretrainModel], table: torch.Tensor):
        super().__init__()
        weights, buffers = stack_module_state(models)
        if buffers:
            raise ValueError(f"StackedRuns stacks parameters only; the model has buffers {list(buffers)}")
        self.names = list(weights)
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(w.detach()) for w in weights.values())
        # not a submodule: it lends functional_call its code, not its (meta) parameters
        self.__dict__["template"] = GridLoss(copy.deepcopy(models[0]).to("meta"), table).train(models[0].training)
        self.empty = torch.zeros(0, dtype=torch.long, device=table.device)
        self.attention_spelled_out = False
        self.vmap_fallbacks: list[str] = []  # prepare()'s finding

    def train(self, mode: bool = True) -> "StackedRuns":
        self.template.train(mode)  # dropout is the template's
        return super().train(mode)

    def run_losses(self, weights: tuple[torch.Tensor, ...], fields: dict[str, torch.Tensor]) -> dict:
        """One run's losses (inside vmap): its weights and its batch's (B, L) fields."""
        named = {f"model.{name}": weight for name, weight in zip(self.names, weights)}
        return functional_call(self.template, named, (grid_batch(fields, self.empty),))

    def losses(self, batch: StackedBatch) -> dict[str, torch.Tensor]:
        per_run = vmap(self.run_losses, randomness="different")(tuple(self.weights), batch.fields())
        return {"loss": per_run["loss"].sum(), "per_run": torch.stack([per_run[name] for name in LOSSES])}

    def run_state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Run `index`'s weights as its PretrainModel's state_dict."""
        return {name: weight[index].detach().clone() for name, weight in zip(self.names, self.weights)}

    def prepare(self, batch: StackedBatch) -> list[str]:
        """Probe a stacked forward and backward on `batch` (weights and random state left as they
        are) and return the ops vmap could only run once per run (torch warns of each: slower,
        the same values). The fused attention with dropout may have no vmap rule at all (an
        error): then the attention is spelled out (attention_spelled_out) and probed again."""
        try:
            self.vmap_fallbacks = self.probe(batch)
            return self.vmap_fallbacks
        except (RuntimeError, NotImplementedError) as error:
            # out of memory (too many seeds for the card) or a CUDA fault is no missing vmap rule:
            # spelling the attention out would only need more memory, under a false diagnosis
            if self.attention_spelled_out or isinstance(error, torch.OutOfMemoryError) or "CUDA" in str(error):
                raise
            log.warning("stacked runs: the attention failed under vmap (%s); spelled out instead (the same "
                        "distribution)", str(error).splitlines()[0])
            self.attention_spelled_out = True
            for module in self.template.modules():
                if isinstance(module, SelfAttention):
                    module.attend = module.attend_spelled_out
            self.vmap_fallbacks = self.probe(batch)
            return self.vmap_fallbacks

    def probe(self, batch: StackedBatch) -> list[str]:
        """The ops that vmap ran once per run in a stacked forward and backward (no weight changes;
        the random state put back, so that a probed run draws what an unprobed one draws)."""
        devices = [batch.items.device] if batch.items.is_cuda else []
        with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=devices):
            warnings.simplefilter("always")
            torch.autograd.grad(self.losses(batch)["loss"], list(self.parameters()))
        return sorted({match.group(1) for w in caught
                       if (match := re.search(r"batching rule for (\S+?)\.? ", str(w.message)))})


def stacked_steps(stacked: StackedRuns, optimizer: torch.optim.Optimizer, first: StackedBatch, compile: str):
    """train_step([stacked batch]) -> losses, having updated every run: prepared on the first
    batch, then eager or (compile cuda-graph) replayed as a CUDA graph."""
    fallbacks = stacked.prepare(first)
    if fallbacks:
        log.warning("stacked runs: vmap runs %s once per run (slower; the same values)", ", ".join(fallbacks))
    if compile == "cuda-graph":
        runs.check_cuda_graphs(first.items.device)
        return GraphedSteps(stacked, optimizer, stacked.losses, GRID_INPUTS)
    return runs.optimizer_steps(lambda chunks: stacked.losses(chunks[0]), optimizer)


def pretrain_stacked(data_dir: Path, out_dirs: list[Path], cfg: RunConfig, variant: str, seeds: list[int],
                     stop_after: int | None = None, draw_workers: bool | None = None,
                     check_evaluation: bool = True) -> list[dict] | None:
    """Pretrain `seeds` of one variant as one stacked model; each seed's pretrain.pt,
    pretrain_history.csv and pretrain_run.json in its out_dir, as runs.pretrain writes them
    (plus `stacked`). None while epochs are left (stop_after). `draw_workers`: each seed's
    batches drawn in a worker process (seed_steps; the same draws); None = on a GPU only (on a
    CPU the workers would take cores from the training)."""
    seeds, out_dirs = tuple(seeds), [Path(d) for d in out_dirs]
    # resolved: "st/A" and "/abs/st/A" are one folder, where one seed's files would overwrite another's
    folders = {d.resolve() for d in out_dirs}
    if len(seeds) != len(out_dirs) or len(set(seeds)) != len(seeds) or len(folders) != len(out_dirs):
        raise ValueError(f"stacked pretraining: expected as many distinct seeds as distinct out dirs, got seeds "
                         f"{list(seeds)} and out dirs {[str(d) for d in out_dirs]}")
    if cfg.compile not in STACKED_COMPILE_MODES:
        raise ValueError(f"compile {cfg.compile!r}: stacked pretraining takes {' or '.join(STACKED_COMPILE_MODES)}")
    if cfg.pretrain.batching != "padded":
        raise ValueError(f"pretrain.batching {cfg.pretrain.batching!r}: stacked pretraining needs padded batches (the "
                         "authors' random batches: every seed's step then has the same size, bucketed ones do not)")
    setup = runs.pretraining_setup(data_dir, cfg, variant, f"seeds {', '.join(map(str, seeds))}, stacked",
                                   check_evaluation)
    if cfg.compile == "cuda-graph":  # now, before any earlier output is removed, not at the first step
        runs.check_cuda_graphs(setup.device)
    device, instances, p = setup.device, setup.instances, cfg.pretrain
    configs = [dataclasses.replace(cfg, seed=seed) for seed in seeds]
    models = []
    for run_cfg in configs:  # each seed's initial weights, as runs.pretrain makes them
        runtime.epoch_generators(run_cfg.seed, 0)
        models.append(PretrainModel(run_cfg, setup.dataset.num_items, setup.dataset.num_attributes).to(device))
    stacked = StackedRuns(models, item_attribute_table(instances).to(device))
    del models
    optimizer = adam(stacked.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    if draw_workers is None:
        draw_workers = device.type == "cuda"
    log.info("each seed's batches drawn %s", "in a worker process of its own" if draw_workers else "in this process")
    train_step = None
    sp_losses: list[list[float]] = [[] for _ in seeds]

    @runs.timed
    def train_epoch(rngs):
        nonlocal train_step
        sums = torch.zeros(len(LOSSES), len(seeds), dtype=torch.float64, device=device)
        for steps in seed_steps(instances, p, rngs, cfg.model.max_len, draw_workers):
            batch = StackedBatch.of(list(steps)).to(device)
            if train_step is None:
                train_step = stacked_steps(stacked, optimizer, batch, cfg.compile)
            losses = train_step([batch])
            sums += losses["per_run"].detach().double()
        means = (sums / len(instances)).tolist()
        row = {f"seed{seed}_{name}": means[j][i] for i, seed in enumerate(seeds) for j, name in enumerate(LOSSES)}
        for i, seed in enumerate(seeds):
            warn_if_segment_head_stalled(sp_losses[i], row[f"seed{seed}_sp"], p.pair_loss)
        return row | {"instances": len(instances) * len(seeds)}

    identity = {"config": runs.run_identity(cfg), "variant": variant, "inputs": setup.data_digest,
                "stacked_seeds": list(seeds)}
    checkpoint = out_dirs[0] / GROUP_CHECKPOINT
    # each seed's history too: written at the end alone, an earlier run's would sit there meanwhile
    remove_earlier_outputs([d / name for d in out_dirs for name in (*runs.PRETRAIN_OUTPUTS, "pretrain_history.csv")])
    state = run_epochs(model=stacked, optimizer=optimizer, epochs=p.epochs, seed=seeds, train_epoch=train_epoch,
                       checkpoint=checkpoint, config=identity, history_path=out_dirs[0] / GROUP_HISTORY,
                       stop_after=stop_after, process=setup.process())
    if state.epoch < p.epochs:
        return None
    # cpu_seconds are this process's: draw workers' CPU time is not in them
    group = {"seeds": list(seeds), "wall_seconds": runs.history_sum(state.history, "seconds"),
             "cpu_seconds": runs.history_sum(state.history, "cpu_seconds")}
    written = []
    for index, (run_cfg, out_dir) in enumerate(zip(configs, out_dirs)):
        history = [run_row(row, run_cfg.seed, len(seeds)) for row in state.history]
        files.save_frame(out_dir / "pretrain_history.csv", pl.DataFrame(history))
        written.append(runs.write_pretrained(out_dir, run_cfg, variant, setup, history, stacked.run_state_dict(index),
                                             stacked=group, **resumed_processes(state, setup.process())))
    checkpoint.unlink(missing_ok=True)
    return written


def run_row(row: dict, seed: int, count: int) -> dict:
    """A group's epoch row as seed `seed`'s own: its losses, and its share (1/count) of the
    group's seconds, so that summing a run's seconds gives what it cost."""
    own = {name: row[f"seed{seed}_{name}"] for name in LOSSES}
    seconds, cpu = row["seconds"] / count, row["cpu_seconds"] / count
    instances = row["instances"] // count
    return {"epoch": row["epoch"], **own, "instances": instances, "cpu_seconds": cpu, "seconds": seconds,
            "instances_per_s": instances / max(seconds, 1e-9)}
