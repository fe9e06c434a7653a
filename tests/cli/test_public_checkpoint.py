"""README "Starting from a public checkpoint", end to end, one command each.

The checkpoint is a random-weights ``Mask2FormerForUniversalSegmentation`` in the public
layout made by transformers itself (``save_pretrained`` of the model and its image
processor; no download), with the classes of the tiny synthetic folder the commands then
evaluate on. Oracles: the report of ``eval --parent CKPT`` must equal the report of ``eval``
on the run ``init-run`` made from it (the same model, data and settings by two routes); the
categories written with predictions must be transformers' ``id2label`` with the thing/stuff
split given at import; refusals leave every file as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e .[test])")

from recipe_testing import invoke, invoke_json, refused, snapshot  # noqa: E402

FAST = ("--threads", "1")
EVAL_FAST = ("--limit", "2", "--warmup", "0", "--timed", "1", *FAST)


def _hf_checkpoint(directory: Path, names: list[str]) -> None:
    """A small random Mask2Former + its image processor (64 px images: no resize), saved by transformers."""
    swin = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=64, mask_feature_size=64, hidden_dim=64, encoder_feedforward_dim=128,
        dim_feedforward=128, encoder_layers=3, decoder_layers=3, num_queries=8, num_attention_heads=4,
        id2label=dict(enumerate(names)))
    torch.manual_seed(0)
    transformers.Mask2FormerForUniversalSegmentation(cfg).save_pretrained(directory)
    transformers.Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(directory)


@pytest.fixture(scope="module")
def public(tmp_path_factory, folder):
    """(work dir, imported checkpoint, the dataset's meta, the thing ids given at import)."""
    from adaseg.data import build_dataset

    root = tmp_path_factory.mktemp("public")
    meta = build_dataset(folder, "val").meta
    _hf_checkpoint(root / "hf", meta.class_names)
    things = ",".join(map(str, meta.thing_ids))
    ckpt = root / "m2f.safetensors"
    result = invoke("import-weights", "--hf", root / "hf", "--thing-ids", things, "--out", ckpt)
    assert result.exit_code == 0, result.output
    assert "marked untrained" in result.output
    return root, ckpt, meta


def _same_evaluation(a: dict, b: dict) -> None:
    for key in ("metrics", "gflops", "exits"):
        assert a[key] == b[key], key
    for key in ("images", "flops_images", "name", "gate", "exit", "pause"):
        assert a["settings"][key] == b["settings"][key], key
    assert a["info"]["parent_fingerprint"] == b["info"]["parent_fingerprint"]
    assert a["info"]["model"] == b["info"]["model"] == "hf-mask2former"


def test_from_a_public_checkpoint_one_command_each(public, folder, tmp_path):
    import adaseg

    root, ckpt, meta = public
    # the Python API takes the checkpoint as a parent
    model, info = adaseg.load_parent(ckpt)
    assert model.depth == 3 and info["kind"] == "mask2former"

    # predict a photo: labelled by the checkpoint alone (id2label + the thing ids given at import)
    from PIL import Image

    Image.fromarray(torch.randint(0, 255, (48, 80, 3), dtype=torch.uint8).numpy()).save(tmp_path / "photo.png")
    result = invoke("predict", tmp_path / "photo.png", "--run", ckpt, "--out", tmp_path / "pred", *FAST)
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert [(c["id"], c["name"], bool(c["isthing"])) for c in written["categories"]] == \
        [(i, c.name, c.isthing) for i, c in enumerate(meta.categories)]
    assert all(s["category_id"] in range(meta.num_classes) for a in written["annotations"] for s in a["segments_info"])
    assert (tmp_path / "pred" / "overlay" / "photo.png").is_file()

    # evaluate the checkpoint: nothing written without --out
    before = snapshot(root)
    direct = invoke_json("eval", "--parent", ckpt, "--data", folder, *EVAL_FAST)
    assert snapshot(root) == before and not (root / "reports").exists()
    # ... and so does the Python API
    _same_evaluation(direct, adaseg.evaluate(ckpt, data=folder, limit=2, warmup=0, timed=1).to_json())
    assert snapshot(root) == before

    # a run whose parent is the checkpoint: the same evaluation by the other route
    run = tmp_path / "run"
    result = invoke("init-run", "--from", ckpt, "--data", folder, "--run", run)
    assert result.exit_code == 0, result.output
    _same_evaluation(direct, invoke_json("eval", "--run", run, "--gate", "none", *EVAL_FAST))

    # Steps B and C on it at once, then the gate's eval and predict of the run's own val split
    invoke_json("derive", "--run", run, "--limit", "4", *FAST)
    invoke_json("fit-gate", "--run", run, "--beta", "0.0005", "--epochs", "2")
    gated = invoke_json("eval", "--run", run, *EVAL_FAST)
    assert gated["settings"]["gate"] and gated["info"]["parent_fingerprint"] == direct["info"]["parent_fingerprint"]
    result = invoke("predict", "--run", run, "--limit", "2", "--out", tmp_path / "pred_val", *FAST)
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "pred_val" / "predictions.json").read_text())["annotations"]) == 2

    # fixed exits of the checkpoint: a sweep into --out, titled with the checkpoint's name
    out = tmp_path / "sweep"
    invoke_json("sweep", "--parent", ckpt, "--data", folder, "--out", out, "--exits", "2", "--limit", "2",
                "--bootstrap", "0", *FAST)
    svg = (out / "sweeps" / "default" / "quality_vs_gflops.svg").read_text()
    assert "m2f: 2 val images" in svg and str(tmp_path) not in svg

    # Step A with weighted stochastic depth on top of it
    result = invoke("train-parent", "--model", "hf-mask2former", "--init", ckpt, "--data", folder, "--recipe", "wsd",
                    "--iters", "1", "--batch-size", "2", "--run", tmp_path / "wsd", *FAST)
    assert result.exit_code == 0, result.output
    refused(tmp_path, "eval", "--run", tmp_path / "wsd", "--pause", "1:0.5", expect="auxiliary decoders are untrained")
    # --recipe wsd trains no auxiliary decoder: the parent itself records the import's mark, so
    # the refusal does not depend on the --init file staying where it was
    from adaseg.runs.run_dir import RunDir
    from adaseg.storage.checkpoint import read_checkpoint_meta

    assert read_checkpoint_meta(RunDir(tmp_path / "wsd").parent_path).extra["untrained"] == ["aux_decoders"]


