"""Plain dataclass configuration for one training run.

Every knob a run depends on lives here, with its default and the reason for it.
`RunConfig.from_dict` is strict: an unknown key is an error naming the key, so a typo
in a workflow config or a `--settings` string never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

HEAD_NAMES = ("aap", "mip", "map", "sp")


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
    epochs: int = 100
    batch_size: int = 100  # authors' pre_batch_size
    lr: float = 1e-3
    weight_decay: float = 0.0


PRESETS: dict[str, dict[str, Any]] = {
    # The seed documents: AAP and MAP are the main tasks, MIP down-weighted.
    "seed": dict(aap_weight=1.0, mip_weight=0.2, map_weight=1.0, sp_weight=0.5, pair_loss="logsigmoid"),
    # The authors' run_pretrain.py defaults, including their squashed-difference pair loss.
    "paper": dict(aap_weight=0.2, mip_weight=1.0, map_weight=1.0, sp_weight=0.5, pair_loss="sigmoid_difference"),
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
    patience: int = 10  # early stopping on validation full-ranking NDCG@10


@dataclass
class EvalConfig:
    protocols: tuple[str, ...] = ("full", "sampled")
    exclude_history: bool = True  # full ranking: items the user already has are not ranked
    sampled_negatives: int = 99
    # Fixed apart from the run seed so that every variant and seed ranks against the same
    # 99 negatives per user: differences between runs are then paired, user by user.
    negatives_seed: int = 2020
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
            values[name] = tuple(value) if isinstance(default, tuple) and value is not None else value
    return kind(**values)


def validate(cfg: RunConfig) -> None:
    m, p, f = cfg.model, cfg.pretrain, cfg.finetune
    if m.hidden_size % m.num_heads:
        raise ValueError("model.hidden_size must be divisible by model.num_heads")
    bad = set(m.low_rank_heads) - set(HEAD_NAMES)
    if bad:
        raise ValueError(f"model.low_rank_heads: unknown head {sorted(bad)[0]!r}; expected {HEAD_NAMES}")
    if m.rank is not None and not 1 <= m.rank <= m.hidden_size:
        raise ValueError(f"model.rank must be in 1..{m.hidden_size}, got {m.rank}")
    if p.pair_loss not in ("logsigmoid", "sigmoid_difference"):
        raise ValueError(f"pretrain.pair_loss: expected logsigmoid or sigmoid_difference, got {p.pair_loss!r}")
    if p.instances not in ("prefixes", "sequences"):
        raise ValueError(f"pretrain.instances: expected prefixes or sequences, got {p.instances!r}")
    if f.loss not in ("bce", "ce"):
        raise ValueError(f"finetune.loss: expected bce or ce, got {f.loss!r}")
    bad = set(cfg.eval.protocols) - {"full", "sampled"}
    if bad:
        raise ValueError(f"eval.protocols: unknown protocol {sorted(bad)[0]!r}; expected full, sampled")


VARIANT_PATTERN = re.compile(r"^(none|full|r[1-9][0-9]*)$")


def parse_variant(variant: str) -> tuple[bool, int | None]:
    """'none' -> (no pretraining, -), 'full' -> (pretrain, dense heads), 'r16' -> (pretrain, rank 16)."""
    if not VARIANT_PATTERN.match(variant):
        raise ValueError(f"variant: expected none, full or r<rank> (e.g. r16), got {variant!r}")
    if variant == "none":
        return False, None
    if variant == "full":
        return True, None
    return True, int(variant[1:])
