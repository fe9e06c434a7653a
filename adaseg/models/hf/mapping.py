"""Rename a HuggingFace ``Mask2FormerForUniversalSegmentation`` state dict to adaseg's names.

Every HF key is matched by exactly one rule below (or dropped on purpose, with a reason);
a key no rule knows is an error, never skipped. Names on disk are the legacy ones that
``save_pretrained`` writes and the public checkpoints carry (``attention.self.query``,
``intermediate.dense``, ...); transformers 5's in-memory Swin names (``attention.q_proj``,
``mlp.fc1``, ``swin.encoder.``) are accepted too and normalised first.

Structural differences handled here:

* HF Swin keeps separate query/key/value projections; adaseg (timm layout) has one ``qkv``
  linear: rows are concatenated q, k, v. Same for the decoder self-attention (HF
  ``q_proj``/``k_proj``/``v_proj`` -> ``nn.MultiheadAttention.in_proj_*``).
* HF Swin puts patch merging at the *end* of stage i; timm at the start of stage i + 1.
* HF ``hidden_states_norms.stage1..4`` are the per-output norms; stage4 is adaseg's final
  ``norm`` (the ``s1`` output), the others ``out_norms.s4/s3/s2``.
* Dropped: ``criterion.empty_weight`` (a loss buffer), SwinModel's unused final
  ``layernorm`` (the backbone never applies it) and ``relative_position_index`` buffers
  (derived from the window; checked against adaseg's own before dropping).
"""

from __future__ import annotations

import re

import torch

from adaseg.models.backbones.swin import relative_position_index

_BB = "model.pixel_level_module.encoder."
_PD = "model.pixel_level_module.decoder."
_TM = "model.transformer_module."
_SHOW = 5


class HFWeightsError(ValueError):
    """HF weights that do not map onto the adaseg model (unknown, missing or mis-shaped keys)."""


# transformers 5 in-memory Swin names -> the legacy names on disk
_V5_ALIASES = (
    (re.compile(r"^swin\.(encoder|embeddings)\."), r"\1."),
    (re.compile(r"\.attention\.q_proj\."), ".attention.self.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.self.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.self.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.attention\.relative_position_bias\.relative_position_(bias_table|index)$"),
     r".attention.self.relative_position_\1"),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
)

_BLOCK = r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\."
# (pattern on the backbone-relative key, adaseg name template)
_BACKBONE_RULES = (
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", "patch_embed.proj.{0}"),
    (r"^embeddings\.norm\.(weight|bias)$", "patch_embed.norm.{0}"),
    (_BLOCK + r"layernorm_before\.(weight|bias)$", "layers.{0}.blocks.{1}.norm1.{2}"),
    (_BLOCK + r"layernorm_after\.(weight|bias)$", "layers.{0}.blocks.{1}.norm2.{2}"),
    (_BLOCK + r"attention\.self\.relative_position_bias_table$", "layers.{0}.blocks.{1}.attn.relative_position_bias_table"),
    (_BLOCK + r"attention\.output\.dense\.(weight|bias)$", "layers.{0}.blocks.{1}.attn.proj.{2}"),
    (_BLOCK + r"intermediate\.dense\.(weight|bias)$", "layers.{0}.blocks.{1}.mlp.fc1.{2}"),
    (_BLOCK + r"output\.dense\.(weight|bias)$", "layers.{0}.blocks.{1}.mlp.fc2.{2}"),
    (r"^hidden_states_norms\.stage4\.(weight|bias)$", "norm.{0}"),
    (r"^hidden_states_norms\.stage3\.(weight|bias)$", "out_norms.s2.{0}"),
    (r"^hidden_states_norms\.stage2\.(weight|bias)$", "out_norms.s3.{0}"),
    (r"^hidden_states_norms\.stage1\.(weight|bias)$", "out_norms.s4.{0}"),
)
_QKV = re.compile(_BLOCK + r"attention\.self\.(query|key|value)\.(weight|bias)$")
_MERGE = re.compile(r"^encoder\.layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$")
_REL_INDEX = re.compile(_BLOCK + r"attention\.self\.relative_position_index$")

