"""Segmenter (ViT encoder + mask transformer) with the adaptive-encoder contract.

The ViT's layers are the adaptive encoder (K = depth, exits numbered 1..K):

* **exit plan**: each image leaves the encoder after its exit layer; images that have left
  are dropped from the batch, so later layers run on fewer images. A batch with mixed exits
  gives per image what that image alone at that exit gives.
* **pause plan** (PAUMER): after layer l, a 1x1 linear auxiliary decoder (``aux_decoders[l-1]``,
  one per layer 1..K-1) scores every still-active patch token; the ``ratio`` of them with the
  lowest entropy (``pause_mode="entropy"``) or uniformly random ones (``"random"``, PAUMER's
  baseline) are *removed* from the token set: later layers neither update them nor attend to
  them. The class token is never paused. At the exit an assembler puts every paused token
  back in place, with the features it had when it paused, and the final LayerNorm and the
  mask decoder see the full token grid.

Forward::

    out = model(images, padding_mask=None, *, exits=None, pause=None, pause_mode="entropy",
                all_exits=False, generator=None)

Output dict keys:

* ``sem_logits``: (B, K_cls, H, W) semantic logits at the input resolution (Segmenter's
  class masks upsampled bilinearly); with ``all_exits`` they live in ``out["exits"][k]``.
* ``exits``: ``{k: {"sem_logits": ...}}`` for every k in ``model.exits`` (``all_exits=True``;
  one encoder pass, shared layers computed once, pausing applied).
* ``gate_features``: (B, D) mean of the patch tokens after embedding (patch projection +
  positions), over non-padding patches: the gate's input, computed before any layer runs.
* ``exit_plan``: (B,) int64 exit per image (None with ``all_exits``).
* ``aux_logits``: list of :class:`~adaseg.models.pause_selection.AuxRecord` (layer, rows,
  token_idx (b, n) patch positions, logits (b, n, K_cls)) at each pause stage, collected in
  training mode for PAUMER's auxiliary loss (weight 0.1, ``model.build_criterion()``).
* ``paused``: list of (layer, rows (b,), paused patch positions (b, m)) per pause stage.
* ``token_shapes``: (1, 2) int64 patch grid (h, w); ``input_size``: (H, W); ``padding_mask``.

Images larger than the training crop: :func:`segmenter_inference_sliding` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from adaseg.models.adaptive import PausePlan, normalise_exits
from adaseg.models.backbones.vit import VisionTransformer
from adaseg.models.gate import Gate, GateHost, exit_plan
from adaseg.models.pause_selection import AuxRecord, check_pause_mode, select_pause
from adaseg.models.segmenter_decoder import MaskTransformer
from adaseg.models.segmenter_sliding import segmenter_inference_sliding
from adaseg.ops import pausing

__all__ = ["Segmenter", "SegmenterEmbedding", "SegmenterEncoding", "segmenter_inference_sliding", "token_validity"]


@dataclass
class SegmenterEmbedding:
    """Result of :meth:`Segmenter.embed`: ``tokens`` (B, 1 + N, D) class token first, with
    positions; ``grid`` (h, w); ``valid`` (B, N) bool or None; ``gate_features`` (B, D)."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    valid: torch.Tensor | None
    gate_features: torch.Tensor


@dataclass
class SegmenterEncoding:
    """Result of :meth:`Segmenter.encode`.

    ``tokens``: (B, N, D) final-normed patch tokens of each image at its exit (None with
    all_exits); ``per_exit``: {k: (B, N, D)} with all_exits; ``grid``: (h, w) with N = h*w;
    ``valid``: (B, N) bool non-padding patches or None; ``gate_features``: (B, D);
    ``aux`` / ``paused``: as the output keys ``aux_logits`` / ``paused``.
    """

    tokens: torch.Tensor | None
    grid: tuple[int, int]
    valid: torch.Tensor | None
    gate_features: torch.Tensor
    per_exit: dict[int, torch.Tensor] = field(default_factory=dict)
    aux: list[AuxRecord] = field(default_factory=list)
    paused: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)


