"""Plain dataclass configuration for one training run.

Every knob a run depends on lives here, with its default and the reason for it.
`RunConfig.from_dict` is strict: an unknown key is an error naming the key, so a typo
in a workflow config or a `--settings` string never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from s3rec.metrics import METRICS_FULL

HEAD_NAMES = ("aap", "mip", "map", "sp")
# Every seed (run, negatives, synthetic data, bootstrap) is in numpy's classic range [0, 2^32 - 1],
# which most tools take; a larger one trained, then broke the tables' int64 seed column.
SEED_MAX = 2**32 - 1
FINETUNE_LOSSES = ("bce", "ce")


class DuplicateKey(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """json object_pairs_hook of --settings and the runs' records: a key given twice is an error
    (json keeps the last silently: {"epochs": 1, "epochs": 1000} ran past epoch 1)."""
    keys = [key for key, _ in pairs]
    repeated = next((key for key in keys if keys.count(key) > 1), None)
    if repeated is not None:
        raise DuplicateKey(f"key {repeated!r} given twice in one object; expected each key once")
    return dict(pairs)


def is_seed(value) -> bool:
    """A seed as a JSON value: an integer (not a bool) in [0, SEED_MAX]."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


@dataclass
class ModelConfig:
    hidden_size: int = 64  # d, as in the paper and the authors' code
    num_layers: int = 2
    num_heads: int = 2
    max_len: int = 50  # the authors truncate to the last 50 items
    hidden_dropout: float = 0.5  # authors' hidden_dropout_prob
    attention_dropout: float = 0.5  # authors' attention_probs_dropout_prob
    init_std: float = 0.02  # authors' initializer_range
    # Which pretraining heads are factorised W = U V^T, and their rank (None = all dense).
    low_rank_heads: tuple[str, ...] = ("aap", "map")  # the seed README factorises AAP and MAP
    rank: int | None = None


# The model settings a pretrained encoder's weights mean something under. num_heads changes no
# shape, so a strict load alone would accept an encoder pretrained with other heads.
ARCHITECTURE = ("hidden_size", "num_layers", "num_heads", "max_len")


def architecture_differences(saved_model: dict | None, model: ModelConfig) -> list[str]:
    """A checkpoint's recorded model settings against this run's, each difference as
    "<name> <there> there, <here> here" (none recorded: the strict load still checks every shape)."""
    return [f"{name} {saved_model[name]} there, {getattr(model, name)} here" for name in ARCHITECTURE
            if saved_model and name in saved_model and saved_model[name] != getattr(model, name)]


@dataclass
class PretrainConfig:
    """Self-supervised pretraining. Defaults are the `seed` preset (see PRESETS)."""

    preset: str = "seed"
    aap_weight: float = 1.0
    mip_weight: float = 0.2
    map_weight: float = 1.0
    sp_weight: float = 0.5
    # "logsigmoid": -[log s(s+) + log(1 - s(s-))] (seed documents);
    # "sigmoid_difference": BCE(s(s(s+) - s(s-)), 1), the authors' code, squashed scores kept.
    pair_loss: str = "logsigmoid"
    mask_prob: float = 0.2
    instances: str = "prefixes"  # "prefixes" (authors: one per prefix) or "sequences" (one per user)
    # "padded": random batches padded to max_len (the authors' DataLoader); "bucketed": batches of
    # similar length padded to their longest (5x fewer tokens on Beauty; see s3rec/batching.py).
    batching: str = "bucketed"
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0


PRESETS: dict[str, dict[str, Any]] = {
    # What both seed documents (../shared/seeds: the README's "Default Hyperparameters" and the
    # report's appendix B "default configuration") agree on: AAP and MAP are the main tasks, MIP
    # down-weighted; 100 pretraining epochs, batch 256, lr 0.001; the report's appendix C writes
    # the MIP and SP losses as -log s(s+) - log(1 - s(s-)).
    "seed": dict(aap_weight=1.0, mip_weight=0.2, map_weight=1.0, sp_weight=0.5, pair_loss="logsigmoid",
                 epochs=100, batch_size=256, lr=1e-3),
    # The authors' run_pretrain.py defaults (RUCAIBox/CIKM2020-S3Rec): weights, their squashed-
    # difference pair loss, mask_p 0.2, pre_batch_size 100, lr 0.001, and their DataLoader's
    # padded random batches. Epochs are left to the study (their released models: 150 epochs).
    "paper": dict(aap_weight=0.2, mip_weight=1.0, map_weight=1.0, sp_weight=0.5, pair_loss="sigmoid_difference",
                  mask_prob=0.2, batch_size=100, lr=1e-3, batching="padded"),
}


