"""Writing predictions to an output folder, every file atomically (:mod:`adaseg.storage.atomic`).

Layout of ``--out DIR``::

    predictions.json        COCO panoptic (images, annotations with segments_info, categories
                            with the dataset's own ids); each annotation also records the
                            image's exit, GFLOPs and paused-token counts (panoptic task)
    panoptic/NAME.png       segment ids as R + 256 G + 256^2 B (COCO panoptic PNG)
    semantic/NAME.png       class index per pixel (0..K-1, uint8; what `adaseg score semantic` reads)
    instances.json          COCO results, RLE masks, dataset category ids (instance task)
    detections.json         COCO results, boxes (image_id, category_id, bbox x y w h, score),
                            dataset category ids: every box (detection models)
    overlay/NAME.png        the image tinted by class, with a legend of the classes present
    compute/NAME.png        where the compute went (exit, GFLOPs, layers each token ran)
    compute/NAME.json       the exit, GFLOPs and the paused token positions per stage
    contact_sheet.png       up to N images side by side
    predict.json            the settings, every image's files with their sha256, the skipped files,
                            and the manifest: every file written (path -> sha256); sealed with its
                            own content hash (:func:`adaseg.storage.integrity.seal_json`)

``predict.json`` is written last: a folder holding it is a complete ``adaseg predict`` output.

The folder is the user's: ``--overwrite`` replaces it only when it is exactly what adaseg
wrote (:func:`check_out`): its ``predict.json`` verifies, and every file in it is in the
manifest with the recorded sha256 (no file added, changed, or linked in). Anything else is
refused with one line naming the file, and nothing is deleted.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adaseg.predict.result import Prediction
from adaseg.storage.atomic import atomic_write_bytes, atomic_write_json

SUMMARY = "predict.json"
MANIFEST_KEY = "manifest"


class OutFolderError(ValueError):
    """``--out`` cannot be written or replaced; ``str()`` is one line naming the path."""


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def panoptic_png(id_map: np.ndarray) -> Image.Image:
    """(H, W) segment ids -> the COCO panoptic RGB PNG image."""
    from adaseg.data.panoptic_io import id2rgb

    return Image.fromarray(id2rgb(id_map), mode="RGB")


def semantic_png(classes: np.ndarray) -> Image.Image:
    """(H, W) class indices (< 255) -> single-channel uint8 PNG image."""
    if classes.size and int(classes.max()) >= 255:
        raise ValueError("class indices must be below 255 (255 marks void)")
    return Image.fromarray(classes.astype(np.uint8), mode="L")


class PredictionWriter:
    """Writes each :class:`Prediction` as it comes (:meth:`write`) and the run's JSON files at
    the end (:meth:`finish`). ``meta``: the dataset's :class:`~adaseg.data.meta.DatasetMeta`;
    ``task``: the predictor's task; ``compute``: draw and record where compute went (adaptive settings were given);
    ``sheet``: images on the contact sheet (0: none)."""

    def __init__(self, root: str | Path, *, meta, task: str, compute: bool, sheet: int = 8):
        self.root = Path(root)
        self.task = task
        self.meta = meta
        self.compute = compute
        self.sheet = sheet
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.instance_results: list[dict] = []
        self.detection_results: list[dict] = []
        self.records: list[dict] = []
        self._sheet_preds: list[Prediction] = []
        self._next_id = 1
        self.manifest: dict[str, str] = {}  # every file written: relative path -> sha256

    def _record(self, rel: str, data: bytes) -> dict[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        self.manifest[rel] = digest
        return {"path": rel, "sha256": digest}

    def _png(self, folder: str, name: str, img: Image.Image, files: dict) -> None:
        data = png_bytes(img)
        rel = f"{folder}/{name}.png"
        atomic_write_bytes(self.root / rel, data)
        files[folder] = self._record(rel, data)

    def write(self, p: Prediction) -> dict[str, Any]:
        """Write one image's files; returns its record (as in ``predict.json``)."""
        from adaseg.predict.pictures import compute_picture, overlay

        image_id = p.image_id if p.image_id is not None else p.name
        files: dict[str, Any] = {}
        cats = self.meta.categories
        if p.panoptic is not None:
            self._png("panoptic", p.name, panoptic_png(p.panoptic), files)
        if p.task == "semantic":
            self._png("semantic", p.name, semantic_png(p.semantic), files)
        self._png("overlay", p.name, overlay(p, cats), files)
        compute = self._compute_json(p)
        if self.compute:
            self._png("compute", p.name, compute_picture(p), files)
            data = atomic_write_json(self.root / "compute" / f"{p.name}.json",
                                     {**compute, "paused_positions": [{"layer": s.layer,
                                                                       "positions": s.positions.tolist()}
                                                                      for s in p.paused]}).read_bytes()
            files["compute_json"] = self._record(f"compute/{p.name}.json", data)
        h, w = p.size
        self.images.append({"id": image_id, "file_name": Path(p.source).name if p.source else f"{p.name}.png",
                            "height": int(h), "width": int(w)})
        if p.panoptic is not None:
            self.annotations.append({"image_id": image_id, "file_name": f"{p.name}.png",
                                     "segments_info": p.segments, **compute})
        if p.instances is not None:
            from adaseg.eval.ap import masks_to_results

            if p.instances:
                masks = np.stack([r["mask"] for r in p.instances])
                self.instance_results.extend(masks_to_results(image_id, masks, [r["score"] for r in p.instances],
                                                              [r["category_id"] for r in p.instances]))
        if p.detections is not None:
            self.detection_results.extend(detection_results(image_id, p.detections))
        record = {"name": p.name, "image_id": image_id, "source": p.source, "size": [int(h), int(w)],
                  "note": p.note, "files": files, **compute}
        self.records.append(record)
        if len(self._sheet_preds) < self.sheet:
            self._sheet_preds.append(p)
        return record

    @staticmethod
    def _compute_json(p: Prediction) -> dict[str, Any]:
        return {"exit": p.exit, "exit_source": p.exit_source, "depth": p.depth, "gflops": p.gflops,
                "paused": p.paused_in_image()}

    def finish(self, settings: dict[str, Any], skipped: list[dict[str, str]], *, title: str) -> None:
        """Write the JSON files of the whole run and the contact sheet."""
        from adaseg.predict.pictures import contact_sheet

        files: dict[str, Any] = {}
        if self.annotations:
            data = atomic_write_json(self.root / "predictions.json",
                                     {"images": self.images, "annotations": self.annotations,
                                      "categories": self.meta.categories_json()}).read_bytes()
            files["predictions"] = self._record("predictions.json", data)
        if self.task == "instance":
            data = atomic_write_json(self.root / "instances.json", self.instance_results).read_bytes()
            files["instances"] = self._record("instances.json", data)
        if self.task == "detection":
            data = atomic_write_json(self.root / "detections.json", self.detection_results).read_bytes()
            files["detections"] = self._record("detections.json", data)
        if self._sheet_preds:
            data = png_bytes(contact_sheet(self._sheet_preds, self.meta.categories, title=title))
            atomic_write_bytes(self.root / "contact_sheet.png", data)
            files["contact_sheet"] = self._record("contact_sheet.png", data)
        from adaseg.storage.integrity import seal_json

        atomic_write_json(self.root / SUMMARY, seal_json({
            "settings": settings, "files": files, "images": self.records, "skipped": skipped,
            "counts": {"predicted": len(self.records), "skipped": len(skipped)},
            MANIFEST_KEY: dict(sorted(self.manifest.items()))}))


