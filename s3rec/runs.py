"""One pretraining or finetuning run end to end: data -> model -> epochs -> files on disk.

The files each run writes are listed in CONTRACTS.md. The last file a run writes is its
main output (pretrain.pt, metrics.json), so its presence means the run finished.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path

import numpy as np
import torch

from s3rec import cli, files, runtime
from s3rec.batching import chunk_bounds
from s3rec.config import HEAD_NAMES, ModelConfig, RunConfig, architecture_differences, parse_variant, validate
from s3rec.cuda_graphs import GRID_INPUTS, NEXT_ITEM_INPUTS, GraphedSteps
from s3rec.data import (ATTRIBUTES_FILE, NEGATIVES_FILE, SEQUENCES_FILE, Dataset, leave_one_out, load_dataset,
                        load_sampled_negatives)
from s3rec.encoder import Encoder
from s3rec.evaluation import check_sampled_protocol, draw_negatives, evaluate, full_ranking_ranks, sampled_ranks
from s3rec.finetuning import iterate_batches as finetune_batches
from s3rec.finetuning import check_negatives_drawable, fixed_shape_loss, score_function, step_loss
from s3rec.heads import make_head, parameter_count
from s3rec.metrics import metrics_from_ranks
from s3rec.pretrain_batches import PretrainInstances, item_attribute_table, split_instances
from s3rec.pretrain_batches import iterate_batches as pretrain_batches
from s3rec.pretraining import LOSS_NAMES, PretrainModel, fixed_shape_step_losses, step_losses
from s3rec.stalls import warn_if_segment_head_stalled
from s3rec.training import adam, remove_earlier_outputs, resumed_processes, run_epochs

log = logging.getLogger("s3rec")


def resolve_config(settings: dict | None, variant: str, seed: int, device: str | None = None,
                   threads: int | None = None, compile: str | None = None) -> RunConfig:
    """Settings from the workflow, then the variant's rank, the seed and execution flags. A seed or
    rank in `settings` other than the flags' is refused: it was replaced without a word."""
    cfg = RunConfig.from_dict(settings)
    _, rank = parse_variant(variant)
    given = settings or {}
    if "seed" in given and given["seed"] != seed:
        raise ValueError(f"--settings: seed {given['seed']!r}, but the run's seed is {seed} (--seed): give it there")
    if (given.get("model") or {}).get("rank") not in (None, rank):
        raise ValueError(f"--settings: model.rank {given['model']['rank']!r}, but variant {variant!r} has rank "
                         f"{rank}: the variant sets it (r<rank>, full: dense heads)")
    cfg.model.rank = rank
    if cfg.model.rank is None:
        cfg.model.low_rank_heads = ()  # dense heads: record no factorised head
    cfg.seed = seed
    cfg.device = device or cfg.device
    cfg.threads = threads if threads is not None else cfg.threads
    cfg.compile = compile or cfg.compile
    validate(cfg)  # the flags too
    return cfg


def parameter_counts(cfg: RunConfig, num_items: int, num_attributes: int, pretrained: bool) -> dict:
    """Exact parameter counts: the encoder used for recommendation and each pretraining head."""
    d = cfg.model.hidden_size
    encoder = parameter_count(Encoder(cfg.model, num_items))
    if not pretrained:
        return {"encoder": encoder, "attribute_embeddings": 0, "heads": {}, "heads_total": 0, "total": encoder}
    heads = {name: parameter_count(make_head(d, cfg.model.rank if name in cfg.model.low_rank_heads else None))
             for name in HEAD_NAMES}
    attributes = (num_attributes + 1) * d
    total = encoder + attributes + sum(heads.values())
    return {"encoder": encoder, "attribute_embeddings": attributes, "heads": heads,
            "heads_total": sum(heads.values()), "total": total}


# What a finished run writes besides its history (written each epoch): an earlier run's are
# removed when a run starts in the same folder (training.remove_earlier_outputs).
FINETUNE_OUTPUTS = ("finetune.pt", "metrics.json", "ranks.parquet")
PRETRAIN_OUTPUTS = ("pretrain.pt", "pretrain_run.json")