_ENC = r"^encoder\.layers\.(\d+)\."
_PIXEL_RULES = (
    (r"^input_projections\.(\d+)\.([01])\.(weight|bias)$", "input_proj.{0}.{1}.{2}"),
    (r"^level_embed$", "transformer.level_embed"),
    (_ENC + r"self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)\.(weight|bias)$",
     "transformer.encoder.layers.{0}.self_attn.{1}.{2}"),
    (_ENC + r"self_attn_layer_norm\.(weight|bias)$", "transformer.encoder.layers.{0}.norm1.{1}"),
    (_ENC + r"fc1\.(weight|bias)$", "transformer.encoder.layers.{0}.linear1.{1}"),
    (_ENC + r"fc2\.(weight|bias)$", "transformer.encoder.layers.{0}.linear2.{1}"),
    (_ENC + r"final_layer_norm\.(weight|bias)$", "transformer.encoder.layers.{0}.norm2.{1}"),
    (r"^mask_projection\.(weight|bias)$", "mask_features.{0}"),
    (r"^adapter_1\.0\.weight$", "adapter_1.weight"),
    (r"^adapter_1\.1\.(weight|bias)$", "adapter_1.norm.{0}"),
    (r"^layer_1\.0\.weight$", "layer_1.weight"),
    (r"^layer_1\.1\.(weight|bias)$", "layer_1.norm.{0}"),
)

_DEC = r"^decoder\.layers\.(\d+)\."
_DECODER_RULES = (
    (r"^queries_embedder\.weight$", "query_embed.weight"),  # positional part of the queries
    (r"^queries_features\.weight$", "query_feat.weight"),  # content part
    (r"^level_embed\.weight$", "level_embed.weight"),
    (r"^input_projections\.(\d+)\.(weight|bias)$", "input_proj.{0}.{1}"),
    (_DEC + r"cross_attn\.(in_proj_weight|in_proj_bias)$", "transformer_cross_attention_layers.{0}.multihead_attn.{1}"),
    (_DEC + r"cross_attn\.out_proj\.(weight|bias)$", "transformer_cross_attention_layers.{0}.multihead_attn.out_proj.{1}"),
    (_DEC + r"cross_attn_layer_norm\.(weight|bias)$", "transformer_cross_attention_layers.{0}.norm.{1}"),
    (_DEC + r"self_attn\.out_proj\.(weight|bias)$", "transformer_self_attention_layers.{0}.self_attn.out_proj.{1}"),
    (_DEC + r"self_attn_layer_norm\.(weight|bias)$", "transformer_self_attention_layers.{0}.norm.{1}"),
    (_DEC + r"fc1\.(weight|bias)$", "transformer_ffn_layers.{0}.linear1.{1}"),
    (_DEC + r"fc2\.(weight|bias)$", "transformer_ffn_layers.{0}.linear2.{1}"),
    (_DEC + r"final_layer_norm\.(weight|bias)$", "transformer_ffn_layers.{0}.norm.{1}"),
    (r"^decoder\.layernorm\.(weight|bias)$", "decoder_norm.{0}"),
    (r"^decoder\.mask_predictor\.mask_embedder\.(\d+)\.0\.(weight|bias)$", "mask_embed.layers.{0}.{1}"),
)
_SELF_QKV = re.compile(_DEC + r"self_attn\.(q|k|v)_proj\.(weight|bias)$")

_COMPILED = {
    section: tuple((re.compile(p), t) for p, t in rules)
    for section, rules in (("backbone", _BACKBONE_RULES), ("pixel", _PIXEL_RULES), ("decoder", _DECODER_RULES))
}
_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}


def _normalise_backbone_key(rest: str) -> str:
    for pattern, repl in _V5_ALIASES:
        rest = pattern.sub(repl, rest)
    return rest


