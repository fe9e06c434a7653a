"""Instance segmentation AP on masks via pycocotools' COCOeval (iouType='segm').

Ground truth is a COCO *instances* dict/JSON (``images``, ``annotations`` with RLE or
polygon ``segmentation``, ``iscrowd``, ``area``; ``categories``). For panoptic datasets
:func:`instances_from_panoptic` derives it from the panoptic GT (thing segments only, crowd
kept as ``iscrowd=1``), as detectron2 does for COCO panoptic.

Results are COCO result dicts ``{image_id, category_id, segmentation (RLE), score}``;
:func:`masks_to_results` makes them from (n, H, W) masks. Metrics are fractions (not
percent): AP, AP50, AP75, APs, APm, APl and per-category AP (NaN-free: a category with no
GT is left out, as detectron2 does).
"""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from adaseg.data.panoptic_io import DataError, load_json

_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO RLE with a str ``counts`` (JSON-able)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def masks_to_results(image_id, masks, scores, category_ids) -> list[dict]:
    """(n, H, W) bool masks, (n,) scores, (n,) dataset category ids -> COCO result dicts."""
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    category_ids = np.asarray(category_ids.detach().cpu() if isinstance(category_ids, torch.Tensor) else category_ids)
    if not (len(masks) == len(scores) == len(category_ids)):
        raise ValueError(f"masks_to_results: {len(masks)} masks, {len(scores)} scores, {len(category_ids)} categories")
    return [{"image_id": image_id, "category_id": int(c), "segmentation": encode_mask(m), "score": float(s)}
            for m, s, c in zip(masks, scores, category_ids)]


def instances_from_panoptic(gt_json, gt_folder: str) -> dict:
    """COCO instances dict (thing categories) from a COCO-panoptic JSON (path or dict) + PNG folder."""
    from adaseg.data.panoptic_io import check_ids_match, read_panoptic_png

    from adaseg.data.panoptic_io import check_panoptic_json

    name = "panoptic ground truth" if isinstance(gt_json, dict) else str(gt_json)
    data = gt_json if isinstance(gt_json, dict) else load_json(str(gt_json), what="panoptic annotation")
    check_panoptic_json(data, name, need_images=False)
    things = [c for c in data["categories"] if int(c.get("isthing", 0)) == 1]
    thing_ids = {int(c["id"]) for c in things}
    images = data.get("images") or [{"id": a["image_id"]} for a in data["annotations"]]
    anns = []
    sizes = {}  # COCOeval needs every image's height and width; the PNGs have them
    for a in data["annotations"]:
        png = os.path.join(gt_folder, a["file_name"])
        id_map = read_panoptic_png(png)
        sizes[a["image_id"]] = id_map.shape
        check_ids_match(id_map, a["segments_info"], png)
        for s in a["segments_info"]:
            if int(s["category_id"]) not in thing_ids:
                continue
            m = id_map == int(s["id"])
            rle = encode_mask(m)
            anns.append({"id": len(anns) + 1, "image_id": a["image_id"], "category_id": int(s["category_id"]),
                         "segmentation": rle, "area": float(m.sum()), "bbox": [float(v) for v in
                                                                              mask_utils.toBbox(rle).tolist()],
                         "iscrowd": int(s.get("iscrowd", 0))})
    imgs = []
    for img in images:
        entry = {"id": img["id"]}
        if img["id"] in sizes:
            entry.update(height=int(sizes[img["id"]][0]), width=int(sizes[img["id"]][1]))
        elif "height" in img:
            entry.update(height=img["height"], width=img["width"])
        imgs.append(entry)
    return {"images": imgs, "annotations": anns, "categories": things}


def load_results(path: str) -> list[dict]:
    """A COCO results JSON (a list of dicts); DataError naming ``path`` otherwise."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: results file not found")
    try:
        with open(path) as f:
            results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: malformed JSON ({exc})") from None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise DataError(f"{path}: expected a JSON list of COCO result objects")
    return results


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    # pycocotools 2.0.10's loadRes reads dataset["info"] unguarded (KeyError without it, found
    # on a GPU machine that had that version); COCO files may leave "info" out.
    coco.dataset = {"info": {}, "licenses": [], **dataset}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def instance_ap(gt, results: list[dict], *, gt_name: str = "ground truth", results_name: str = "results",
                check: bool = True, keep_matches: bool = False) -> dict:
    """COCOeval(segm) of ``results`` against ``gt`` (instances dict or JSON path).

    ``check``: validate both first (:mod:`adaseg.eval.coco_checks`: every field COCOeval reads,
    every RLE decoded), raising DataError naming ``gt_name`` / ``results_name`` and the entry;
    off only for inputs adaseg made itself.

    Returns {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'per_class': {category_id: AP}} as
    fractions; -1 from COCOeval (no GT of that area range) is returned as None. With
    ``keep_matches`` also ``'matches'``: this run's per-image matching as
    :class:`adaseg.eval.ap_matches.ApMatches` over ``gt['images']`` in their order, from which
    AP / AP50 / AP75 of any multiset of those images can be recomputed.
    """
    from adaseg.eval.coco_checks import check_instances_gt, check_results

    if not isinstance(gt, dict):
        gt_name = str(gt)
        gt = load_json(gt_name, what="instances ground-truth")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DataError(f"{gt_name}: missing top-level list {key!r}")
    if check:
        check_instances_gt(gt, gt_name)
        check_results(results, gt, name=results_name, gt_name=gt_name)
    return run_cocoeval(gt, results, iou_type="segm", keep_matches=keep_matches)


def run_cocoeval(gt: dict, results: list[dict], *, iou_type: str, keep_matches: bool = False) -> dict:
    """COCOeval (``iou_type`` "segm" or "bbox") of ``results`` against the checked instances dict
    ``gt``: the six summary figures as fractions (-1 -> None), ``per_class`` AP, and with
    ``keep_matches`` the per-image matching (see :func:`instance_ap`). Mask and box AP share it."""
    gt_coco = _coco(gt)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            dt_coco = gt_coco.loadRes([dict(r) for r in results])
    else:
        # loadRes cannot take an empty list; an empty detection set scores 0 on every class with GT
        dt_coco = _coco({"images": gt["images"], "annotations": [], "categories": gt["categories"]})
    ev = COCOeval(gt_coco, dt_coco, iouType=iou_type)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {name: (None if v < 0 else float(v)) for name, v in zip(_STAT_NAMES, ev.stats[:6])}
    precision = ev.eval["precision"]  # (T, R, K, A, M)
    per_class = {}
    for k, cid in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        if p.size:
            per_class[int(cid)] = float(p.mean())
    out["per_class"] = per_class
    if keep_matches:
        from adaseg.eval.ap_matches import ApMatches

        out["matches"] = ApMatches.from_cocoeval(ev, [img["id"] for img in gt["images"]])
    return out