def load_pretrained_encoder(encoder: Encoder, path: Path, variant: str, seed: int, data_digest: str) -> dict:
    """Strict load of a pretraining checkpoint's encoder: it must be of this variant, seed (an
    imported checkpoint has none) and data set; anything missing or mismatched is an error.
    Returns the pretraining's wall and CPU seconds and its `pretrain` settings."""
    if not Path(path).exists():
        raise FileNotFoundError(f"pretrained checkpoint {path} does not exist (variant {variant} needs it)")
    saved = files.load_torch(path)
    if mistake := mistaken_checkpoint(saved):
        raise ValueError(f"{path}: {mistake}")
    if not (isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict) and "variant" in saved):
        raise ValueError(f"{path}: not a pretrain.pt (expected a dict with `variant`, `config` and `state_dict`, as "
                         "scripts/pretrain.py and scripts/import_checkpoint.py write it)")
    if "data_digest" not in saved:
        log.warning("%s records no data digest (written by an older version): cannot check its data set", path)
    if mismatches := pretrained_mismatches(saved, variant, seed, data_digest, encoder.cfg):
        # every mismatch at once: a user fixing them one rerun at a time would pay a data load each
        raise ValueError(f"{path} does not fit this finetuning: it was {'; '.join(mismatches)}")
    prefix = "encoder."
    state = {k[len(prefix):]: v for k, v in saved["state_dict"].items() if k.startswith(prefix)}
    files.load_state(encoder, state, path, "this model")
    log.info("loaded encoder from %s (pretrained %d epochs)", path, saved.get("epoch", -1))
    return {"wall_seconds": float(saved.get("wall_seconds", 0.0)), "cpu_seconds": float(saved.get("cpu_seconds", 0.0)),
            "pretrain": saved.get("config", {}).get("pretrain"),
            "weights_sha256": runtime.weights_digest(saved["state_dict"])}


def pretrained_mismatches(saved: dict, variant: str, seed: int, data_digest: str, model: ModelConfig) -> list[str]:
    """How a pretrain.pt differs from the finetuning about to load it: variant, seed (an imported
    checkpoint records none), data set (when recorded) and model settings, each as a phrase."""
    mismatches = []
    if saved.get("variant") != variant:
        mismatches.append(f"pretrained as variant {saved.get('variant')!r}, not {variant!r}")
    saved_seed = saved.get("seed", saved.get("config", {}).get("seed"))
    if saved_seed is not None and saved_seed != seed:
        mismatches.append(f"pretrained with seed {saved_seed}, not {seed}")
    if other := other_data(saved.get("data_digest"), data_digest, "this --data folder", "pretrained"):
        mismatches.append(other)
    if differ := architecture_differences(saved.get("config", {}).get("model"), model):
        mismatches.append(f"pretrained with other model settings ({'; '.join(differ)}); finetune with the "
                          "pretraining's settings.model")
    return mismatches


def mistaken_checkpoint(saved) -> str | None:
    """What `saved` (a torch.load) is when it is a file a user may take for a pretrain.pt: the
    authors' released state dict, or a study's heads.pt (the heads alone); else None."""
    if not isinstance(saved, dict) or not saved:
        return None
    if all(isinstance(v, torch.Tensor) for v in saved.values()):
        return "a bare state dict (as the authors release theirs), not a pretrain.pt; convert it first with " \
               "scripts/import_checkpoint.py"
    state = saved.get("state_dict")
    if isinstance(state, dict) and state and all(k.startswith("heads.") for k in state):
        return "only the pretraining heads (a study's heads.pt, scripts/export_study.py heads), no encoder; " \
               "expected the pretrain.pt it was cut from"
    return None