def token_validity(padding_mask: torch.Tensor | None, patch: int, grid: tuple[int, int]) -> torch.Tensor | None:
    """(B, H, W) bool (True on padding) -> (B, h*w) bool, True where a patch holds any real pixel.

    Pixels added to reach whole patches count as padding. None in, None out; also None when
    every patch is real (the attention then needs no mask).
    """
    if padding_mask is None:
        return None
    h, w = grid
    real = (~padding_mask).float()[:, None]
    real = F.pad(real, (0, w * patch - real.shape[-1], 0, h * patch - real.shape[-2]))
    valid = F.max_pool2d(real, patch).flatten(1) > 0
    return None if bool(valid.all()) else valid


class Segmenter(GateHost, nn.Module):
    """ViT encoder + Segmenter mask transformer, adaptive in depth (exits) and width (pausing).

    Args:
        encoder: a :class:`VisionTransformer` (timm names; see ``adaseg.models.backbones``).
        num_classes: semantic classes K_cls.
        dec_layers: mask-transformer layers (2).
        dec_dim: decoder width (default: the encoder width, as in Segmenter).
        dec_heads: decoder heads (default: dec_dim // 64, at least 1, as in Segmenter).
        dec_drop_path: stochastic depth in the decoder.
        exits: potential exits returned by ``all_exits`` (default 2..K).
    """

    def __init__(
        self,
        *,
        encoder: VisionTransformer,
        num_classes: int,
        dec_layers: int = 2,
        dec_dim: int | None = None,
        dec_heads: int | None = None,
        dec_drop_path: float = 0.0,
        exits: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        depth = encoder.depth
        exits = tuple(range(2, depth + 1)) if exits is None else tuple(int(e) for e in exits)
        if not exits or any(not 1 <= e <= depth for e in exits) or list(exits) != sorted(set(exits)):
            raise ValueError(f"exits must be increasing layers in 1..{depth}, got {exits}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        dim = encoder.embed_dim
        dec_dim = dim if dec_dim is None else dec_dim
        dec_heads = max(1, dec_dim // 64) if dec_heads is None else dec_heads
        self.encoder = encoder
        self.num_classes = num_classes
        self.exits = exits
        self.patch_size = encoder.patch_size
        self.decoder = MaskTransformer(num_classes=num_classes, in_dim=dim, d_model=dec_dim, n_layers=dec_layers,
                                       n_heads=dec_heads, drop_path_rate=dec_drop_path)
        # aux_decoders[l-1] reads the patch tokens after layer l (pausing after layer K is moot).
        self.aux_decoders = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(depth - 1))
        for m in self.aux_decoders:
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        self.gate: Gate | None = None

    @property
    def depth(self) -> int:
        """K, the number of encoder layers."""
        return self.encoder.depth

    @property
    def gate_channels(self) -> int:
        """C of ``gate_features``."""
        return self.encoder.embed_dim

    # ------------------------------------------------------------------ encoder

    def embed(self, images: torch.Tensor, padding_mask: torch.Tensor | None = None) -> SegmenterEmbedding:
        """Patch embedding + positions, patch validity and the gate's features (no layer runs)."""
        tokens, grid = self.encoder.embed(images)
        valid = token_validity(padding_mask, self.patch_size, grid)
        patches = tokens[:, 1:]
        if valid is None:
            gate_features = patches.mean(1)
        else:
            weight = valid.to(patches.dtype).unsqueeze(-1)
            gate_features = (patches * weight).sum(1) / weight.sum(1).clamp(min=1)
        return SegmenterEmbedding(tokens=tokens, grid=grid, valid=valid, gate_features=gate_features)

    def encode(
        self,
        images: torch.Tensor | SegmenterEmbedding,
        padding_mask: torch.Tensor | None = None,
        *,
        exits: torch.Tensor | None = None,
        pause: PausePlan | None = None,
        pause_mode: str = "entropy",
        all_exits: tuple[int, ...] | None = None,
        collect_aux: bool = False,
        generator: torch.Generator | None = None,
    ) -> SegmenterEncoding:
        """Run the adaptive ViT encoder.

        Args:
            images: (B, 3, H, W), or the :meth:`embed` of them; padding_mask: (B, H, W) bool
                True on padding, or None (ignored when ``images`` is an embedding).
            exits: (B,) int64 exit layer per image in 1..K (None: K), ignored with all_exits.
            pause: pause plan or None; pause_mode: "entropy" | "random".
            all_exits: record the assembled tokens after each of these layers (every image
                runs to the deepest), or None.
            collect_aux: keep auxiliary-decoder logits (with gradient) at pause stages.
            generator: RNG for ``pause_mode="random"`` (default: torch's global RNG).
        """
        check_pause_mode(pause_mode)
        if pause is not None:
            pause.check_depth(self.depth)
        vit = self.encoder
        emb = images if isinstance(images, SegmenterEmbedding) else self.embed(images, padding_mask)
        tokens, grid, valid, gate_features = emb.tokens, emb.grid, emb.valid, emb.gate_features
        b, n_all, dim = tokens.shape
        device = tokens.device
        cls, x = tokens[:, :1], tokens[:, 1:]
        if all_exits is None:
            exits = normalise_exits(exits, b, self.depth, device=device)
            depth = int(exits.max())
        else:
            depth = max(all_exits)
        result = SegmenterEncoding(tokens=None, grid=grid, valid=valid, gate_features=gate_features)

        rows = torch.arange(b, device=device)  # batch index of each image still inside
        positions: torch.Tensor | None = None  # (b, n) grid positions of active patches; None = all
        buf: torch.Tensor | None = None  # (b, N, D) paused patches in place (allocated at first pause)
        valid_r, exits_r = valid, exits
        done_rows: list[torch.Tensor] = []
        done_tokens: list[torch.Tensor] = []

        for layer_no in range(1, depth + 1):
            key_valid = None
            if valid_r is not None:
                active_valid = valid_r if positions is None else torch.gather(valid_r, 1, positions)
                key_valid = torch.cat([active_valid.new_ones(active_valid.shape[0], 1), active_valid], dim=1)
            y = vit.blocks[layer_no - 1](torch.cat([cls, x], dim=1), key_valid)
            cls, x = y[:, :1], y[:, 1:]

            if all_exits is None:
                leaving = exits_r == layer_no
                if bool(leaving.any()):
                    done_rows.append(rows[leaving])
                    done_tokens.append(self._assemble(buf, positions, x, leaving))
                    stay = ~leaving
                    if not bool(stay.any()):
                        break
                    keep = stay.nonzero().squeeze(1)
                    rows, cls, x, exits_r = rows[keep], cls[keep], x[keep], exits_r[keep]
                    valid_r = None if valid_r is None else valid_r[keep]
                    positions = None if positions is None else positions[keep]
                    buf = None if buf is None else buf[keep]
            elif layer_no in all_exits:
                result.per_exit[layer_no] = vit.norm(self._assemble(buf, positions, x, None))

            ratio = None if pause is None else pause.ratio_after(layer_no)
            if ratio is not None and layer_no < depth:
                x, positions, buf = self._pause(layer_no, ratio, x, positions, buf, rows, valid_r, pause_mode,
                                                collect_aux, generator, result)

        if all_exits is None:
            order = torch.cat(done_rows)
            done = torch.cat(done_tokens)
            result.tokens = vit.norm(done.new_zeros(b, n_all - 1, dim).index_copy(0, order, done))
        return result

    @staticmethod
    def _assemble(buf, positions, x, select):
        """Full (b, N, D) patch map of the (selected) active images: paused rows from ``buf``."""
        if select is not None:
            x = x[select]
        if positions is None:
            return x
        if select is not None:
            buf, positions = buf[select], positions[select]
        return pausing.assemble(buf, positions, x)

    def _pause(self, layer_no, ratio, x, positions, buf, rows, valid_r, pause_mode, collect_aux, generator, result):
        """Pause ``ratio`` of the active patches ``x`` (b, n, D); return kept tokens, their
        positions and the buffer with the paused ones filed in place."""
        sel = select_pause(
            layer=layer_no,
            ratio=ratio,
            tokens=x,
            positions=positions,
            rows=rows,
            decoder=self.aux_decoders[layer_no - 1],
            pause_mode=pause_mode,
            padding=None if valid_r is None else ~valid_r,
            collect_aux=collect_aux,
            generator=generator,
        )
        if sel.aux is not None:
            result.aux.append(sel.aux)
        if buf is None:  # first pause: every patch is active, so x is the full (b, N, D) map
            buf = x.new_zeros(x.shape)
        buf = pausing.assemble(buf, sel.paused_at, pausing.gather_tokens(x, sel.paused_local))
        result.paused.append((layer_no, rows, sel.paused_at))
        return sel.kept, sel.kept_at, buf

    # ------------------------------------------------------------------ forward

    def forward(
        self,
        images: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        *,
        exits=None,
        pause: PausePlan | None = None,
        pause_mode: str = "entropy",
        all_exits: bool = False,
        generator: torch.Generator | None = None,
    ) -> dict:
        """See the module docstring for the output keys.

        Args:
            images: (B, 3, H, W) normalised images.
            padding_mask: (B, H, W) bool True on padding, or None.
            exits: None (K) | int | (B,) per-image exit layers | "gate" (``self.gate``
                decides per image from ``gate_features``); ignored with ``all_exits``.
            pause: pause plan or None; pause_mode: "entropy" | "random".
            all_exits: decode at every exit in ``self.exits`` from one encoder pass.
            generator: RNG for random pausing.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        b, _, h, w = images.shape
        if padding_mask is not None and tuple(padding_mask.shape) != (b, h, w):
            raise ValueError(f"padding_mask must be {(b, h, w)}, got {tuple(padding_mask.shape)}")
        emb = self.embed(images, padding_mask)
        plan = None
        if not all_exits:
            plan = exit_plan(exits, gate=self.gate, gate_features=emb.gate_features, batch_size=b,
                             depth=self.depth, device=images.device)
        enc = self.encode(emb, exits=plan, pause=pause, pause_mode=pause_mode,
                          all_exits=self.exits if all_exits else None, collect_aux=self.training,
                          generator=generator)
        out = {
            "gate_features": enc.gate_features,
            "exit_plan": plan,
            "aux_logits": enc.aux,
            "paused": enc.paused,
            "token_shapes": torch.tensor([enc.grid], dtype=torch.long, device=images.device),
            "input_size": (h, w),
            "padding_mask": padding_mask,
        }
        if all_exits:
            out["exits"] = {k: {"sem_logits": self.decode(enc.per_exit[k], enc.grid, (h, w), enc.valid)} for k in self.exits}
        else:
            out["sem_logits"] = self.decode(enc.tokens, enc.grid, (h, w), enc.valid)
        return out

    def decode(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int],
               valid: torch.Tensor | None = None) -> torch.Tensor:
        """(B, h*w, D) encoder patch tokens -> (B, K_cls, H, W) logits at input size ``size``.

        Masks are upsampled bilinearly to the patch-padded size and cropped to ``size``, as
        Segmenter does.
        """
        masks = self.decoder(tokens, grid, valid)
        p = self.patch_size
        masks = F.interpolate(masks, size=(grid[0] * p, grid[1] * p), mode="bilinear", align_corners=False)
        return masks[:, :, : size[0], : size[1]]

    # ------------------------------------------------------------------ training / inference helpers

    def build_criterion(self, *, aux_weight: float = 0.1):
        """Pixel cross-entropy (255 ignored) + PAUMER's auxiliary loss weighted ``aux_weight``
        (see :class:`~adaseg.models.segmenter_criterion.SegmenterCriterion`)."""
        from adaseg.models.segmenter_criterion import SegmenterCriterion

        return SegmenterCriterion(num_classes=self.num_classes, patch_size=self.patch_size, aux_weight=aux_weight)

    def postprocess(self, out: dict, image_sizes, *, task: str = "semantic", output_sizes=None) -> list:
        """Per-image (h, w) int64 argmax maps (Segmenter is semantic-only).

        ``image_sizes``: B x (h, w) valid sizes (crops of the padded input); ``output_sizes``:
        optional B x (h', w') to resize the logits to (bilinear) before the argmax.
        """
        if task != "semantic":
            raise ValueError(f"Segmenter predicts semantic segmentation only, got task={task!r}")
        if "sem_logits" not in out:
            raise ValueError("postprocess needs a single-exit output (pick out['exits'][k] for all_exits runs)")
        logits = out["sem_logits"]
        if len(image_sizes) != logits.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {logits.shape[0]}")
        results = []
        for i, (h, w) in enumerate(image_sizes):
            lg = logits[i : i + 1, :, : int(h), : int(w)].float()
            if output_sizes is not None and tuple(output_sizes[i]) != (int(h), int(w)):
                lg = F.interpolate(lg, size=tuple(output_sizes[i]), mode="bilinear", align_corners=False)
            results.append(lg[0].argmax(0))
        return results