def _apply(rules, rest: str) -> str | None:
    for pattern, template in rules:
        m = pattern.match(rest)
        if m:
            return template.format(*m.groups())
    return None


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def map_state_dict(sd: dict[str, torch.Tensor], *, window: int, source: str) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """HF Mask2Former state dict -> adaseg ``Mask2Former`` state dict.

    Args:
        sd: HF tensors by name.
        window: the Swin window size (to check stored ``relative_position_index`` buffers).
        source: file name for error lines.

    Returns:
        (adaseg tensors by name, {adaseg name: HF name(s) it came from}, HF keys dropped on purpose).

    Raises:
        HFWeightsError: a key no rule knows, an incomplete q/k/v triple, or a stored
            ``relative_position_index`` that differs from the window's.
    """
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    parts: dict[str, dict[int, tuple[str, torch.Tensor]]] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    expected_index = None

    def put(name: str, hf_key: str, value: torch.Tensor) -> None:
        if name in out:
            raise HFWeightsError(f"{source}: {hf_key} and {origin[name]} both map to {name}")
        out[name], origin[name] = value, hf_key

    for key, value in sd.items():
        if key == "criterion.empty_weight":
            dropped.append(key)
        elif key.startswith("class_predictor."):
            put("predictor.class_embed." + key[len("class_predictor."):], key, value)
        elif key.startswith(_BB):
            rest = _normalise_backbone_key(key[len(_BB):])
            if rest.startswith(("swin.layernorm.", "layernorm.")):
                dropped.append(key)  # SwinModel's final norm: SwinBackbone never applies it
                continue
            if _REL_INDEX.match(rest):
                if expected_index is None:
                    expected_index = relative_position_index(window).reshape(-1)
                if value.reshape(-1).shape != expected_index.shape or not torch.equal(value.reshape(-1).long(), expected_index):
                    raise HFWeightsError(f"{source}: {key} does not match a window of {window}")
                dropped.append(key)
                continue
            m = _QKV.match(rest)
            if m:
                stage, block, which, kind = m.groups()
                target = f"backbone.layers.{stage}.blocks.{block}.attn.qkv.{kind}"
                parts.setdefault(target, {})[_ORDER[which]] = (key, value)
                continue
            m = _MERGE.match(rest)
            if m:
                stage, mod, kind = m.groups()
                put(f"backbone.layers.{int(stage) + 1}.downsample.{mod}.{kind}", key, value)
                continue
            name = _apply(_COMPILED["backbone"], rest)
            if name is None:
                unknown.append(key)
            else:
                put("backbone." + name, key, value)
        elif key.startswith(_PD):
            name = _apply(_COMPILED["pixel"], key[len(_PD):])
            if name is None:
                unknown.append(key)
            else:
                put("pixel_decoder." + name, key, value)
        elif key.startswith(_TM):
            rest = key[len(_TM):]
            m = _SELF_QKV.match(rest)
            if m:
                layer, which, kind = m.groups()
                suffix = "in_proj_weight" if kind == "weight" else "in_proj_bias"
                target = f"predictor.transformer_self_attention_layers.{layer}.self_attn.{suffix}"
                parts.setdefault(target, {})[_ORDER[which]] = (key, value)
                continue
            name = _apply(_COMPILED["decoder"], rest)
            if name is None:
                unknown.append(key)
            else:
                put("predictor." + name, key, value)
        else:
            unknown.append(key)

    if unknown:
        raise HFWeightsError(f"{source}: {len(unknown)} keys adaseg does not know how to map: {_listed(sorted(unknown))}")
    for target, got in parts.items():
        if sorted(got) != [0, 1, 2]:
            names = [k for k, _ in got.values()]
            raise HFWeightsError(f"{source}: incomplete query/key/value set for {target} (found {_listed(names)})")
        shapes = {tuple(got[i][1].shape) for i in range(3)}
        if len(shapes) != 1:
            raise HFWeightsError(f"{source}: query/key/value shapes differ for {target}: {sorted(shapes)}")
        put(target, " + ".join(got[i][0] for i in range(3)), torch.cat([got[i][1] for i in range(3)], 0))
    return out, origin, sorted(dropped)


def check_against(model_state: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor], origin: dict[str, str], *,
                  adaseg_only: tuple[str, ...], source: str) -> list[str]:
    """Compare mapped weights with the model's own state dict.

    ``adaseg_only``: name prefixes of parameters HF checkpoints cannot have (they keep their
    initial values and are returned). Anything else missing, any extra key and any shape
    mismatch raises :class:`HFWeightsError` listing the first few.
    """
    missing = [k for k in model_state if k not in mapped and not k.startswith(adaseg_only)]
    extra = [f"{origin[k]} -> {k}" for k in mapped if k not in model_state]
    shapes = [
        f"{origin[k]} {tuple(mapped[k].shape)} -> {k} {tuple(model_state[k].shape)}"
        for k in mapped
        if k in model_state and tuple(mapped[k].shape) != tuple(model_state[k].shape)
    ]
    problems = []
    if shapes:
        problems.append(f"shape mismatch (checkpoint -> model): {_listed(shapes)}")
    if missing:
        problems.append(f"model weights missing from the checkpoint: {_listed(missing)}")
    if extra:
        problems.append(f"checkpoint weights the model lacks: {_listed(extra)}")
    if problems:
        raise HFWeightsError(f"{source} does not fit the model its config.json describes: " + "; ".join(problems))
    return sorted(k for k in model_state if k not in mapped)