@dataclass
class FinetuneConfig:
    loss: str = "bce"  # "bce": one sampled negative per position (paper); "ce": softmax over all items
    # The authors draw BCE negatives outside the user's *whole* sequence, which tells the model
    # something about the held-out items. False = leak-free: exclude only the training part.
    negatives_exclude_heldout: bool = False
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    batching: str = "padded"  # the authors' random batches padded to max_len; or "bucketed"
    # The authors' run_finetune_full.py stops on the last score get_full_sort_score returns, NDCG@20.
    early_stopping_metric: str = "NDCG@20"  # validation metric
    # The protocol that metric is taken from: "full" as run_finetune_full.py, or "sampled" as the
    # authors' run_finetune_sample.py (which stops on the sampled MRR).
    early_stopping_protocol: str = "full"
    patience: int = 10  # epochs without improvement of early_stopping_metric before stopping


@dataclass
class EvalConfig:
    protocols: tuple[str, ...] = ("full", "sampled")
    exclude_history: bool = True  # full ranking: items the user already has are not ranked
    # None: those items are left out. A number: the authors' full sort, which sets their scores
    # (the target's too, where it is one) to this value, 0.0, and ranks them with the rest: they
    # then outrank every item that scores below 0 (README, Evaluation). Needs exclude_history.
    history_score: float | None = None
    sampled_negatives: int = 99
    # Fixed apart from the run seed so that every variant and seed ranks against the same
    # 99 negatives per user: differences between runs are then paired, user by user.
    negatives_seed: int = 2020
    # "seeded": drawn with negatives_seed; "file": the prepared data set's sampled_negatives.parquet,
    # e.g. the authors' own <Name>_sample.txt (prepare_data.py --negatives): their exact protocol.
    negatives: str = "seeded"
    batch_size: int = 256  # users per scoring batch: a (256 x items) score matrix stays cheap to allocate


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    threads: int | None = None  # torch intra-op threads; None = SLURM_CPUS_PER_TASK or torch default
    # How training steps execute; like device and threads, not what they compute. Finetuning
    # takes only "cuda-graph" (fixed-shape steps, see finetuning.py) and is eager otherwise.
    # Pretraining: "none", the eager step, losses gathered where they count; another value,
    # batches padded to max_len, losses by PretrainModel.grid_forward (the same losses, tested), the whole loss compiled as
    # one graph with this torch.compile mode ("reduce-overhead": replayed as CUDA graphs; "eager":
    # traced, then run uncompiled, a cheap check of the traced path on a CPU), or, with
    # "cuda-graph" (CUDA only), the whole step, Adam included, recorded once and replayed
    # without torch.compile (s3rec/cuda_graphs.py). See COMPILE_MODES.
    compile: str = "none"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "RunConfig":
        """Build from nested dicts; a `pretrain.preset` fills the preset's values first."""
        data = dict(data or {})
        pretrain = dict(data.get("pretrain") or {})
        preset = pretrain.get("preset", PretrainConfig.preset)
        if preset not in PRESETS:
            raise ValueError(f"pretrain.preset: expected one of {sorted(PRESETS)}, got {preset!r}")
        data["pretrain"] = {**PRESETS[preset], **pretrain}
        cfg = _build(cls, data, prefix="")
        validate(cfg)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(kind, data: dict[str, Any], prefix: str):
    known = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown config key {prefix}{unknown[0]!r}; expected one of {sorted(known)}")
    values = {}
    for name, value in data.items():
        default = getattr(kind(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"config key {prefix}{name!r}: expected a mapping, got {value!r}")
            values[name] = _build(type(default), value, prefix=f"{prefix}{name}.")
        else:
            values[name] = _typed(f"{prefix}{name}", value, known[name].type)
    return kind(**values)


def _typed(key: str, value: Any, annotation: str) -> Any:
    """`value` checked against the field's annotation; never coerced by truthiness or rounding
    (the string "false" is not False, 1.5 epochs is not 2)."""
    optional = annotation.endswith(" | None")
    kind = annotation.removesuffix(" | None")
    if value is None and optional:
        return None
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "tuple[str, ...]":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        raise TypeError(f"config key {key}: no type check for annotation {annotation!r}")
    if not ok:
        expected = {"tuple[str, ...]": "a list of strings", "int": "an integer", "float": "a number",
                    "bool": "true or false", "str": "a string"}[kind] + (" or null" if optional else "")
        raise ValueError(f"config key {key!r}: expected {expected}, got {value!r} ({type(value).__name__})")
    return value


def validate(cfg: RunConfig) -> None:
    m, p, f = cfg.model, cfg.pretrain, cfg.finetune
    check_ranges(cfg)
    if m.hidden_size % m.num_heads:
        raise ValueError(f"model.hidden_size {m.hidden_size} must be divisible by model.num_heads {m.num_heads}")
    bad = set(m.low_rank_heads) - set(HEAD_NAMES)
    if bad:
        raise ValueError(f"model.low_rank_heads: unknown head {sorted(bad)[0]!r}; expected {HEAD_NAMES}")
    if len(set(m.low_rank_heads)) != len(m.low_rank_heads):  # the schema's uniqueItems
        raise ValueError(f"model.low_rank_heads: expected each head once, got {list(m.low_rank_heads)}")
    if m.rank is not None and not 1 <= m.rank <= m.hidden_size:
        raise ValueError(f"model.rank must be in 1..{m.hidden_size}, got {m.rank}")
    if p.pair_loss not in ("logsigmoid", "sigmoid_difference"):
        raise ValueError(f"pretrain.pair_loss: expected logsigmoid or sigmoid_difference, got {p.pair_loss!r}")
    if p.instances not in ("prefixes", "sequences"):
        raise ValueError(f"pretrain.instances: expected prefixes or sequences, got {p.instances!r}")
    if f.loss not in FINETUNE_LOSSES:
        raise ValueError(f"finetune.loss: expected bce or ce, got {f.loss!r}")
    for key, batching in (("pretrain.batching", p.batching), ("finetune.batching", f.batching)):
        if batching not in ("padded", "bucketed"):
            raise ValueError(f"{key}: expected padded or bucketed, got {batching!r}")
    if f.early_stopping_metric not in METRICS_FULL:
        raise ValueError(f"finetune.early_stopping_metric: expected one of {list(METRICS_FULL)}, got {f.early_stopping_metric!r}")
    if f.early_stopping_protocol not in ("full", "sampled"):
        raise ValueError(f"finetune.early_stopping_protocol: expected full or sampled, got {f.early_stopping_protocol!r}")
    if f.early_stopping_protocol == "sampled" and "sampled" not in cfg.eval.protocols:
        raise ValueError("finetune.early_stopping_protocol: sampled needs 'sampled' in eval.protocols "
                         f"(its negatives), got {list(cfg.eval.protocols)}")
    if cfg.eval.history_score is not None and not (cfg.eval.exclude_history and math.isfinite(cfg.eval.history_score)):
        raise ValueError(f"eval.history_score {cfg.eval.history_score}: expected a finite number that replaces the "
                         "history items' scores, with eval.exclude_history true (null: they are left out)")
    if cfg.eval.negatives not in ("seeded", "file"):
        raise ValueError(f"eval.negatives: expected seeded or file, got {cfg.eval.negatives!r}")
    if not DEVICE_PATTERN.match(cfg.device):
        raise ValueError(f"device: expected auto, cpu, cuda, cuda:N or cuda:any, got {cfg.device!r}")
    if cfg.compile not in COMPILE_MODES:
        raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES)}, got {cfg.compile!r}")
    bad = set(cfg.eval.protocols) - {"full", "sampled"}
    if bad:
        raise ValueError(f"eval.protocols: unknown protocol {sorted(bad)[0]!r}; expected full, sampled")
    if not cfg.eval.protocols or len(set(cfg.eval.protocols)) != len(cfg.eval.protocols):  # as the schema
        raise ValueError(f"eval.protocols: expected full and/or sampled, each once, got {list(cfg.eval.protocols)}")


