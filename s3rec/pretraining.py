"""The S3Rec pretraining model and its four losses (the authors' `S3RecModel.pretrain`).

- AAP: the state at every unmasked real position against every attribute (multi-label BCE).
- MAP: the state at every masked position against every attribute (the hidden item's).
- MIP: the state at every masked position, the hidden item vs a sampled negative item.
- SP: the context (last state of the segment-masked sequence) vs the last state of the
  positive and of the negative segment input.

Losses are sums over positions / instances, as the authors compute them. Two deviations:
- the attribute logits cover 1..num_attributes. The authors also score attribute 0 (padding,
  never a target): a negative in every AAP and MAP term, whose loss trains the encoder and
  heads as well as its own row (in their Beauty checkpoint that row's norm is 11.3, the
  others' 4.2 on average), so leaving it out changes the training, not just a constant;
- the attribute losses are BCE on logits (`binary_cross_entropy_with_logits`), where the
  authors apply a sigmoid, then BCELoss: the same loss, but theirs clamps the log at -100 and
  has no gradient once a float32 sigmoid saturates (|logit| above about 17); this one keeps it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s3rec.config import HEAD_NAMES, RunConfig
from s3rec.encoder import Encoder, init_weights
from s3rec.heads import make_head
from s3rec.pretrain_batches import Batch

LOSS_NAMES = HEAD_NAMES  # ("aap", "mip", "map", "sp"); forward also returns "loss", the weighted total


class PretrainModel(nn.Module):
    def __init__(self, cfg: RunConfig, num_items: int, num_attributes: int):
        super().__init__()
        self.cfg = cfg
        d, std = cfg.model.hidden_size, cfg.model.init_std
        self.encoder = Encoder(cfg.model, num_items)
        self.attribute_embeddings = nn.Embedding(num_attributes + 1, d, padding_idx=0)
        init_weights(self.attribute_embeddings, std)
        self.heads = nn.ModuleDict(
            {name: make_head(d, cfg.model.rank if name in cfg.model.low_rank_heads else None, std) for name in HEAD_NAMES}
        )

    def encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(item_states (B, L, d), context, pos_segment, neg_segment (B, d) each: the state at the
        sequence end). The authors' four encoder passes (masked items, segment context, positive and
        negative segment) share one call: rows are independent, so this is the same computation."""
        B = batch.num_instances
        inputs = torch.cat([batch.masked_items, batch.masked_segments, batch.pos_segments, batch.neg_segments])
        item_states, ends = self.encoder.forward_ends(inputs, causal=False, num_full=B)  # (B, L, d), (3B, d)
        return (item_states, *ends.split(B))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        item_states, context, pos_segment, neg_segment = self.encode(batch)
        real_states = item_states.flatten(0, 1).index_select(0, batch.real_positions)  # (R, d), row-major
        losses = self.attribute_losses(real_states, batch)
        masked_positions = batch.real_positions.index_select(0, batch.masked_rows)  # (K,) flat indices
        losses["mip"] = self.mip_terms(real_states.index_select(0, batch.masked_rows),
                                       batch.items.flatten().index_select(0, masked_positions),
                                       batch.negative_items.flatten().index_select(0, masked_positions)).sum()
        losses["sp"] = self.segment_loss(context, pos_segment, neg_segment)
        return self.with_total(losses)

    def grid_forward(self, batch: Batch, item_attributes: torch.Tensor) -> dict[str, torch.Tensor]:
        """forward()'s losses computed at every position of the (B, L) grid, each position
        weighted 1 where it counts and 0 where it does not, instead of gathered at the positions
        that count. Every intermediate shape is then fixed by (B, L), and of the batch it reads
        only the six id matrices (build_batch still makes the index fields, which go unused
        here): with batches padded to max_len (build_batch's `length`), one step has the shapes
        of the next, as CUDA graphs need. The extra positions cost arithmetic (about 5x a
        step's FLOPs on Beauty, 3x its CPU time): runs take it only with RunConfig.compile. On an
        H200, recorded as a CUDA graph (compile: cuda-graph), it made an epoch 4.4x shorter.

        item_attributes: (num_items + 2, A) 0/1, item_attribute_table(); it replaces the
        batch's attribute pairs, whose number varies from batch to batch."""
        item_states, context, pos_segment, neg_segment = self.encode(batch)
        states = item_states.flatten(0, 1)  # (B * L, d)
        items = batch.items.flatten()
        masked = (batch.masked_items.flatten() == self.encoder.mask_id).to(states.dtype)  # masked positions are real
        unmasked = (items != 0).to(states.dtype) - masked
        attributes = self.attribute_embeddings.weight[1:]
        targets = item_attributes.index_select(0, items).to(states.dtype)  # (B * L, A)
        losses = {}
        for name, weight in (("aap", unmasked), ("map", masked)):
            logits = self.heads[name].score_all(states, attributes)
            losses[name] = F.binary_cross_entropy_with_logits(logits, targets, weight=weight[:, None], reduction="sum")
        losses["mip"] = (self.mip_terms(states, items, batch.negative_items.flatten()) * masked).sum()
        losses["sp"] = self.segment_loss(context, pos_segment, neg_segment)
        return self.with_total(losses)

    def with_total(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`losses` and their weighted sum, "loss"."""
        p = self.cfg.pretrain
        losses["loss"] = (
            p.aap_weight * losses["aap"] + p.mip_weight * losses["mip"]
            + p.map_weight * losses["map"] + p.sp_weight * losses["sp"]
        )
        return losses

    def attribute_losses(self, real_states: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """AAP at the unmasked real positions, MAP at the masked ones; logits only where they count.
        real_states: (R, d), the states at batch.real_positions."""
        attributes = self.attribute_embeddings.weight[1:]  # (A, d); 0 is padding
        targets = real_states.new_zeros(len(real_states), len(attributes))  # (R, A) multi-hot
        # The value a tensor on the device: with a Python 1.0, index_put_ copies it to the GPU
        # with a blocking copy, which made every CUDA step wait (tests/test_cuda.py, on an H200).
        targets.index_put_((batch.attribute_rows, batch.attribute_ids - 1), targets.new_ones(()))
        losses = {}
        for name, rows in (("aap", batch.unmasked_rows), ("map", batch.masked_rows)):
            logits = self.heads[name].score_all(real_states.index_select(0, rows), attributes)  # (N, A)
            losses[name] = F.binary_cross_entropy_with_logits(logits, targets.index_select(0, rows), reduction="sum")
        return losses

    def mip_terms(self, states: torch.Tensor, true_items: torch.Tensor, negative_items: torch.Tensor) -> torch.Tensor:
        """(K,) MIP loss of each state (K, d) with its true and its negative item (K,)."""
        embed, mip = self.encoder.item_embeddings, self.heads["mip"]
        return self.pair_terms(mip.score_pairs(states, embed(true_items)), mip.score_pairs(states, embed(negative_items)))

    def segment_loss(self, context: torch.Tensor, pos_segment: torch.Tensor, neg_segment: torch.Tensor) -> torch.Tensor:
        sp = self.heads["sp"]
        return self.pair_loss(sp.score_pairs(context, pos_segment), sp.score_pairs(context, neg_segment))

    def pair_loss(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """Summed loss of (positive, negative) score pairs, both written from logits."""
        return self.pair_terms(positive, negative).sum()

    def pair_terms(self, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """The loss of each (positive, negative) score pair."""
        if self.cfg.pretrain.pair_loss == "logsigmoid":
            # -[log s(s+) + log(1 - s(s-))]
            return F.softplus(-positive) + F.softplus(negative)
        # The authors: BCE(s(s(s+) - s(s-)), 1), the difference of already-squashed scores.
        return F.softplus(-(torch.sigmoid(positive) - torch.sigmoid(negative)))


def step_losses(model: PretrainModel, chunks: list[Batch]) -> dict[str, torch.Tensor]:
    """The losses of one optimisation step computed in chunks: sums, so the chunks' losses add up."""
    per_chunk = [model(chunk) for chunk in chunks]
    return {name: sum(losses[name] for losses in per_chunk) for name in per_chunk[0]}


def fixed_shape_step_losses(model: PretrainModel, item_attributes: torch.Tensor, mode: str):
    """step_losses' counterpart for fixed-shape steps (one chunk, padded to max_len): the losses
    by model.grid_forward, uncompiled (`mode` "none", a benchmark's measure of its arithmetic) or
    compiled whole with torch.compile `mode` ("eager": dynamo's eager backend, traced but not
    compiled). fullgraph: a graph break is an error, not a silent slow
    path; dynamic=False: a static graph per shape (an epoch has at most two: the full batches
    and the last one). The losses are outputs of CUDA graphs under "reduce-overhead": read or
    copy them before the next step, which overwrites them."""
    grid = model.grid_forward
    if mode != "none":
        options = {"backend": "eager"} if mode == "eager" else {"mode": mode}
        grid = torch.compile(grid, fullgraph=True, dynamic=False, **options)

    def losses(chunks: list[Batch]) -> dict[str, torch.Tensor]:
        (batch,) = chunks  # one chunk a step: iterate_batches(..., bounds=())
        if mode != "none":
            torch.compiler.cudagraph_mark_step_begin()  # this step may reuse the last one's graph memory
        return grid(batch, item_attributes)

    return losses