def load_pretraining_model(path: Path, dataset: Dataset, data_dir: Path) -> tuple[PretrainModel, dict]:
    """A finished or imported pretrain.pt, or a running job's pretrain.state.pt, as the
    PretrainModel it saved (eval mode) and {variant, epoch}: what the benchmarks that score
    checkpoints on one data set (`dataset`, read from `data_dir`) need. A file of other data than
    data_dir's (when it records which), or one that is no pretraining model, is an error naming it."""
    saved = files.load_torch(path)
    if mistake := mistaken_checkpoint(saved):
        raise ValueError(f"{path}: {mistake}")
    if isinstance(saved, dict) and {"config", "state_dict"} <= saved.keys():
        config, state, digest = saved["config"], saved["state_dict"], saved.get("data_digest")
        about = {"variant": saved.get("variant"), "epoch": saved.get("epoch")}
    elif isinstance(saved, dict) and {"config", "model", "loop"} <= saved.keys():  # config: the run's identity
        config, state, digest = saved["config"].get("config"), saved["model"], saved["config"].get("inputs")
        about = {"variant": saved["config"].get("variant"), "epoch": saved["loop"].get("epoch")}
    else:
        raise ValueError(f"{path}: neither a pretrain.pt (config, state_dict) nor a pretrain.state.pt "
                         "(config, model, loop)")
    check_same_data(path, digest, digest_of_data(data_dir), str(data_dir))
    model = PretrainModel(RunConfig.from_dict(config), dataset.num_items, dataset.num_attributes)
    files.load_state(model, state, path, "a pretraining model of its own settings")
    return model.eval(), about


def check_same_data(path: Path, recorded: str | None, digest: str, folder: str) -> None:
    """A checkpoint's recorded data digest (None: not recorded, nothing to check) against the
    digest of the data it is about to be used with."""
    if other := other_data(recorded, digest, folder):
        raise ValueError(f"{path} was {other}")


def other_data(recorded: str | None, digest: str, folder: str, trained: str = "trained") -> str | None:
    """'trained on other data than ... of FOLDER (...)' where a recorded digest differs; else None."""
    if recorded is None or recorded == digest:
        return None
    return f"{trained} on other data than {SEQUENCES_FILE} + {ATTRIBUTES_FILE} of {folder} (their sha256 differs)"


def data_files(data_dir: Path) -> list[Path]:
    return [Path(data_dir) / name for name in (SEQUENCES_FILE, ATTRIBUTES_FILE)]


def digest_of_data(data_dir: Path) -> str:
    """The prepared data's digest: what checkpoints (data_digest) and run records (data_sha256) hold."""
    return runtime.digest(data_files(data_dir))


def sampled_negatives(data_dir: Path, dataset: Dataset, cfg: RunConfig) -> np.ndarray | None:
    """The sampled protocol's (U, n) negatives: drawn with eval.negatives_seed, or read from the
    data set's sampled_negatives.parquet (eval.negatives: file); None without that protocol."""
    if "sampled" not in cfg.eval.protocols:
        return None
    if cfg.eval.negatives == "seeded":
        return draw_negatives(dataset.sequences, dataset.user_ids, dataset.num_items, cfg.eval)
    negatives = load_sampled_negatives(data_dir, dataset.user_ids)
    if negatives.shape[1] != cfg.eval.sampled_negatives:
        raise ValueError(f"{Path(data_dir) / NEGATIVES_FILE} holds {negatives.shape[1]} negatives per "
                         f"user, but eval.sampled_negatives is {cfg.eval.sampled_negatives}")
    return negatives


def excluded_negatives(dataset: Dataset, split, include_heldout: bool) -> list[np.ndarray]:
    return dataset.sequences if include_heldout else split.train


def timed(function):
    """function(...) -> dict, with the CPU seconds it took (all threads of the process) added."""
    def wrapper(*args):
        start = time.process_time()
        row = function(*args)
        return row | {"cpu_seconds": time.process_time() - start}
    return wrapper


def peak_memory(device: torch.device) -> dict:
    """Peak resident memory of the process, and on a GPU the peak memory torch allocated there."""
    peak = {"peak_rss_mib": runtime.peak_rss_mib()}
    gpu = runtime.peak_device_memory_mib(device)
    return peak if gpu is None else peak | {"peak_gpu_mib": gpu}