def check_ranges(cfg: RunConfig) -> None:
    """The numeric ranges of workflow/schemas/config.schema.yaml, for runs started from the
    scripts with --settings, which the workflow's schema never sees (a dropout of 1.5 or a
    negative learning rate would otherwise train, or fail deep inside torch)."""
    m, p, f, e = cfg.model, cfg.pretrain, cfg.finetune, cfg.eval
    at_least_one = {"model.hidden_size": m.hidden_size, "model.num_layers": m.num_layers,
                    "model.num_heads": m.num_heads, "model.max_len": m.max_len,
                    "pretrain.epochs": p.epochs, "pretrain.batch_size": p.batch_size, "finetune.epochs": f.epochs,
                    "finetune.batch_size": f.batch_size, "finetune.patience": f.patience,
                    "eval.batch_size": e.batch_size, "eval.sampled_negatives": e.sampled_negatives}
    seeds = {"seed": cfg.seed, "eval.negatives_seed": e.negatives_seed}
    at_least_zero = {"pretrain.aap_weight": p.aap_weight, "pretrain.mip_weight": p.mip_weight,
                     "pretrain.map_weight": p.map_weight, "pretrain.sp_weight": p.sp_weight,
                     "pretrain.weight_decay": p.weight_decay, "finetune.weight_decay": f.weight_decay}
    positive = {"model.init_std": m.init_std, "pretrain.lr": p.lr, "finetune.lr": f.lr}
    dropouts = {"model.hidden_dropout": m.hidden_dropout, "model.attention_dropout": m.attention_dropout}
    checks = ([(key, value, value >= 1, "a positive integer") for key, value in at_least_one.items()]
              + [(key, value, 0 <= value <= SEED_MAX, f"an integer in [0, {SEED_MAX}]")
                 for key, value in seeds.items()]
              # finite too: an infinite weight or learning rate diverged at epoch 1, blamed on the lr
              + [(key, value, 0 <= value < math.inf, "a finite number >= 0") for key, value in at_least_zero.items()]
              + [(key, value, 0 < value < math.inf, "a finite number > 0") for key, value in positive.items()]
              # a dropout of 1 would zero every value (and divide by 0 on the CPU path: encoder.py)
              + [(key, value, 0 <= value < 1, "a number in [0, 1)") for key, value in dropouts.items()]
              + [("pretrain.mask_prob", p.mask_prob, 0 <= p.mask_prob <= 1, "a number in [0, 1]")])
    if cfg.threads is not None:  # 0 would silently mean torch's default, a negative count fail in torch
        checks.append(("threads", cfg.threads, cfg.threads >= 1, "an integer >= 1 or null (torch's default)"))
    for key, value, ok, expected in checks:
        if not ok:  # NaN fails every comparison, so it lands here too
            raise ValueError(f"{key}: expected {expected}, got {value}")


