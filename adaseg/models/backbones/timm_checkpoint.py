"""Load a timm-format backbone checkpoint into an adaseg backbone, strictly.

What is accepted (each step explicit, nothing guessed):

* file: ``.safetensors`` (read with safetensors) or a torch file (``.pth``, ``.pt``, ``.bin``;
  read with ``torch.load(weights_only=True)``). A torch file may wrap the weights in a
  ``"state_dict"``, ``"model"`` or ``"state_dict_ema"`` entry (training checkpoints) and may
  carry DDP's ``module.`` prefix; both are unwrapped.
* dropped on purpose: the classifier keys the trunk does not have (``fc.*`` for ResNet,
  ``head.*`` for Swin and ViT: ``model.timm_head_prefixes``) and Swin's derived buffers
  ``relative_position_index`` / ``attn_mask`` that older (original Microsoft / timm < 0.9)
  checkpoints store; they are recomputed from the window size.
* remapped: original-layout Swin checkpoints (``layers.{i}.downsample`` at the *end* of stage
  i, i = 0..2) are moved to timm's current layout (start of stage i + 1).
* adapted: ``model.adapt_timm_state_dict`` when the model has one (ViT resamples ``pos_embed``).
* optional: BatchNorm ``num_batches_tracked`` (not every exporter keeps it) and keys under
  ``model.non_timm_prefixes`` (e.g. Swin's ``out_norms.``), which keep their initial values.

Everything else must match exactly: any missing key, unexpected key or shape mismatch raises
:class:`CheckpointMismatchError` naming the file and the first few offending keys.
"""

from __future__ import annotations

import os
import pickle
import re

import torch
from torch import nn

__all__ = ["CheckpointMismatchError", "load_timm_checkpoint", "read_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema")
_DERIVED_SUFFIXES = ("relative_position_index", "attn_mask")
_SHOW = 5


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat ``name -> tensor`` dict from a safetensors or torch file (see module doc)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(path, device="cpu")
        except SafetensorError as err:
            raise CheckpointMismatchError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Garbage, or pickled objects beyond tensors/containers (refused by weights_only).
            raise CheckpointMismatchError(
                f"{path}: not a torch state-dict file that loads with weights_only=True "
                "(corrupt, or it pickles objects other than tensors and containers)"
            ) from None
        except (RuntimeError, EOFError) as err:
            first = str(err).strip().split(". ")[0][:200] or type(err).__name__
            raise CheckpointMismatchError(f"{path}: not a readable torch state-dict file ({first})") from None
        if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            wrapper = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if wrapper is None:
                raise CheckpointMismatchError(
                    f"{path}: not a state dict (top-level keys {sorted(obj)[:_SHOW]}; expected tensors "
                    f"or one of {list(_WRAPPER_KEYS)})"
                )
            obj = obj[wrapper]
        if not isinstance(obj, dict):
            raise CheckpointMismatchError(f"{path}: holds a {type(obj).__name__}, not a state dict")
        sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _swin_old_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Old layout: stage i ends with the merge feeding stage i + 1; timm now starts stage i + 1 with it.
    if not any(k.startswith("layers.0.downsample.") for k in sd):
        return sd
    pattern = re.compile(r"^layers\.(\d+)\.downsample\.")
    return {pattern.sub(lambda m: f"layers.{int(m.group(1)) + 1}.downsample.", k): v for k, v in sd.items()}


def _fmt(items: list[str], total: int) -> str:
    more = f" (+{total - len(items)} more)" if total > len(items) else ""
    return ", ".join(items) + more


def load_timm_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Load a timm checkpoint file into ``model`` (an adaseg backbone), strictly.

    Returns a report: ``{"dropped": keys removed on purpose, "initialised": model keys the
    checkpoint cannot have and that keep their initial values}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatchError: missing/unexpected keys or shape mismatches (first few listed).
    """
    path = os.fspath(path)
    sd = read_state_dict(path)
    head_prefixes = tuple(getattr(model, "timm_head_prefixes", ()))
    extra_prefixes = tuple(getattr(model, "non_timm_prefixes", ()))
    dropped = sorted(k for k in sd if k.startswith(head_prefixes) or k.rsplit(".", 1)[-1] in _DERIVED_SUFFIXES)
    sd = {k: v for k, v in sd.items() if k not in set(dropped)}
    if any(k.startswith("layers.") and ".blocks." in k for k in sd):
        sd = _swin_old_layout(sd)
    adapt = getattr(model, "adapt_timm_state_dict", None)
    if adapt is not None:
        sd = adapt(sd)

    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked") or k.startswith(extra_prefixes)}
    missing = [k for k in own if k not in sd and k not in optional]
    unexpected = sorted(k for k in sd if k not in own)
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt(missing[:_SHOW], len(missing))}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt(unexpected[:_SHOW], len(unexpected))}")
        if shapes:
            parts.append(f"shape mismatches: {_fmt(shapes[:_SHOW], len(shapes))}")
        raise CheckpointMismatchError(
            f"{path}: checkpoint does not match {type(model).__name__}; " + "; ".join(parts)
        )
    initialised = sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked"))
    # Fill the optional keys from the model itself so the final load can be strict.
    full = {**{k: own[k] for k in optional if k not in sd}, **sd}
    model.load_state_dict(full, strict=True)
    return {"dropped": dropped, "initialised": initialised}