def test_what_a_checkpoint_cannot_do_is_refused_and_nothing_written(public, folder, tmp_path):
    root, ckpt, _ = public
    out = tmp_path / "out"
    photo = root / "hf" / "preprocessor_config.json"  # any existing path; refused before it is read
    cases = [
        (("eval", "--parent", ckpt, "--data", folder, "--pause", "1:0.5"), "auxiliary decoders are untrained"),
        (("eval", "--parent", ckpt, "--data", folder, "--pause", "1:0.5", "--out", out), "--recipe wsd+pause"),
        (("eval", "--parent", ckpt, "--data", folder, "--gate", "latest", "--out", out), "adaseg init-run --from"),
        (("eval", "--parent", ckpt), "needs --data"),
        (("eval", "--out", out), "--out goes with --parent"),
        (("sweep", "--parent", ckpt, "--data", folder), "needs --out"),
        (("sweep", "--parent", ckpt, "--data", folder, "--out", out, "--betas", "0.0005"), "adaseg derive --run R"),
        (("sweep", "--parent", ckpt, "--data", folder, "--out", out, "--pause", "1:0.5"), "untrained"),
        (("predict", photo, "--run", ckpt, "--pause", "1:0.5", "--out", out), "untrained"),
        (("predict", photo, "--run", ckpt, "--gate", "latest", "--out", out), "adaseg fit-gate --run R"),
        (("predict", "--run", ckpt, "--out", out), "nothing to predict"),
    ]
    for args, expect in cases:
        refused(tmp_path, *args, expect=expect)
        assert not out.exists()
    # random pausing needs no auxiliary decoders: allowed
    assert invoke("eval", "--parent", ckpt, "--data", folder, "--pause", "1:0.5", "--pause-mode", "random",
                  *EVAL_FAST).exit_code == 0

    # init-run: another thing/stuff split, an existing run; a run of it refuses entropy pausing too
    other = tmp_path / "stuff_only.safetensors"
    assert invoke("import-weights", "--hf", root / "hf", "--thing-ids", "none", "--out", other).exit_code == 0
    refused(tmp_path, "init-run", "--from", other, "--data", folder, "--run", tmp_path / "r", expect="thing classes")
    assert not (tmp_path / "r").exists()
    assert invoke("init-run", "--from", ckpt, "--data", folder, "--run", tmp_path / "r").exit_code == 0
    refused(tmp_path, "init-run", "--from", ckpt, "--data", folder, "--run", tmp_path / "r", expect="already holds a run")
    refused(tmp_path, "eval", "--run", tmp_path / "r", "--pause", "1:0.5", expect="untrained")
    # a run directory is not an --out: the checkpoint's reports would replace the run's own
    refused(tmp_path, "eval", "--parent", ckpt, "--data", folder, "--out", tmp_path / "r", expect="is a run directory")


