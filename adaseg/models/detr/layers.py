"""DETR's transformer layers: multi-head attention with positions added to queries and keys
(never values), post-norm encoder and decoder layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections.

    forward(query (B, Lq, D), key (B, Lk, D), value (B, Lk, D), key_valid (B, Lk) bool | None)
    -> (B, Lq, D); keys with ``key_valid`` False are attended to by nobody.
    """

    def __init__(self, *, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, query, key, value, key_valid=None):
        b, lq, d = query.shape
        lk = key.shape[1]
        h = self.heads
        q = self.q_proj(query).view(b, lq, h, d // h).transpose(1, 2)
        k = self.k_proj(key).view(b, lk, h, d // h).transpose(1, 2)
        v = self.v_proj(value).view(b, lk, h, d // h).transpose(1, 2)
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d))


class FFN(nn.Module):
    """linear1 -> ReLU -> dropout -> linear2."""

    def __init__(self, *, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Post-norm self-attention + FFN (DETR's encoder layer).

    forward(x (b, n, D), pos (b, n, D), key_valid (b, n) bool | None) -> (b, n, D): the n tokens
    given attend to each other only (a paused token is not among them).
    """

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FFN(dim=dim, hidden=ffn, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x, pos, key_valid=None):
        qk = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(qk, qk, x, key_valid)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Post-norm query self-attention, cross-attention to the encoder's tokens, FFN.

    forward(tgt (B, Q, D), query_pos (Q, D) or (B, Q, D), memory (B, N, D), pos (B, N, D),
    memory_valid (B, N) bool | None) -> (B, Q, D).
    """

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim=dim, heads=heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim=dim, hidden=ffn, dropout=dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, tgt, query_pos, memory, pos, memory_valid=None):
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(qk, qk, tgt)))
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, memory_valid)
        tgt = self.norm2(tgt + self.dropout2(attn))
        return self.norm3(tgt + self.dropout3(self.ffn(tgt)))


class Decoder(nn.Module):
    """DETR's decoder: ``num_layers`` layers over object queries, a shared final LayerNorm.

    forward(query_pos (Q, D), memory (B, N, D), pos (B, N, D), memory_valid) -> (L, B, Q, D):
    the normed output of every layer (the last is the prediction, the others deep supervision).
    """

    def __init__(self, *, dim: int, heads: int, ffn: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim=dim, heads=heads, ffn=ffn, dropout=dropout)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, query_pos, memory, pos, memory_valid=None):
        b = memory.shape[0]
        query_pos = query_pos.unsqueeze(0).expand(b, -1, -1)
        tgt = torch.zeros_like(query_pos)  # DETR's queries start empty; query_pos is what they learn
        outs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, pos, memory_valid)
            outs.append(self.norm(tgt))
        return torch.stack(outs)
