"""A training step never makes the host wait for the device.

On a GPU, an op whose output size depends on tensor values (boolean-mask indexing, nonzero,
masked_select) or that reads a value back (.item(), float(tensor)) stops the host until the
GPU has caught up; a profile of the pretraining step on an H100 found 13 nonzero calls and
23 synchronisations per step, and the host, not the GPU, set the pace. These ops are the same
on CPU, so a dispatch-level recorder on CPU catches them without a GPU: every op a step
dispatches is checked, forward, backward and optimizer step.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from s3rec import evaluation
from s3rec.config import RunConfig
from s3rec.encoder import Encoder
from s3rec.finetuning import iterate_batches as finetune_batches
from s3rec.finetuning import score_function, step_loss
from s3rec.pretrain_batches import build_instances, item_attribute_table
from s3rec.pretrain_batches import iterate_batches as pretrain_batches
from s3rec.pretraining import PretrainModel, step_losses
from s3rec.training import adam

SYNCHRONISING = ("nonzero", "masked_select", "_local_scalar_dense", "unique", "repeat_interleave", "item")


class SyncRecorder(TorchDispatchMode):
    """Records the ops that would synchronise a CUDA stream with the host."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCHRONISING or (name.startswith("index") and _has_bool_index(args)):
            self.found.append(str(func))
        return func(*args, **(kwargs or {}))


def _has_bool_index(args) -> bool:
    """index / index_put with a boolean index tensor: a nonzero() inside."""
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def test_the_recorder_sees_what_synchronises():
    x = torch.randn(4, 3, requires_grad=True)
    with SyncRecorder() as recorder:
        x[x[:, 0] > 0].sum().backward()
        torch.nonzero(x)
        x.sum().item()
    # the mask in forward and in backward, nonzero, item
    assert [op.split(".")[1] for op in recorder.found] == ["index", "index_put", "nonzero", "_local_scalar_dense"]
    with SyncRecorder() as recorder:
        x.index_select(0, torch.tensor([0, 2])).sum().backward()
    assert recorder.found == []


def corpus(seed=0, users=40, items=50, attributes=9):
    rng = np.random.default_rng(seed)
    train = [rng.choice(items, size=n, replace=False) + 1 for n in rng.integers(2, 25, size=users)]
    item_attributes = [np.zeros(0, np.int64)] + [
        np.sort(rng.choice(attributes, size=rng.integers(0, 3), replace=False) + 1) for _ in range(items)]
    return train, item_attributes, items, attributes


def config(preset: str, rank) -> RunConfig:
    return RunConfig.from_dict({"model": {"hidden_size": 16, "num_heads": 2, "num_layers": 2, "max_len": 20,
                                          "rank": rank}, "pretrain": {"preset": preset}})


def test_a_pretraining_step_does_not_synchronise():
    train, item_attributes, items, attributes = corpus()
    for preset, rank in (("paper", None), ("seed", 4)):
        cfg = config(preset, rank)
        model = PretrainModel(cfg, items, attributes)
        optimizer = adam(model.parameters(), lr=1e-3, weight_decay=0.0)
        instances = build_instances(train, item_attributes, items, attributes, max_len=cfg.model.max_len)
        step = next(pretrain_batches(instances, 16, np.random.default_rng(0), mask_prob=0.2, batching="padded"))
        assert len(step) > 1  # several chunks: their sum is checked too
        with SyncRecorder() as recorder:
            losses = step_losses(model, [chunk.to("cpu") for chunk in step])
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
        assert recorder.found == [], f"{preset}: {recorder.found}"


def test_a_fixed_shape_pretraining_step_does_not_synchronise():
    """PretrainModel.grid_forward on a batch padded to max_len (benchmarks/speed.py --fixed-shapes)."""
    train, item_attributes, items, attributes = corpus()
    cfg = config("paper", None)
    model = PretrainModel(cfg, items, attributes)
    optimizer = adam(model.parameters(), lr=1e-3, weight_decay=0.0)
    instances = build_instances(train, item_attributes, items, attributes, max_len=cfg.model.max_len)
    table = item_attribute_table(instances)
    (batch,) = next(pretrain_batches(instances, 16, np.random.default_rng(0), mask_prob=0.2, batching="padded",
                                     bounds=(), length=cfg.model.max_len))
    with SyncRecorder() as recorder:
        loss = model.grid_forward(batch.to("cpu"), table)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert recorder.found == []


def test_a_finetuning_step_does_not_synchronise():
    train, _, items, _ = corpus()
    encoder = Encoder(config("paper", None).model, items)
    optimizer = adam(encoder.parameters(), lr=1e-3, weight_decay=0.0)
    for loss_name in ("bce", "ce"):
        step = next(finetune_batches(train, train, items, 20, 16, np.random.default_rng(0), "padded"))
        assert len(step) > 1
        with SyncRecorder() as recorder:
            loss = step_loss(encoder, [chunk.to("cpu") for chunk in step], loss_name)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        assert recorder.found == [], f"{loss_name}: {recorder.found}"


def test_a_ranking_pass_does_not_synchronise_before_its_last_batch(monkeypatch):
    """evaluation._batch_ranks counting as it does on a GPU (torch, not numpy): no op whose
    output size depends on values, nothing read back; the ranks are read once, after it."""
    train, _, items, _ = corpus()
    monkeypatch.setattr(evaluation, "_full_ranks",
                        lambda scores, target, excluded: evaluation._full_counts_on_device(scores >= target, excluded))
    monkeypatch.setattr(evaluation, "_count_per_row", lambda mask: mask.sum(1))
    encoder = Encoder(config("paper", None).model, items).eval()
    histories, targets = [s[:-1] for s in train], np.array([s[-1] for s in train])
    negatives = evaluation.sample_negatives(train, items, n=5, seed=0)
    with SyncRecorder() as recorder:
        parts, nan_targets = evaluation._batch_ranks(score_function(encoder, "cpu"), histories, targets, items, True,
                                                     negatives, 16, ("full", "sampled"))
    assert recorder.found == []
    assert len(parts["full"]) == len(parts["sampled"]) == len(nan_targets) == 3