def detection_results(image_id, detections: list[dict]) -> list[dict]:
    """A prediction's detections (``box`` xyxy pixel edges) as COCO results: ``{"image_id",
    "category_id", "bbox": [x, y, w, h], "score"}``, what pycocotools' ``loadRes`` reads."""
    from adaseg.eval.box_ap import boxes_to_results

    if not detections:
        return []
    return boxes_to_results(image_id, [d["box"] for d in detections], [d["score"] for d in detections],
                            [d["category_id"] for d in detections])


# ---------------------------------------------------------------------- the user's --out
def check_out(out: str | Path, overwrite: bool) -> None:
    """Refuse an ``--out`` adaseg must not write (:class:`OutFolderError`, one line): a
    symbolic link (refused, never followed: replacing the folder would replace the link, and
    writing through it would put files where the user did not name), a file, a folder holding
    anything without ``--overwrite``, and with ``--overwrite`` anything that is not exactly
    an earlier ``adaseg predict`` output (:func:`verify_own_output`)."""
    path = Path(out)
    if path.is_symlink():
        raise OutFolderError(f"--out {out} is a symbolic link (to {os.readlink(path)}): adaseg predict replaces "
                             "its output folder as a whole and does not follow links; give the folder itself")
    if path.exists() and not path.is_dir():
        raise OutFolderError(f"--out {out} is a file, not a folder")
    if not path.exists() or not any(path.iterdir()):
        return
    if not overwrite:
        raise OutFolderError(f"--out {out} exists and holds files: pass --overwrite to replace an earlier "
                             "`adaseg predict` output, or choose another folder")
    verify_own_output(path)


