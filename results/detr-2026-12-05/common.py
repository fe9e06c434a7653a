"""Scratch helpers: train detr_tiny directly (model + criterion) and score box AP."""
import math, time, sys, json
import torch
from adaseg.data import build_dataset, collate
from adaseg.models.registry import create_model
from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.models.detr.criterion import boxes_from_masks
from adaseg.models.detr.boxes import cxcywh_to_xyxy
from adaseg.eval.box_ap import box_ap, boxes_to_results

THING = (0, 1, 2, 3, 4)

def gt_and_results(model, ds, idx, exit=None, bs=16):
    """COCO gt (boxes from masks in the eval-transformed image) + results for images idx."""
    model.eval()
    images, anns, res = [], [], []
    with torch.no_grad():
        for s in range(0, len(idx), bs):
            b = collate([ds[i] for i in idx[s:s + bs]])
            out = model(b["images"], b["padding_mask"], AdaptiveSettings(exits=exit) if exit else AdaptiveSettings())
            preds = model.postprocess(out, b["sizes"])
            for j, (t, (h, w)) in enumerate(zip(b["targets"], b["sizes"])):
                iid = s + j + 1
                images.append({"id": iid, "height": h, "width": w})
                bt = boxes_from_masks(t, THING, (h, w))
                xyxy = cxcywh_to_xyxy(bt["boxes"]) * torch.tensor([w, h, w, h])
                for k, (bb, l) in enumerate(zip(xyxy.tolist(), bt["labels"].tolist())):
                    anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": l + 1,
                                 "bbox": [bb[0], bb[1], bb[2] - bb[0], bb[3] - bb[1]],
                                 "area": (bb[2] - bb[0]) * (bb[3] - bb[1]), "iscrowd": 0})
                p = preds[j]
                keep = p["labels"] < 5
                res += boxes_to_results(iid, p["boxes"][keep], p["scores"][keep], p["labels"][keep] + 1)
    model.train()
    return {"images": images, "annotations": anns, "categories": [{"id": c + 1, "name": str(c)} for c in THING]}, res

def ap(model, ds, idx, exit=None):
    gt, res = gt_and_results(model, ds, idx, exit)
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        r = box_ap(gt, res)
    return r["AP"], r["AP50"]
