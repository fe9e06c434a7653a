"""Mask2Former's masked-attention transformer decoder (same module names as the original
``MultiScaleMaskedTransformerDecoder``): per layer, masked cross-attention to one feature
level (cycling lowest resolution first), self-attention, FFN; predictions before the first
layer and after every layer (deep supervision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.mask2former.position import sine_position


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention over queries. forward(tgt (B, Q, C), query_pos (B, Q, C))."""

    def __init__(self, *, d_model: int, nhead: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        out = self.self_attn(q, k, value=tgt, need_weights=False)[0]
        return self.norm(tgt + self.dropout(out))


class CrossAttentionLayer(nn.Module):
    """Post-norm masked cross-attention from queries to one level's tokens.

    forward(tgt (B, Q, C), memory (B, S, C), attn_mask (B*heads, Q, S) bool True = blocked,
    pos (B, S, C), query_pos (B, Q, C)) -> (B, Q, C).
    """

    def __init__(self, *, d_model: int, nhead: int, dropout: float):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, memory, attn_mask, pos, query_pos):
        out = self.multihead_attn(tgt + query_pos, memory + pos, value=memory, attn_mask=attn_mask, need_weights=False)[0]
        return self.norm(tgt + self.dropout(out))


class FFNLayer(nn.Module):
    """Post-norm two-layer ReLU MLP. forward(tgt (B, Q, C)) -> (B, Q, C)."""

    def __init__(self, *, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(tgt))))))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between (DETR's MLP; parameters ``layers.N``)."""

    def __init__(self, *, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Masked-attention decoder.

    Args:
        in_channels: channels of the pixel-decoder levels (projected if != hidden_dim).
        num_classes: classes (a "no object" logit is added).
        hidden_dim: query channels.
        num_queries: learnable queries.
        nheads, dim_feedforward, dec_layers: layer settings (9 layers cycle 3 levels).
        mask_dim: channels of the mask features / mask embeddings.
        dropout: attention / FFN dropout (0 in Mask2Former).
        mask_threshold: sigmoid probability below which a query may not attend a token (0.5).
    """

    num_levels = 3

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        mask_dim: int,
        dropout: float = 0.0,
        mask_threshold: float = 0.5,
    ):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.mask_threshold = mask_threshold
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(d_model=hidden_dim, nhead=nheads, dropout=dropout) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(d_model=hidden_dim, nhead=nheads, dropout=dropout) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(d_model=hidden_dim, dim_feedforward=dim_feedforward, dropout=dropout) for _ in range(dec_layers)
        )
        for layer in (*self.transformer_self_attention_layers, *self.transformer_cross_attention_layers, *self.transformer_ffn_layers):
            for p in layer.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_levels):
            if in_channels != hidden_dim:
                conv = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
                nn.init.kaiming_uniform_(conv.weight, a=1)
                nn.init.constant_(conv.bias, 0)
                self.input_proj.append(conv)
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(input_dim=hidden_dim, hidden_dim=hidden_dim, output_dim=mask_dim, num_layers=3)

    def forward(
        self,
        features: list[torch.Tensor],
        mask_features: torch.Tensor,
        level_masks: list[torch.Tensor] | None = None,
    ) -> dict:
        """
        Args:
            features: 3 x (B, C, h_l, w_l) pixel-decoder levels, lowest resolution first.
            mask_features: (B, mask_dim, H4, W4).
            level_masks: 3 x (B, h_l, w_l) bool True on padding, or None.

        Returns:
            dict(pred_logits (B, Q, K+1), pred_masks (B, Q, H4, W4), aux_outputs: a list of
            ``dec_layers`` dicts with the same two keys, from the queries before each layer).
        """
        b = mask_features.shape[0]
        srcs, poss, pads, sizes = [], [], [], []
        for i in range(self.num_levels):
            x = features[i]
            h, w = x.shape[-2:]
            pad = level_masks[i] if level_masks is not None else None
            pos_mask = pad if pad is not None else torch.zeros(b, h, w, dtype=torch.bool, device=x.device)
            sizes.append((h, w))
            poss.append(sine_position(pos_mask, self.hidden_dim).to(x.dtype).flatten(2).transpose(1, 2))
            src = self.input_proj[i](x).flatten(2) + self.level_embed.weight[i][None, :, None]
            srcs.append(src.transpose(1, 2))
            pads.append(None if pad is None else pad.flatten(1))

        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)
        classes, masks = [], []
        cls, msk, attn_mask = self._predict(output, mask_features, sizes[0], pads[0])
        classes.append(cls)
        masks.append(msk)
        for i in range(self.num_layers):
            lvl = i % self.num_levels
            output = self.transformer_cross_attention_layers[i](output, srcs[lvl], attn_mask, poss[lvl], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            nxt = (i + 1) % self.num_levels
            cls, msk, attn_mask = self._predict(output, mask_features, sizes[nxt], pads[nxt])
            classes.append(cls)
            masks.append(msk)
        return {
            "pred_logits": classes[-1],
            "pred_masks": masks[-1],
            "aux_outputs": [{"pred_logits": c, "pred_masks": m} for c, m in zip(classes[:-1], masks[:-1])],
        }

    def _predict(self, output, mask_features, target_size, key_padding):
        """Class logits, mask logits and the next layer's attention mask.

        Returns (B, Q, K+1), (B, Q, H4, W4), (B*heads, Q, h*w) bool (True = blocked).
        """
        decoded = self.decoder_norm(output)
        logits = self.class_embed(decoded)
        embed = self.mask_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", embed, mask_features)
        small = F.interpolate(masks, size=target_size, mode="bilinear", align_corners=False)
        blocked = (small.sigmoid().flatten(2) < self.mask_threshold).detach()
        if key_padding is not None:
            pad = key_padding[:, None, :].expand_as(blocked)
            blocked = blocked | pad
        else:
            pad = torch.zeros_like(blocked)
        # a query that blocks every (valid) token would attend nothing: let it attend all valid tokens
        full = blocked.all(-1, keepdim=True)
        blocked = torch.where(full, pad, blocked)
        blocked = blocked.repeat_interleave(self.num_heads, dim=0)
        return logits, masks, blocked