def _manifest(folder: Path) -> dict[str, str] | None:
    """The verified manifest of ``folder/predict.json``; None when it is not adaseg's (absent,
    a link, not JSON, no manifest, or not matching its content hash)."""
    import json

    from adaseg.storage.integrity import HASH_KEY, IntegrityError, check_json

    summary = folder / SUMMARY
    if summary.is_symlink() or not summary.is_file():
        return None
    try:
        data = json.loads(summary.read_bytes())
        if not isinstance(data, dict) or HASH_KEY not in data or not check_json(data, path=summary, hint=""):
            return None
    except (OSError, ValueError, IntegrityError):
        return None
    manifest = data.get(MANIFEST_KEY)
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        return None
    return manifest


def is_prediction_output(folder: str | Path) -> bool:
    """Whether ``folder`` holds an ``adaseg predict`` output (a verified ``predict.json``)."""
    return _manifest(Path(folder)) is not None


def verify_own_output(folder: str | Path) -> None:
    """Raise :class:`OutFolderError` unless ``folder`` is exactly an ``adaseg predict`` output:
    its ``predict.json`` verifies against its content hash and lists a manifest, and every
    entry of the folder is a plain file or folder, every file is in the manifest with the
    sha256 recorded there (or is ``predict.json`` itself)."""
    folder = Path(folder)
    manifest = _manifest(folder)
    hint = "refusing to replace it (move it away, or choose another --out)"
    if manifest is None:
        why = "no predict.json" if not (folder / SUMMARY).exists() else (
            f"its {SUMMARY} was not written by adaseg predict, was changed since, or predates manifests")
        raise OutFolderError(f"--out {folder} holds files adaseg predict did not write ({why}): {hint}")
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            entry = Path(root) / name
            rel = entry.relative_to(folder).as_posix()
            if entry.is_symlink():
                raise OutFolderError(f"{entry} is a link adaseg predict did not write: {hint}")
            if entry.is_dir():
                if not any(k.startswith(rel + "/") for k in manifest):
                    raise OutFolderError(f"{entry} is a folder adaseg predict did not write: {hint}")
                continue
            if rel == SUMMARY:
                continue
            if not entry.is_file() or rel not in manifest:
                raise OutFolderError(f"{entry} was not written by adaseg predict (not in its {SUMMARY}): {hint}")
            if hashlib.sha256(entry.read_bytes()).hexdigest() != manifest[rel]:
                raise OutFolderError(f"{entry} was changed since adaseg predict wrote it: {hint}")
