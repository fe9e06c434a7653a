"""Which dataset a run-reading step (derive, eval) uses: the run's own (``config.json``'s
``data``) or another one given with ``--data``.

Another dataset is accepted only when its classes are the parent's: the same categories
(dataset ids, names and thing/stuff flags, in order), because the parent's class logits are
indexed by the training dataset's contiguous ids. Scoring a parent on a COCO-format copy of
its data, or on another folder with the same categories, is legitimate; anything else would
silently score class k of one dataset against class k of another.
"""

from __future__ import annotations

from adaseg.data.panoptic_io import DataError


def _describe(categories) -> list[tuple[int, str, bool]]:
    return [(int(c.id), str(c.name), bool(c.isthing)) for c in categories]


def category_difference(ours, theirs) -> str | None:
    """None when the two category tuples match, else a short phrase saying what differs."""
    a, b = _describe(ours), _describe(theirs)
    if a == b:
        return None
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} categories"
    for x, y in zip(a, b):
        if x != y:
            kind = lambda t: "thing" if t[2] else "stuff"  # noqa: E731 - local formatting only
            return (f"category {x[0]} {x[1]!r} ({kind(x)}) vs category {y[0]} {y[1]!r} ({kind(y)})")
    raise AssertionError("unreachable: equal lengths and equal items mean equal lists")


def build_run_dataset(config: dict, spec: str | None, split: str):
    """The dataset a step reads: ``spec`` (``--data``) or, when None, the run's own.

    Returns ``(dataset, spec_used)``. Raises DataError (one line naming both datasets and what
    differs) when ``spec`` names a dataset whose categories are not the run's.
    """
    from adaseg.data import build_dataset

    if "data" not in config:
        raise DataError("the run's config.json records no dataset ('data'): train-parent writes it; restore it, "
                        "or train again in a new --run")
    run_spec = str(config["data"])
    if spec is None or spec == run_spec:
        return build_dataset(run_spec, split, train=False), run_spec
    dataset = build_dataset(spec, split, train=False)
    try:
        reference = build_dataset(run_spec, split, train=False).meta
    except DataError as exc:
        raise DataError(f"--data {spec!r}: cannot check its classes against the run's dataset {run_spec!r}, "
                        f"which does not load ({exc})") from None
    diff = category_difference(reference.categories, dataset.meta.categories)
    if diff is None and reference.task != dataset.meta.task:
        diff = f"task {reference.task} vs {dataset.meta.task}"
    if diff is not None:
        raise DataError(f"--data {spec!r} has other classes than the run's dataset {run_spec!r} "
                        f"({diff}): the parent can only be scored on data with its own categories")
    return dataset, spec


IMAGES_KEY = "images_sha256"  # where a report records the identity of the images it scored


def images_identity(dataset, n: int) -> str:
    """SHA-256 hex digest naming the first ``n`` images of ``dataset`` and their labels exactly:
    per record (in order) its fields (image id, segments of the panoptic JSON, ...; canonical
    JSON) and the bytes of its image and label files. Two evaluations share it only when they scored the same
    images with the same ground truth, whatever the ids or the ``--data`` path say (a folder
    regenerated with other images under the same path, or two folders whose ids coincide,
    get other digests). Reads every file once (~1 GB/s on local disk; the 5000 COCO val
    images: about a second)."""
    import dataclasses
    import hashlib
    import json

    if not 1 <= n <= len(dataset):
        raise ValueError(f"images_identity: n={n} is outside 1..{len(dataset)}")
    digest = hashlib.sha256(b"adaseg-images-v1\n")
    for record in dataset.records[:n]:
        # every field of the record but its file paths (the files are hashed by content)
        head = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
                if f.name not in ("image_path", "label_path")}
        digest.update(json.dumps(head, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8") + b"\n")
        for path in (record.image_path, record.label_path):
            digest.update((_file_digest(path) if path else b"-") + b"\n")
    return digest.hexdigest()


def _file_digest(path) -> bytes:
    import hashlib

    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc})") from None
    return h.hexdigest().encode("ascii")


def sizes_differ(dataset, n: int) -> bool:
    """Whether the first ``n`` images of ``dataset`` are not all of one size (read from each
    image file's header, not decoded). Batched evaluation pads a batch to its largest image,
    so only then can the batch size move the figures."""
    from PIL import Image

    sizes = set()
    for record in dataset.records[:n]:
        try:
            with Image.open(record.image_path) as im:
                sizes.add(im.size)
        except OSError as exc:
            raise DataError(f"{record.image_path} cannot be read ({exc})") from None
        if len(sizes) > 1:
            return True
    return False