COMPILE_MODES = ("none", "eager", "default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune",
                 "cuda-graph")
# what a stacked pretraining of several seeds takes (s3rec/stacked.py): the eager step, or the
# step recorded as a CUDA graph (torch.compile of a vmapped loss is untested here)
STACKED_COMPILE_MODES = ("none", "cuda-graph")

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:([0-9]+|any))?)$")  # as workflow/schemas/config.schema.yaml
# A rank as the config writes it: r16, never r016 or r0 (r016 would name another folder than the
# r16 the workflow makes). labels.py builds the run labels (<preset>-<variant>) from these.
RANK_PATTERN = r"r[1-9][0-9]*"
PRETRAINED_VARIANT_PATTERN = rf"full|{RANK_PATTERN}"
VARIANT_PATTERN = re.compile(rf"^(none|authors|{PRETRAINED_VARIANT_PATTERN})$")


def parse_variant(variant: str) -> tuple[bool, int | None]:
    """'none' -> (no pretraining, -), 'full' -> (pretrain, dense heads), 'r16' -> (pretrain, rank 16);
    'authors' -> dense heads pretrained by the S3Rec authors (scripts/import_checkpoint.py)."""
    if not VARIANT_PATTERN.match(variant):
        raise ValueError(f"variant: expected none, full, authors or r<rank> (e.g. r16), got {variant!r}")
    if variant == "none":
        return False, None
    if variant in ("full", "authors"):
        return True, None
    return True, int(variant[1:])
