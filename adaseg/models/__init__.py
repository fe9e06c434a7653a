"""adaseg models: backbones, Mask2Former, Segmenter, DETR, gate, weight import."""


def from_hf_mask2former(path_or_dir, **kwargs):
    """Build an adaseg Mask2Former from a HF transformers checkpoint directory; see
    :func:`adaseg.models.hf.importer.from_hf_mask2former` (imported here lazily)."""
    from adaseg.models.hf.importer import from_hf_mask2former as _load

    return _load(path_or_dir, **kwargs)


def from_hf_detr(path_or_dir, **kwargs):
    """Build an adaseg DETR from a HF transformers ``DetrForObjectDetection`` directory; see
    :func:`adaseg.models.hf.detr_import.from_hf_detr` (imported here lazily)."""
    from adaseg.models.hf.detr_import import from_hf_detr as _load

    return _load(path_or_dir, **kwargs)