def history_sum(history: list[dict], *columns: str) -> float:
    """Seconds summed over every epoch of a run, those of earlier (resumed) invocations included."""
    return float(sum(row.get(column, 0.0) for row in history for column in columns))


# the finetuning settings metrics.json repeats under "finetune" (the report's labels and notes)
RECORDED_FINETUNING = ("loss", "negatives_exclude_heldout", "batching", "early_stopping_metric",
                       "early_stopping_protocol")


def validation(score, split, negatives, num_items: int, cfg: RunConfig):
    """The per-epoch validation of a finetuning: (early-stopping score, metrics and CPU seconds)
    by the protocol that early stopping watches."""
    f = cfg.finetune

    def validate():
        start = time.process_time()
        if f.early_stopping_protocol == "sampled":
            ranks = sampled_ranks(score, split.train, split.valid_target, negatives, batch_size=cfg.eval.batch_size)
            metrics = metrics_from_ranks(ranks, num_candidates=negatives.shape[1] + 1)
        else:
            ranks = full_ranking_ranks(score, split.train, split.valid_target, num_items,
                                       exclude_history=cfg.eval.exclude_history, batch_size=cfg.eval.batch_size,
                                       history_score=cfg.eval.history_score)
            metrics = metrics_from_ranks(ranks)
        # becomes the history column valid_cpu_seconds
        return metrics[f.early_stopping_metric], metrics | {"cpu_seconds": time.process_time() - start}

    return validate