def test_titles_name_the_run_not_its_path(tmp_path):
    from adaseg.runs.from_checkpoint import CheckpointRun, run_label
    from adaseg.runs.run_dir import RunDir

    assert run_label(RunDir(tmp_path / "deep" / "my_run")) == "my_run"
    assert run_label(RunDir(tmp_path / "my_run" / ".")) == "my_run"
    assert run_label(CheckpointRun(tmp_path / "m2f.safetensors", data=None)) == "m2f"


def test_init_run_from_a_plain_parent_records_its_categories(folder, tmp_path):
    """A parent checkpoint (not imported): init-run keeps its tensors (same fingerprint) and
    records the dataset's categories, so the run's parent file alone labels predictions."""
    import adaseg
    from adaseg.data import build_dataset
    from adaseg.predict.predictor import PredictError
    from adaseg.runs.parent import PARENT_KIND, model_options_for, parent_config
    from adaseg.storage.checkpoint import read_checkpoint_meta, save_checkpoint

    meta = build_dataset(folder, "val").meta
    options = model_options_for("m2f_tiny", meta)
    torch.manual_seed(0)
    model = adaseg.create_model("m2f_tiny", **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    plain = tmp_path / "plain.safetensors"
    saved = save_checkpoint(plain, model.state_dict(), kind=PARENT_KIND, config=parent_config("m2f_tiny", options))
    image = torch.randint(0, 255, (32, 40, 3), dtype=torch.uint8).numpy()
    with pytest.raises(PredictError, match="records no categories: give data="):
        adaseg.Predictor(plain, flops=False)
    run = tmp_path / "run"
    assert invoke("init-run", "--from", plain, "--data", folder, "--run", run).exit_code == 0
    parent = run / "checkpoints" / "parent.safetensors"
    assert read_checkpoint_meta(parent).fingerprint == saved.fingerprint
    predictor = adaseg.Predictor(parent, flops=False)
    assert predictor.meta.categories_json() == meta.categories_json()  # the dataset's own ids and names
    assert predictor([image])[0].semantic.shape == (32, 40)



def test_untrained_marks_follow_the_init_chain(public, tmp_path):
    """Which parents have untrained auxiliary decoders, by hand: an import does; a parent
    trained from it without pausing inherits that; pausing training, a missing --init file
    or an explicit mark decide otherwise."""
    from adaseg.runs.from_checkpoint import untrained_parts

    _, ckpt, _ = public
    assert untrained_parts("mask2former", {"initialised": ["x"]}) == ["aux_decoders"]
    for recipe, expect in (("wsd", ["aux_decoders"]), ("standard", ["aux_decoders"]), ("wsd+pause", []),
                           ("pause", [])):
        assert untrained_parts("parent", {"init": str(ckpt), "settings": {"recipe": recipe}}) == expect, recipe
    assert untrained_parts("parent", {"init": str(tmp_path / "gone.safetensors"), "settings": {"recipe": "wsd"}}) == []
    assert untrained_parts("parent", {"untrained": [], "init": str(ckpt), "settings": {"recipe": "wsd"}}) == []
