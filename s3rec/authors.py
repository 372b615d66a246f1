"""The S3Rec authors' released pretrained models, converted into this project's pretrain.pt.

Their `S3RecModel` state dict (RUCAIBox/CIKM2020-S3Rec, `reproduce/<Data>-epochs-150.pt`) holds
the same tensors as `s3rec.pretraining.PretrainModel` with dense heads, under other names; the
only change of layout is that their separate query/key/value projections are one `qkv` linear
here (rows stacked q, k, v, as SelfAttention splits them). Row 0 of the item table is padding
and its last row [MASK] in both; item and attribute ids are those of their data files, which
`scripts/prepare_data.py --format s3rec` keeps unchanged.
"""
from __future__ import annotations

import re

import torch

# Their name -> ours, for every tensor but the per-layer ones (handled by LAYER_KEYS).
TOP_KEYS = {
    "item_embeddings.weight": "encoder.item_embeddings.weight",
    "position_embeddings.weight": "encoder.position_embeddings.weight",
    "LayerNorm.weight": "encoder.input_norm.weight",
    "LayerNorm.bias": "encoder.input_norm.bias",
    "attribute_embeddings.weight": "attribute_embeddings.weight",
    **{f"{head}_norm.{p}": f"heads.{head}.{p}" for head in ("aap", "mip", "map", "sp") for p in ("weight", "bias")},
}
LAYER_KEYS = {  # item_encoder.layer.N.<theirs> -> encoder.layers.N.<ours>
    "attention.dense": "attention.out",
    "attention.LayerNorm": "attention.norm",
    "intermediate.dense_1": "feed_forward.inner",
    "intermediate.dense_2": "feed_forward.outer",
    "intermediate.LayerNorm": "feed_forward.norm",
}
LAYER_PATTERN = re.compile(r"^item_encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


def convert_state_dict(theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their state dict -> a `PretrainModel` (dense heads) state dict. Unknown or missing keys are
    errors; shapes are checked by `load_state_dict(strict=True)` and `check_shapes`."""
    ours, qkv = {}, {}
    for key, tensor in theirs.items():
        if key in TOP_KEYS:
            ours[TOP_KEYS[key]] = tensor
            continue
        match = LAYER_PATTERN.match(key)
        if not match:
            raise ValueError(f"unexpected key {key!r}: not part of the authors' S3RecModel")
        layer, module, kind = match.groups()
        if module in ("attention.query", "attention.key", "attention.value"):
            qkv.setdefault((layer, kind), {})[module.rsplit(".", 1)[1]] = tensor
        elif module in LAYER_KEYS:
            ours[f"encoder.layers.{layer}.{LAYER_KEYS[module]}.{kind}"] = tensor
        else:
            raise ValueError(f"unexpected key {key!r}: not part of the authors' S3RecModel")
    for (layer, kind), parts in qkv.items():
        missing = {"query", "key", "value"} - set(parts)
        if missing:
            raise ValueError(f"layer {layer}: attention {kind} lacks {sorted(missing)}")
        ours[f"encoder.layers.{layer}.attention.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return ours


def model_settings(theirs: dict[str, torch.Tensor]) -> dict[str, int]:
    """The model settings read off their tensors: the hidden size and the number of layers (where
    a tensor is missing, their run_pretrain.py defaults, 64 and 2; check_shapes then names it).
    The other settings of ARCHITECTURE are taken to be their defaults, which are ours: the
    number of attention heads shows in no shape, and check_shapes holds the position table to
    model.max_len."""
    embeddings = theirs.get("item_embeddings.weight")
    layers = {int(m.group(1)) for m in map(re.compile(r"^item_encoder\.layer\.(\d+)\.").match, theirs) if m}
    return {"hidden_size": int(embeddings.shape[-1]) if embeddings is not None and embeddings.dim() == 2 else 64,
            "num_layers": len(layers) or 2}


def check_shapes(theirs: dict[str, torch.Tensor], num_items: int, num_attributes: int, max_len: int) -> int:
    """Their table sizes against the prepared data set; returns the hidden size d."""
    expected = {"item_embeddings.weight": (num_items + 2, "items + 2 (padding and [MASK])"),
                "attribute_embeddings.weight": (num_attributes + 1, "attributes + 1 (padding)"),
                "position_embeddings.weight": (max_len, "model.max_len")}
    for key, (rows, meaning) in expected.items():
        if key not in theirs:
            raise ValueError(f"no {key!r}: not an S3RecModel state dict")
        if theirs[key].shape[0] != rows:
            raise ValueError(f"{key} has {theirs[key].shape[0]} rows, the prepared data set needs {rows} = {meaning}")
    return int(theirs["item_embeddings.weight"].shape[1])