def finetune(data_dir: Path, out_dir: Path, cfg: RunConfig, variant: str,
             pretrained: Path | None = None, stop_after: int | None = None) -> dict | None:
    """Finetune (or train from scratch for `none`), then evaluate the best epoch on both splits."""
    needs_pretraining, _ = parse_variant(variant)
    if needs_pretraining != (pretrained is not None):
        raise ValueError(f"variant {variant!r} {'needs' if needs_pretraining else 'takes no'} --pretrained checkpoint")
    device = runtime.choose_device(cfg.device)
    runtime.set_threads(cfg.threads)
    execution = runtime.describe_execution(device)
    provenance = runtime.provenance()  # now: the code this process loaded, though the checkout may move on
    log.info("finetuning %s seed %d on %s", variant, cfg.seed, execution)
    dataset = load_dataset(data_dir)
    split = leave_one_out(dataset.sequences)
    negatives = sampled_negatives(data_dir, dataset, cfg)  # fails before training
    runtime.epoch_generators(cfg.seed, 0)  # the initial weights depend on the seed alone
    encoder = Encoder(cfg.model, dataset.num_items)
    data_digest = digest_of_data(data_dir)
    pretraining = (load_pretrained_encoder(encoder, pretrained, variant, cfg.seed, data_digest) if pretrained
                   else {"wall_seconds": 0.0, "cpu_seconds": 0.0, "pretrain": None, "weights_sha256": None})
    encoder.to(device)
    f = cfg.finetune
    optimizer = adam(encoder.parameters(), lr=f.lr, weight_decay=f.weight_decay)
    excluded = excluded_negatives(dataset, split, f.negatives_exclude_heldout)
    check_negatives_drawable(split.train, excluded, dataset.num_items, dataset.user_ids)
    score = score_function(encoder, device)
    train_step, layout = finetuning_steps(encoder, optimizer, cfg, device)

    @timed
    def train_epoch(rng):
        total, count, instances = 0.0, 0, 0
        for step in finetune_batches(split.train, excluded, dataset.num_items, cfg.model.max_len, f.batch_size, rng,
                                     f.batching, **layout):
            loss = train_step([chunk.to(device) for chunk in step])["loss"]
            # detached sums: no device synchronisation per step (it matters on CUDA)
            total, count, instances = total + loss.detach().double(), count + 1, instances + sum(len(c.inputs) for c in step)
        return {"loss": float(total) / max(count, 1), "instances": instances}

    out_dir = Path(out_dir)
    inputs = data_files(data_dir) + ([Path(pretrained)] if pretrained else [])
    identity = {"config": run_identity(cfg), "variant": variant, "inputs": runtime.digest(inputs)}
    process = {"execution": execution, "provenance": provenance}
    remove_earlier_outputs([out_dir / name for name in FINETUNE_OUTPUTS])
    state = run_epochs(model=encoder, optimizer=optimizer, epochs=f.epochs, seed=cfg.seed, train_epoch=train_epoch,
                       checkpoint=out_dir / "finetune.state.pt", config=identity,
                       history_path=out_dir / "finetune_history.csv",
                       validate=validation(score, split, negatives, dataset.num_items, cfg),
                       patience=f.patience, stop_after=stop_after, process=process)
    early_stopped = state.bad_epochs >= f.patience
    if state.epoch < f.epochs and not early_stopped:
        return None  # interrupted on purpose (stop_after); the checkpoint lets a rerun resume
    if not early_stopped:
        log.warning("finetuning hit the epoch cap (%d) before early stopping: the model may be undertrained", f.epochs)
    encoder.load_state_dict(state.best_state)
    encoder.eval()
    log.info("best epoch %d (valid %s %.4f); evaluating", state.best_epoch, f.early_stopping_metric, state.best_score)
    evaluation_started, evaluation_cpu = time.perf_counter(), time.process_time()
    metrics, ranks = evaluate(score, split, dataset.sequences, dataset.user_ids, dataset.num_items, cfg.eval,
                              negatives=negatives)
    # what was trained: the pretraining settings of its checkpoint (none without one), in both
    # files; cfg.pretrain here is only this finetuning's default, which trained nothing
    recorded = recorded_config(cfg, pretraining["pretrain"])
    result = {
        "dataset": Path(data_dir).name, "variant": variant, "seed": cfg.seed, "metrics": metrics,
        "parameters": parameter_counts(cfg, dataset.num_items, dataset.num_attributes, pretrained is not None),
        "best_epoch": state.best_epoch, "epochs_run": state.epoch, "early_stopped": early_stopped,
        # every epoch (resumed invocations included) plus the final evaluation
        "wall_seconds": {"pretrain": pretraining["wall_seconds"],
                         "finetune": history_sum(state.history, "seconds", "valid_seconds")
                         + time.perf_counter() - evaluation_started},
        "cpu_seconds": {"pretrain": pretraining["cpu_seconds"],
                        "finetune": history_sum(state.history, "cpu_seconds", "valid_cpu_seconds")
                        + time.process_time() - evaluation_cpu},
        "finetune": {key: getattr(f, key) for key in RECORDED_FINETUNING},
        # which pretrained weights: a report refuses to set finetunings of one seed side by side
        # when a pretraining rerun between them gave them different starts
        "pretrained_weights_sha256": pretraining["weights_sha256"],
        # which prepared data: a study continued on another machine keeps this run only when that
        # machine's data are the same (scripts/park_runs.py restore)
        "data_sha256": data_digest,
        "execution": execution | peak_memory(device), "config": recorded,
        "provenance": provenance, **resumed_processes(state, process),
    }
    files.save_torch(out_dir / "finetune.pt", {"config": recorded, "variant": variant, "data_digest": data_digest,
                                                "best_epoch": state.best_epoch, "state_dict": state.best_state})
    files.save_frame(out_dir / "ranks.parquet", ranks)
    files.write_json(out_dir / "metrics.json", result)
    (out_dir / "finetune.state.pt").unlink(missing_ok=True)
    log.info("test full NDCG@10 %.4f HR@10 %.4f; %.1f s", metrics.get("full", {}).get("test", {}).get("NDCG@10", float("nan")),
             metrics.get("full", {}).get("test", {}).get("HR@10", float("nan")), result["wall_seconds"]["finetune"])
    return result


# Config keys added after runs of the study were checkpointed, with the value that does what the
# code did before them. At that value a key is left out of a run's identity, so a checkpoint
# written before it existed still resumes (a Beauty pretraining checkpoint holds hours of CPU time).
LATER_KEYS = {("eval", "negatives"): "seeded", ("finetune", "early_stopping_protocol"): "full",
              ("eval", "history_score"): None}


EXECUTION_KEYS = ("device", "threads", "compile")  # where and how a run computes, not what


