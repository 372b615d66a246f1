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


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout, drawing uniform numbers instead of Bernoulli ones.

    Same distribution of outputs; on CPU about three times faster than F.dropout, whose
    Bernoulli sampling was a fifth of a pretraining step (see benchmarks/README.md). On a GPU it is
    F.dropout, one fused kernel each way instead of five: there a step is paced by its number
    of kernels, not by their arithmetic (benchmarks/gpu/).
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.is_cuda:
            return F.dropout(x, self.p, training=True)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype) * (1.0 / (1.0 - self.p))
        return x * keep


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_dropout = Dropout(cfg.attention_dropout)
        self.dropout = Dropout(cfg.hidden_dropout)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=1e-12)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, last_query_only: bool = False) -> torch.Tensor:
        """x: (B, L, d); allowed: (B, 1, L, L) bool, True where a query may attend to a key.

        With last_query_only, only the last position's output is computed: (B, 1, d).
        """
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if last_query_only:
            q, allowed, x = q[:, :, -1:], allowed[:, :, -1:], x[:, -1:]
        context = self.attend(q, k, v, allowed)  # (B, h, Lq, d/h)
        context = context.transpose(1, 2).reshape(B, q.shape[2], d)
        return self.norm(x + self.dropout(self.out(context)))

    def attend(self, q, k, v, allowed) -> torch.Tensor:
        p = self.attention_dropout.p if self.training else 0.0
        if p > 0 and not q.is_cuda:
            # Spelled out so that the attention weights go through the fast dropout; SDPA's own
            # dropout falls back to this same computation with Bernoulli sampling on CPU. On a
            # GPU, SDPA drops the same weights inside its fused kernel.
            return self.attend_spelled_out(q, k, v, allowed)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)

    def attend_spelled_out(self, q, k, v, allowed) -> torch.Tensor:
        """attend() as matmul, softmax and dropout: the same distribution as SDPA's."""
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return self.attention_dropout(weights) @ v


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.inner = nn.Linear(cfg.hidden_size, 4 * cfg.hidden_size)
        self.outer = nn.Linear(4 * cfg.hidden_size, cfg.hidden_size)
        self.dropout = Dropout(cfg.hidden_dropout)
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
        self.input_dropout = Dropout(cfg.hidden_dropout)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"attention": SelfAttention(cfg), "feed_forward": FeedForward(cfg)})
            for _ in range(cfg.num_layers)
        )
        self.apply(lambda module: init_weights(module, cfg.init_std))

    def forward(self, items: torch.Tensor, causal: bool) -> torch.Tensor:
        """(B, L) ids -> (B, L, d) states at every position."""
        x, allowed = self._embed(items, causal)
        for layer in self.layers:
            x = layer["feed_forward"](layer["attention"](x, allowed))
        return x

    def forward_ends(self, items: torch.Tensor, causal: bool, num_full: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """All states of the first `num_full` rows (num_full, L, d), and only the sequence-end
        state of the other rows (B - num_full, d).

        Equal to forward() sliced (tested); the top layer skips the queries nobody reads,
        which is a third of the work for a 2-layer encoder (SP contexts, ranking).
        """
        x, allowed = self._embed(items, causal)
        *lower, top = self.layers
        for layer in lower:
            x = layer["feed_forward"](layer["attention"](x, allowed))
        full = top["feed_forward"](top["attention"](x[:num_full], allowed[:num_full]))
        ends = top["feed_forward"](top["attention"](x[num_full:], allowed[num_full:], last_query_only=True))
        return full, ends[:, 0]

    def _embed(self, items: torch.Tensor, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
        B, L = items.shape
        if L > self.cfg.max_len:
            raise ValueError(f"sequence length {L} exceeds model.max_len {self.cfg.max_len}")
        positions = torch.arange(self.cfg.max_len - L, self.cfg.max_len, device=items.device)
        x = self.item_embeddings(items) + self.position_embeddings(positions)  # (B, L, d)
        return self.input_dropout(self.input_norm(x)), attention_mask(items, causal)


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
