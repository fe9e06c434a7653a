"""A DETR checkpoint whose head is indexed by COCO category id (facebook/detr-resnet-50's layout:
``id2label`` 0..90 with ``N/A`` slots) scored, predicted and fine-tuned on ``coco-det:`` data
that numbers a subset of those categories contiguously (adaseg.runs.class_match).

The checkpoint is a tiny random transformers ``DetrForObjectDetection`` whose ``id2label`` is
COCO's first 14 ids (``N/A`` at 0 and 12, as in the public checkpoint); the dataset holds 4 of
them with their COCO ids, listed out of order. Oracles, independent of the mapping code:

* the model's raw heads (softmax over all classes without no-object, argmax, boxes scaled to the
  image), each label mapped by hand with :data:`HAND` (model class -> COCO id; others dropped)
  == ``predict``'s detections.json, and ``eval``'s AP figures == pycocotools COCOeval of those
  hand results against the instances JSON (whose boxes are made from some of those detections,
  so AP is not 0);
* a dataset category the model does not have, or whose id contradicts the COCO-id layout, is
  refused in one line with nothing written;
* ``train-parent --init`` picks the class-head rows (and the auxiliary decoders' rows) by hand.

Skipped without transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from recipe_testing import invoke, invoke_json, snapshot

transformers = pytest.importorskip("transformers", reason="transformers (test extra) is not installed")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

# facebook/detr-resnet-50's id2label, ids 0..13 (index = COCO category id; unused ids are "N/A")
ID2LABEL = {0: "N/A", 1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
            8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 12: "N/A", 13: "stop sign"}
# the dataset: 4 of them with COCO's ids, out of order (contiguous: person 0, car 1, boat 2, stop sign 3)
CATEGORIES = [{"id": 13, "name": "stop sign"}, {"id": 1, "name": "person"}, {"id": 9, "name": "Boat"},
              {"id": 3, "name": "car"}]
HAND = {1: 1, 3: 3, 9: 9, 13: 13}  # model class -> dataset category id, by hand (every other class dropped)
SIZE = (36, 48)  # every image this size: batches have no padding, so batch size does not move the heads
_SPEC = dict(backbone=dict(embedding_size=8, hidden_sizes=[8, 16, 16, 24], depths=[1, 1, 1, 1], layer_type="basic"),
             d_model=16, encoder_layers=3, decoder_layers=2, heads=2, ffn=24, num_queries=12)


def _hf_detr(seed: int = 1):
    """A random transformers DETR with :data:`ID2LABEL`, every float perturbed (no zero init)."""
    s = _SPEC
    bb = transformers.ResNetConfig(out_features=["stage4"], **s["backbone"])
    cfg = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=bb, d_model=s["d_model"],
        encoder_layers=s["encoder_layers"], decoder_layers=s["decoder_layers"], encoder_attention_heads=s["heads"],
        decoder_attention_heads=s["heads"], encoder_ffn_dim=s["ffn"], decoder_ffn_dim=s["ffn"],
        num_queries=s["num_queries"], id2label=dict(ID2LABEL))
    torch.manual_seed(seed)
    model = transformers.DetrForObjectDetection(cfg).eval()
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5) if name.endswith("running_var") else t.add_(torch.randn_like(t) * 0.2)
        # a random class head picks one class for every query and image: centre its logits on a
        # probe image, so that images (and queries) land on different classes
        model.class_labels_classifier.weight.normal_(0.0, 3.0)
        probe = (torch.rand(1, 3, 800, 1066, generator=torch.Generator().manual_seed(0)) - 0.45) / 0.226
        model.class_labels_classifier.bias.sub_(model(pixel_values=probe).logits[0].mean(0))
    return model


def _write(root: Path, annotations: list[dict], categories=CATEGORIES, n: int = 6) -> str:
    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images = [{"id": i + 1, "file_name": f"im{i}.png", "height": SIZE[0], "width": SIZE[1]} for i in range(n)]
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir(exist_ok=True)
        for img in images:
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(root / f"{split}2017" / img["file_name"])
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return f"coco-det:{root}"


def _raw_detections(ckpt: Path, spec: str) -> list[tuple[int, int, float, list[float]]]:
    """(image id, raw model class, score, box xywh at the image's size) of every query, from the
    model's heads: softmax over K + 1, no-object left out, argmax; cxcywh scaled by hand."""
    from adaseg.data import build_dataset, collate
    from adaseg.models.adaptive.settings import AdaptiveSettings
    from adaseg.runs.parent import load_parent

    model, _ = load_parent(ckpt)
    assert model.class_map is None  # the import alone: its own classes
    dataset = build_dataset(spec, "val", train=False)
    out = []
    for i in range(len(dataset)):
        batch = collate([dataset[i]])
        with torch.no_grad():
            heads = model(batch["images"], batch["padding_mask"], AdaptiveSettings()).single_heads()
        prob = heads["pred_logits"][0].double().softmax(-1)[:, :-1]
        score, label = prob.max(-1)
        h, w = SIZE
        for (cx, cy, bw, bh), s, c in zip(heads["pred_boxes"][0].double().tolist(), score.tolist(), label.tolist()):
            out.append((dataset.records[i].image_id, int(c), float(s),
                        [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]))
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint, data spec, instances JSON path, hand results): ground truth made of the
    best-scoring mapped detection of each image (clipped to it), plus one box no detection fits."""
    root = tmp_path_factory.mktemp("cm")
    _hf_detr().save_pretrained(root / "hf")
    ckpt = root / "detr91.safetensors"
    res = invoke("import-weights", "--hf", root / "hf", "--out", ckpt)
    assert res.exit_code == 0, res.output
    spec = _write(root / "data", [])
    raw = _raw_detections(ckpt, spec)
    labels = {c for _, c, _, _ in raw}
    assert labels & set(HAND) and labels - set(HAND), f"the seed must give mapped and dropped classes, got {labels}"
    anns = []
    for image_id in range(1, 7):
        mine = sorted((r for r in raw if r[0] == image_id and r[1] in HAND), key=lambda r: -r[2])
        for _, c, _, (x, y, bw, bh) in mine[:1]:
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(SIZE[1], x + bw), min(SIZE[0], y + bh)
            if x1 - x0 > 1 and y1 - y0 > 1:
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": HAND[c], "iscrowd": 0,
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    anns.append({"id": len(anns) + 1, "image_id": 3, "category_id": 13, "iscrowd": 0, "bbox": [0, 0, 3, 3], "area": 9.0})
    spec = _write(root / "data", anns)
    hand = [{"image_id": i, "category_id": HAND[c], "score": s, "bbox": b} for i, c, s, b in raw if c in HAND]
    return ckpt, spec, root / "data" / "annotations" / "instances_val2017.json", hand


def _cocoeval(gt_file: Path, results: list[dict]) -> np.ndarray:
    gt = COCO(str(gt_file))
    ev = COCOeval(gt, gt.loadRes(results), iouType="bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev.stats


def test_predict_writes_the_hand_mapped_classes(setup, tmp_path):
    ckpt, spec, _, hand = setup
    res = invoke("predict", "--parent", ckpt, "--data", spec, "--out", tmp_path / "p", "--threads", "1")
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "p" / "detections.json").read_text())
    key = lambda d: (d["image_id"], -d["score"])  # noqa: E731
    got, want = sorted(got, key=key), sorted(hand, key=key)
    assert [(d["image_id"], d["category_id"]) for d in got] == [(d["image_id"], d["category_id"]) for d in want]
    assert np.allclose([d["score"] for d in got], [d["score"] for d in want], atol=1e-5)
    assert np.allclose([d["bbox"] for d in got], [d["bbox"] for d in want], atol=1e-3)


def test_eval_box_ap_is_cocoeval_of_the_hand_mapped_detections(setup):
    ckpt, spec, gt_file, hand = setup
    report = invoke_json("eval", "--parent", ckpt, "--data", spec, "--threads", "1", "--bootstrap", "0",
                         "--warmup", "0", "--timed", "1")
    stats = _cocoeval(gt_file, hand)
    names = ("AP_box", "AP50_box", "AP75_box", "APs_box", "APm_box", "APl_box")
    got = [report["metrics"][k] for k in names]
    want = [None if v < 0 else float(v) for v in stats[:6]]
    assert want[0] > 0  # the ground truth holds detections of the model: a non-trivial AP
    assert [g is None for g in got] == [w is None for w in want], (got, want)
    assert np.allclose([g for g in got if g is not None], [w for w in want if w is not None], atol=1e-9), (got, want)


def test_init_run_keeps_the_map_for_derive_and_eval(setup, tmp_path):
    from adaseg.runs.parent import load_parent
    from adaseg.storage.checkpoint import read_checkpoint_meta

    ckpt, spec, gt_file, hand = setup
    run = tmp_path / "run"
    res = invoke("init-run", "--from", ckpt, "--data", spec, "--run", run)
    assert res.exit_code == 0, res.output
    parent = run / "checkpoints" / "parent.safetensors"
    assert read_checkpoint_meta(parent).fingerprint == read_checkpoint_meta(ckpt).fingerprint
    model, _ = load_parent(parent)
    by_hand = [{1: 0, 3: 1, 9: 2, 13: 3}.get(k, -1) for k in range(len(ID2LABEL))]
    assert model.class_map.tolist() == by_hand
    invoke_json("derive", "--run", run, "--threads", "1")
    report = invoke_json("eval", "--run", run, "--gate", "none", "--threads", "1", "--bootstrap", "0",
                         "--warmup", "0", "--timed", "1")
    assert np.isclose(report["metrics"]["AP_box"], _cocoeval(gt_file, hand)[0], atol=1e-9)


@pytest.mark.parametrize("case", ["missing", "renumbered"])
def test_refused_in_one_line_nothing_written(case, setup, tmp_path):
    ckpt, _, _, _ = setup
    if case == "missing":
        cats = [{"id": 1, "name": "person"}, {"id": 38, "name": "kite"}]
        why = "dataset category 38 'kite' is not among the checkpoint's 14 classes (matched by name)"
    else:
        cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}]
        why = ("dataset category 2 'car' is the checkpoint's class 'car' of category id 3: the checkpoint's classes "
               "are indexed by category id (its 'N/A' slots, or recorded ids) and these ids differ")
    spec = _write(tmp_path / "d", [], categories=cats)
    out = tmp_path / "out"
    res = invoke("eval", "--parent", ckpt, "--data", spec, "--out", out, "--threads", "1")
    assert res.exit_code != 0
    assert res.output.strip().splitlines()[-1] == f"Error: --data {spec!r} vs the checkpoint {ckpt}: {why}", res.output
    assert not out.exists() or snapshot(out) == {}
    run = tmp_path / "run"
    res = invoke("init-run", "--from", ckpt, "--data", spec, "--run", run)
    assert res.exit_code != 0 and why in res.output, res.output
    assert not run.exists() or snapshot(run) == {}
    res = invoke("train-parent", "--model", "hf-detr", "--init", ckpt, "--data", spec, "--iters", "1",
                 "--batch-size", "1", "--threads", "1", "--run", tmp_path / "tp")
    assert res.exit_code != 0 and why in res.output, res.output
    assert not (tmp_path / "tp").exists() or snapshot(tmp_path / "tp") == {}


def test_train_parent_init_picks_the_class_rows(setup, tmp_path):
    """lr 1e-30 (weight decay 0): one iteration leaves every weight as it started, so the parent
    holds the --init tensors with the class rows picked by hand: person, car, boat, stop sign
    (model classes 1, 3, 9, 13), then no-object (row 14)."""
    ckpt, spec, _, _ = setup
    run = tmp_path / "tp"
    invoke_json("train-parent", "--model", "hf-detr", "--init", ckpt, "--data", spec, "--iters", "1", "--batch-size", "1",
                "--lr", "1e-30", "--weight-decay", "0", "--recipe", "standard", "--threads", "1", "--run", run)
    meta = _assert_class_rows_picked(ckpt, run, _SPEC["encoder_layers"])
    assert meta.config["options"]["model"]["num_classes"] == 4


def _assert_class_rows_picked(ckpt: Path, run: Path, encoder_layers: int):
    """The parent of ``run`` holds ``ckpt``'s tensors, the class head's and the auxiliary
    decoders' with the rows picked by hand: person, car, boat, stop sign (model classes 1, 3, 9,
    13), then no-object (row 14). Returns the parent's metadata."""
    from adaseg.storage.checkpoint import load_checkpoint

    src, _ = load_checkpoint(ckpt)
    got, meta = load_checkpoint(run / "checkpoints" / "parent.safetensors")
    rows = [1, 3, 9, 13, 14]
    heads = [k for k in src if k.startswith(("class_embed.", "encoder.aux_decoders."))]
    assert len(heads) == 2 + 2 * (encoder_layers - 1)
    assert set(got) == set(src)
    for k in src:
        want = src[k][rows] if k in heads else src[k]
        assert torch.equal(got[k], want), k
    return meta


def test_train_parent_detr_r50_init_picks_the_class_rows(setup, tmp_path):
    """``--model detr_r50 --init`` an import of transformers' ResNet-50 DETR whose head is
    indexed by COCO id (:data:`ID2LABEL`, d 256, 6 + 6 layers, 100 queries, every tensor
    perturbed): as with ``--model hf-detr``, one iteration at lr 1e-30 leaves the parent with
    the --init tensors and the class rows of the dataset's categories picked by hand."""
    from detr_import_testing import write_resnet50_detr

    _, spec, _, _ = setup
    ckpt = tmp_path / "detr50_coco_ids.safetensors"
    write_resnet50_detr(ckpt, ID2LABEL)
    run = tmp_path / "tp50"
    invoke_json("train-parent", "--model", "detr_r50", "--init", ckpt, "--data", spec, "--iters", "1", "--batch-size",
                "1", "--lr", "1e-30", "--weight-decay", "0", "--recipe", "standard", "--threads", "1", "--run", run)
    meta = _assert_class_rows_picked(ckpt, run, 6)
    assert meta.config["model"] == "detr_r50" and meta.config["options"]["num_classes"] == 4