def run_identity(cfg: RunConfig) -> dict:
    """What a resumed run must share with its checkpoint: everything but where and how it
    executes, so a run stopped on one machine resumes on another with other threads, another
    device or another compile mode."""
    identity = {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_KEYS}
    for (section, key), before in LATER_KEYS.items():
        if identity[section].get(key) == before:
            del identity[section][key]
    return identity


def recorded_config(cfg: RunConfig, pretrain: dict | None) -> dict:
    """The config a finetuning run records: the pretraining settings are those its checkpoint was
    trained with (the authors' for an import), and none for a model never pretrained."""
    config = cfg.to_dict()
    if pretrain is None:
        del config["pretrain"]
    else:
        config["pretrain"] = pretrain
    return config


def pretraining_steps(model: PretrainModel, optimizer: torch.optim.Optimizer, instances: PretrainInstances,
                      cfg: RunConfig, device, fixed_shapes: bool | None = None) -> tuple:
    """(train_step(a step's chunks, on the device) -> its losses, having updated the model;
    iterate_batches' layout arguments). Gathered steps: chunks of similar length, each padded to
    its longest (CPU; one chunk on a GPU). Fixed-shape steps (by default, whenever cfg.compile
    is not "none"): one chunk padded to max_len, whatever the batch (the same draws: tested),
    losses by grid_forward, compiled whole with cfg.compile (its first steps compile: the first
    epoch is slower), or, with "cuda-graph", the whole step recorded as a CUDA graph and
    replayed (s3rec/cuda_graphs.py). benchmarks/speed.py times them all."""
    if not (cfg.compile != "none" if fixed_shapes is None else fixed_shapes):
        return optimizer_steps(lambda chunks: step_losses(model, chunks), optimizer), {"bounds": chunk_bounds(device)}
    layout = {"bounds": (), "length": cfg.model.max_len}
    table = item_attribute_table(instances).to(device)
    if cfg.compile == "cuda-graph":
        check_cuda_graphs(device)
        log.info("pretraining steps padded to max_len %d, each step replayed as a CUDA graph", cfg.model.max_len)
        return GraphedSteps(model, optimizer, functools.partial(model.grid_forward, item_attributes=table),
                            GRID_INPUTS), layout
    log.info("pretraining steps padded to max_len %d, the whole loss %s", cfg.model.max_len,
             f"compiled (torch.compile {cfg.compile})" if cfg.compile != "none" else "uncompiled")
    return optimizer_steps(fixed_shape_step_losses(model, table, cfg.compile), optimizer), layout


def finetuning_steps(encoder: Encoder, optimizer: torch.optim.Optimizer, cfg: RunConfig, device) -> tuple:
    """(train_step(a step's chunks, on the device) -> {"loss": ...}, having updated the encoder;
    finetuning.iterate_batches' layout arguments). With compile "cuda-graph" each step is
    padded to fixed shapes (finetuning.fixed_shape) and replayed as a CUDA graph; any other
    mode trains the eager step (torch.compile modes apply to pretraining only)."""
    loss = cfg.finetune.loss
    if cfg.compile != "cuda-graph":
        return (optimizer_steps(lambda chunks: {"loss": step_loss(encoder, chunks, loss)}, optimizer),
                {"bounds": chunk_bounds(device)})
    check_cuda_graphs(device)
    log.info("finetuning steps padded to max_len %d, each step replayed as a CUDA graph", cfg.model.max_len)
    return (GraphedSteps(encoder, optimizer, lambda batch: {"loss": fixed_shape_loss(encoder, batch, loss)},
                         NEXT_ITEM_INPUTS), {"bounds": (), "fixed_shapes": True})


def check_cuda_graphs(device) -> None:
    if torch.device(device).type != "cuda":
        raise ValueError(f"compile: cuda-graph records CUDA graphs and needs a CUDA device; this run is on "
                         f"{device} (device: cuda, or another compile mode)")


