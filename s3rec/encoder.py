"""The S3Rec sequence encoder: item + position embeddings and post-LN transformer layers.

Follows the authors' code (a SASRec/BERT-style encoder): embeddings summed, LayerNorm and
dropout on the input, L layers of multi-head self-attention and a GELU feed-forward of width
4d, each followed by dropout, a residual connection and LayerNorm (post-LN), init N(0, 0.02).

Sequences are LEFT-padded (0 = padding). The authors pad every sequence to 50 items, so the
last real item always gets position id 49. Batches here are padded only to their own longest
sequence; position ids are offset so that the last column is still position max_len - 1, and
every real position sees exactly what it would see in a length-50 batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s3rec.config import ModelConfig


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_dropout = cfg.attention_dropout
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # x: (B, L, d); allowed: (B, 1, L, L) bool, True where a query may attend to a key
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attention_dropout if self.training else 0.0
        )  # (B, h, L, d/h)
        context = context.transpose(1, 2).reshape(B, L, d)
        return self.norm(x + self.dropout(self.out(context)))


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inner = nn.Linear(cfg.hidden_size, 4 * cfg.hidden_size)
        self.outer = nn.Linear(4 * cfg.hidden_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.outer(F.gelu(self.inner(x)))))


class Encoder(nn.Module):
    """Maps left-padded item id sequences (B, L) to contextual states (B, L, d).

    Item ids: 0 = padding, 1..num_items = items, num_items + 1 = [MASK].
    """

    def __init__(self, cfg: ModelConfig, num_items: int):
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.mask_id = num_items + 1
        self.item_embeddings = nn.Embedding(num_items + 2, cfg.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.input_norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)
        self.input_dropout = nn.Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"attention": SelfAttention(cfg), "feed_forward": FeedForward(cfg)})
            for _ in range(cfg.num_layers)
        )
        self.apply(lambda module: init_weights(module, cfg.init_std))

    def forward(self, items: torch.Tensor, causal: bool) -> torch.Tensor:
        B, L = items.shape
        if L > self.cfg.max_len:
            raise ValueError(f"sequence length {L} exceeds model.max_len {self.cfg.max_len}")
        positions = torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=items.device)
        x = self.item_embeddings(items) + self.position_embeddings(positions)  # (B, L, d)
        x = self.input_dropout(self.input_norm(x))
        allowed = attention_mask(items, causal)
        for layer in self.layers:
            x = layer["feed_forward"](layer["attention"](x, allowed))
        return x


def attention_mask(items: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) bool: real keys only (and earlier-or-same keys when causal).

    A padding query would otherwise have no key at all under the causal mask (all -inf
    -> NaN); it may attend to itself. Its output is never used, and it cannot reach a
    real position because padding keys stay masked for real queries.
    """
    B, L = items.shape
    real_keys = (items != 0)[:, None, None, :]  # (B, 1, 1, L)
    allowed = real_keys.expand(B, 1, L, L)
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
    return allowed | torch.eye(L, dtype=torch.bool, device=items.device)


def init_weights(module: nn.Module, std: float) -> None:
    """The authors' init: N(0, std) for linear and embedding weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def left_pad(sequences: list, max_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Left-pad (and truncate to the last max_len items) to the batch's own longest length."""
    length = min(max(len(s) for s in sequences), max_len)
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tail = seq[-length:] if len(seq) else seq
        if len(tail):
            out[row, length - len(tail):] = torch.as_tensor(tail, dtype=torch.long)
    return out.to(device)