def optimizer_steps(losses_of, optimizer: torch.optim.Optimizer):
    """train_step(chunks) -> losses: the losses, their gradients and one optimizer step."""
    def train_step(chunks):
        losses = losses_of(chunks)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        return losses

    return train_step


def pretrain(data_dir: Path, out_dir: Path, cfg: RunConfig, variant: str, stop_after: int | None = None,
             check_evaluation: bool = True) -> dict | None:
    """Self-supervised pretraining for a fixed number of epochs (no early stopping, as the authors).
    `check_evaluation`: see pretraining_setup."""
    setup = pretraining_setup(data_dir, cfg, variant, f"seed {cfg.seed}", check_evaluation)
    device, dataset, instances, p = setup.device, setup.dataset, setup.instances, cfg.pretrain
    runtime.epoch_generators(cfg.seed, 0)
    model = PretrainModel(cfg, dataset.num_items, dataset.num_attributes).to(device)
    optimizer = adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)

    train_step, layout = pretraining_steps(model, optimizer, instances, cfg, device)
    sp_losses: list[float] = []  # this process's epochs (after a resume, the ones since)

    @timed
    def train_epoch(rng):
        sums = dict.fromkeys(("loss", *LOSS_NAMES), 0.0)
        for step in pretrain_batches(instances, p.batch_size, rng, mask_prob=p.mask_prob, batching=p.batching,
                                     **layout):
            losses = train_step([chunk.to(device) for chunk in step])
            for name in sums:  # detached sums: no device synchronisation per step
                sums[name] += losses[name].detach().double()
        row = {name: float(value) / len(instances) for name, value in sums.items()}
        warn_if_segment_head_stalled(sp_losses, row["sp"], p.pair_loss)
        return row | {"instances": len(instances)}

    out_dir = Path(out_dir)
    identity = {"config": run_identity(cfg), "variant": variant, "inputs": setup.data_digest}
    remove_earlier_outputs([out_dir / name for name in PRETRAIN_OUTPUTS])
    state = run_epochs(model=model, optimizer=optimizer, epochs=p.epochs, seed=cfg.seed, train_epoch=train_epoch,
                       checkpoint=out_dir / "pretrain.state.pt", config=identity,
                       history_path=out_dir / "pretrain_history.csv", stop_after=stop_after, process=setup.process())
    if state.epoch < p.epochs:
        return None
    run = write_pretrained(out_dir, cfg, variant, setup, state.history, model.state_dict(),
                           **resumed_processes(state, setup.process()))
    (out_dir / "pretrain.state.pt").unlink(missing_ok=True)
    return run


@dataclasses.dataclass
class PretrainingSetup:
    """What every pretraining run starts from: its device, data and instances, and what its
    files record of them."""

    device: torch.device
    execution: dict
    provenance: dict
    dataset_name: str  # the --data folder's name
    dataset: Dataset
    instances: PretrainInstances
    data_digest: str

    def process(self) -> dict:
        """This process as a run's state records it (training.LoopState.processes)."""
        return {"execution": self.execution, "provenance": self.provenance}


def pretraining_setup(data_dir: Path, cfg: RunConfig, variant: str, label: str,
                      check_evaluation: bool = True) -> PretrainingSetup:
    """Device, threads, the data set and its pretraining instances; the checks that would
    otherwise fail only after pretraining (the finetuning's sampled protocol of cfg.eval),
    unless `check_evaluation` is off: cfg.eval is then the defaults, not what the finetunings
    will be given (the workflow's pretraining jobs get no eval section)."""
    if not parse_variant(variant)[0]:
        raise ValueError(f"variant {variant!r} is not pretrained")
    if variant == "authors":  # a pretraining of ours labelled so would be reported as the authors' model
        raise ValueError("variant 'authors' is the S3Rec authors' released model, not pretrained here: "
                         "import it with scripts/import_checkpoint.py; pretrain full for dense heads")
    device = runtime.choose_device(cfg.device)
    if problem := runtime.inductor_build_problem(cfg.compile, device):
        raise ValueError(problem)  # now, not after the data is read and the first step compiles
    runtime.set_threads(cfg.threads)
    execution = runtime.describe_execution(device)
    provenance = runtime.provenance()  # now: the code this process loaded, though the checkout may move on
    log.info("pretraining %s %s on %s", variant, label, execution)
    dataset = load_dataset(data_dir)
    split = leave_one_out(dataset.sequences)
    if check_evaluation and "sampled" in cfg.eval.protocols:  # the finetuning's would fail: say so now
        if cfg.eval.negatives == "seeded":
            check_sampled_protocol(dataset.sequences, dataset.num_items, cfg.eval.sampled_negatives, dataset.user_ids)
        else:
            sampled_negatives(data_dir, dataset, cfg)
    p = cfg.pretrain
    instances = split_instances(dataset, split, max_len=cfg.model.max_len, kind=p.instances)
    log.info("%d pretraining instances (%s) from %d users", len(instances), p.instances, len(split.train))
    return PretrainingSetup(device, execution, provenance, Path(data_dir).name, dataset, instances,
                            digest_of_data(data_dir))


def write_pretrained(out_dir: Path, cfg: RunConfig, variant: str, setup: PretrainingSetup, history: list[dict],
                     state_dict: dict, **extra) -> dict:
    """A finished pretraining's pretrain_run.json and pretrain.pt (written last: its presence
    means the run finished); `extra` goes into both."""
    seconds = sum(row["seconds"] for row in history)
    cpu = history_sum(history, "cpu_seconds")
    counts = parameter_counts(cfg, setup.dataset.num_items, setup.dataset.num_attributes, pretrained=True)
    run = {"dataset": setup.dataset_name, "variant": variant, "seed": cfg.seed, "epochs": len(history),
           "instances": len(setup.instances), "parameters": counts, "wall_seconds": seconds, "cpu_seconds": cpu,
           "execution": setup.execution | peak_memory(setup.device), "config": cfg.to_dict(),
           "weights_sha256": runtime.weights_digest(state_dict), "data_sha256": setup.data_digest,
           "provenance": setup.provenance, **extra}
    files.write_json(out_dir / "pretrain_run.json", run)
    files.save_torch(out_dir / "pretrain.pt", {"config": cfg.to_dict(), "variant": variant, "seed": cfg.seed,
                                                "data_digest": setup.data_digest, "epoch": len(history),
                                                "wall_seconds": seconds, "cpu_seconds": cpu,
                                                "state_dict": state_dict, **extra})
    last = history[-1]
    log.info("pretrained seed %d, %d epochs in %.1f s; last losses %s", cfg.seed, len(history), seconds,
             {name: round(last[name], 4) for name in ("loss", *LOSS_NAMES)})
    return run


def add_run_arguments(parser, several_seeds: bool = False) -> None:
    """The command-line arguments pretrain.py and finetune.py share (see CONTRACTS.md); with
    `several_seeds`, --seed and --out-dir take one value or several, pair by pair."""
    several = {"nargs": "+"} if several_seeds else {}
    parser.add_argument("--data", required=True, type=Path, help="prepared data set folder (resources/<name>)")
    variants = "full or r<rank>, e.g. r16" if several_seeds else "none, full, r<rank> (e.g. r16) or authors"
    example = '{"pretrain": {"epochs": 10}}' if several_seeds else '{"finetune": {"loss": "ce"}}'
    parser.add_argument("--variant", required=True, help=variants)
    parser.add_argument("--seed", type=cli.seed_argument, default=[0] if several_seeds else 0, **several)
    parser.add_argument("--out-dir", required=True, type=cli.folder_argument, **several,
                        help=("run folder, e.g. results/<data>/<preset>-<variant>/seed0" + (" (one per seed)" if several
                              else "/<loss> (none: results/<data>/none/seed0/<loss>)")))
    parser.add_argument("--settings", type=cli.json_object, default={},
                        help=f"JSON object with RunConfig sections, e.g. '{example}'")
    parser.add_argument("--device", type=cli.device_argument, default=None, help="auto (default), cpu, cuda, cuda:N or cuda:any (the node's least-used card)")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch threads (default: SLURM_CPUS_PER_TASK or all)")
