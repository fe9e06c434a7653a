"""train-parent -> derive -> fit-gate -> eval through the CLI on a tiny synthetic folder,
checked against independent computations (single-exit forwards, per-layer FLOP counts,
the gate's own predictions, bit-exact resumption)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from adaseg.models.adaptive.settings import AdaptiveSettings
from adaseg.runs.run_dir import RunDir
from recipe_testing import TRAIN_FAST, invoke, invoke_json, torchrun


@pytest.fixture(scope="module")
def run(tmp_path_factory, folder):
    """A run with parent (2 iterations of wsd+pause), derived dataset and a beta=0 gate."""
    root = tmp_path_factory.mktemp("runs") / "run"
    out = invoke_json("train-parent", "--data", folder, *TRAIN_FAST, "--run", root)
    assert out["iterations"] == 2 and out["recipe"] == "wsd+pause"
    invoke_json("derive", "--run", root, "--threads", "1")
    invoke_json("fit-gate", "--beta", "0", "--run", root, "--epochs", "5")
    return RunDir(root)


def test_train_parent_writes_config_parent_and_state(run):
    config = json.loads(run.config_path.read_text())
    assert config["model"] == "m2f_tiny" and config["task"] == "panoptic"
    assert config["train"]["recipe"] == "wsd+pause" and config["train"]["pause_range"] == [0.2, 0.8]
    parent = json.loads(run.parent_path.with_suffix(".json").read_text())
    assert parent["kind"] == "parent" and parent["config"]["model"] == "m2f_tiny"
    last = json.loads(run.last_path.with_suffix(".json").read_text())
    assert last["kind"] == "train-state" and last["extra"]["iteration"] == 2


def test_derive_matches_single_exit_forwards(run):
    """Each (image, exit) quality equals per-image PQ of a separate single-exit forward."""
    from adaseg.data import build_dataset, collate
    from adaseg.runs.derived import DerivedDataset, best_exit_histogram
    from adaseg.runs.parent import load_parent
    from adaseg.eval.scoring import Scorer
    from adaseg.eval.tasks.panoptic import PANOPTIC

    derived = DerivedDataset.load(run.derived_path)
    assert derived.exit_list == [2, 3, 4, 5, 6] and derived.quality.shape == (8, 5)
    model, info = load_parent(run.parent_path)
    assert derived.parent_fingerprint == info["fingerprint"]
    dataset = build_dataset(json.loads(run.config_path.read_text())["data"], "train")
    scorer = Scorer(dataset, metric="pq")
    for i in (0, 5):
        batch = collate([dataset[i]])
        with torch.no_grad():
            features = model(batch["images"], batch["padding_mask"]).gate_features[0]
        torch.testing.assert_close(derived.features[i], features, rtol=1e-5, atol=1e-6)
        for col, k in enumerate(derived.exit_list):
            with torch.no_grad():
                out = model(batch["images"], batch["padding_mask"], AdaptiveSettings(exits=k))
            pred = model.postprocess(out, batch["sizes"], task="panoptic", output_sizes=batch["orig_sizes"])[0]
            q = PANOPTIC.stats(scorer, i, pred).pq()
            expected = math.nan if q is None else q
            got = float(derived.quality[i, col])
            assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected, abs=1e-6)
    parts = derived.quality_from_parts("pq")
    assert torch.equal(torch.isnan(parts), torch.isnan(derived.quality))
    torch.testing.assert_close(parts.nan_to_num(-1), derived.quality.nan_to_num(-1))
    assert sum(best_exit_histogram(derived).values()) == 8


@pytest.fixture(scope="module")
def reports(run):
    common = ("--run", run.root, "--threads", "1", "--warmup", "0", "--timed", "1", "--batch-size", "2")
    return {
        "exit2": invoke_json("eval", "--exit", "2", *common),
        "exit6": invoke_json("eval", "--exit", "6", *common),
        "full": invoke_json("eval", "--gate", "none", *common),
        "gate": invoke_json("eval", "--gate", "latest", *common),
        "pause": invoke_json("eval", "--gate", "none", "--pause", "3:0.4,5:0.3", *common),
        "random": invoke_json("eval", "--gate", "none", "--pause", "3:0.4,5:0.3", "--pause-mode", "random", *common),
    }


def test_eval_report_is_written_and_full_depth_is_exit_k(run, reports):
    assert run.report_path(reports["full"]["settings"]["name"]).is_file()
    full, exit6 = reports["full"], reports["exit6"]
    for key in ("PQ", "SQ", "RQ", "mIoU", "AP"):
        assert full["metrics"][key] == exit6["metrics"][key]
    assert full["exits"]["histogram"] == {"6": 4}
    assert full["gflops"]["gflops"]["total"]["mean"] == pytest.approx(exit6["gflops"]["gflops"]["total"]["mean"])


def test_encoder_flops_scale_with_the_exit(reports):
    """Without pausing every encoder layer sees the same tokens: exit 2 costs 2/6 of exit 6,
    and the rest of the network (backbone, decoder) costs the same."""
    e2, e6 = reports["exit2"]["gflops"]["gflops"], reports["exit6"]["gflops"]["gflops"]
    assert e2["encoder"]["mean"] == pytest.approx(e6["encoder"]["mean"] * 2 / 6, rel=1e-9)
    assert e2["total"]["mean"] - e2["encoder"]["mean"] == pytest.approx(e6["total"]["mean"] - e6["encoder"]["mean"])
    assert e6["encoder"]["std"] == pytest.approx(0.0)


def test_pausing_costs_less_and_entropy_adds_only_the_aux_decoders(reports):
    full, pause, rnd = (reports[k]["gflops"]["gflops"]["encoder"]["mean"] for k in ("full", "pause", "random"))
    assert pause < full and rnd < full
    # same kept-token counts; entropy pausing adds two 1x1 auxiliary decoders (64 -> 9 classes)
    assert pause > rnd
    assert reports["pause"]["settings"]["pause"] == "3:0.4,5:0.3"


def test_gate_picks_the_exits_its_linear_layer_predicts(run, reports):
    from adaseg.data import build_dataset, collate
    from adaseg.engine.fit_gate import load_gate
    from adaseg.runs.parent import load_parent

    model, info = load_parent(run.parent_path)
    gate, _ = load_gate(run.gate_files()[0], parent_fingerprint=info["fingerprint"])
    dataset = build_dataset(json.loads(run.config_path.read_text())["data"], "val")
    batch = collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        features = model(batch["images"], batch["padding_mask"]).gate_features
    expected: dict[str, int] = {}
    for e in gate.predict(features).tolist():
        expected[str(e)] = expected.get(str(e), 0) + 1
    assert reports["gate"]["exits"]["histogram"] == dict(sorted(expected.items(), key=lambda kv: int(kv[0])))


def test_python_api_matches_the_cli(run, reports):
    """adaseg.load_run / load_gate / evaluate: the same parent and gate the CLI uses, and the
    same report figures as `adaseg eval --gate latest`."""
    import adaseg

    model = adaseg.load_run(run.root)
    parent, info = adaseg.load_parent(run.parent_path)
    gate, _ = adaseg.load_gate(run.gate_files()[0], parent_fingerprint=info["fingerprint"])
    assert model.gate is not None and torch.equal(model.gate.linear.weight, gate.linear.weight)
    assert adaseg.load_run(run.root, gate="none").gate is None
    report = adaseg.evaluate(run.root, gate="latest", batch_size=2, warmup=0, timed=1)
    assert report.metrics == reports["gate"]["metrics"] and report.gflops == reports["gate"]["gflops"]
    assert report.exits == reports["gate"]["exits"]
    paused = adaseg.evaluate(run.root, gate="none", pause="3:0.4,5:0.3", batch_size=2, warmup=0, timed=1)
    assert paused.metrics == reports["pause"]["metrics"]


def test_demo_runs_the_four_commands_in_order(run, tmp_path):
    root = tmp_path / "demo"
    shutil.copytree(run.root, root)
    (root / "derived.safetensors").unlink()
    result = invoke("demo", "--run", root, "--eval-limit", "2", "--threads", "1")
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("[demo ")]
    assert steps[0].startswith("[demo 1/4] adaseg train-parent") and "skipped" in steps[0]
    assert steps[1] == f"[demo 2/4] adaseg derive --run {root}"
    assert steps[2].startswith("[demo 3/4] adaseg fit-gate --beta 0.0005")
    assert [s.split("] ")[1].split(" --run")[0] for s in steps[3:]] == [
        "adaseg eval --gate none", "adaseg eval --gate latest", "adaseg eval --gate none --pause 3:0.4,5:0.3",
        "adaseg eval --gate latest --pause 3:0.4,5:0.3"]
    assert "adaseg demo:" in result.output  # the comparison table


def test_derive_and_eval_under_torchrun_match_one_process(run, reports, tmp_path):
    """Two gloo processes shard the images and gather them: the same derived dataset and the
    same quality as one process."""
    from adaseg.runs.derived import DerivedDataset

    # torchrun's own parser takes --run for an abbreviation of --run-path: use the default run dir
    root = tmp_path / "runs" / "default"
    shutil.copytree(run.root, root)
    (root / "derived.safetensors").unlink()
    done = torchrun("derive", "--quiet", "--device", "cpu", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    one, two = DerivedDataset.load(run.derived_path), DerivedDataset.load(root / "derived.safetensors")
    assert torch.equal(one.quality.nan_to_num(-1), two.quality.nan_to_num(-1))
    assert torch.equal(one.features, two.features) and one.image_ids == two.image_ids
    assert torch.equal(one.parts_index, two.parts_index) and torch.equal(one.parts_values, two.parts_values)

    done = torchrun("eval", "--gate", "none", "--json", "--device", "cpu", "--warmup", "0", "--timed", "1",
                    "--batch-size", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for key in ("PQ", "mIoU", "AP"):
        assert report["metrics"][key] == pytest.approx(reports["full"]["metrics"][key], abs=1e-12)
    assert report["gflops"]["images"] == 4
    # the per-image parts come from the gathered results: the same images in the same order
    from adaseg.eval.image_parts import load_parts

    single, gathered = load_parts(run.report_path("full")), load_parts(root / "reports" / "eval_full.json")
    assert list(single.image_ids) == list(gathered.image_ids) and list(single.exits) == list(gathered.exits)
    assert (single.seg == gathered.seg).all() and abs(single.pq - gathered.pq).max() <= 1e-12
    assert gathered.metrics()["AP"] == pytest.approx(report["metrics"]["AP"], abs=1e-12)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, folder):
    """A run whose parent is the shipped trained base (one step at a negligible lr): its
    predictions, unlike a 2-iteration parent's, depend on which tokens pause."""
    from adaseg.runs.parent import shipped_base

    root = tmp_path_factory.mktemp("runs") / "trained"
    base = shipped_base("m2f_tiny", "synthetic")
    invoke_json("train-parent", "--data", folder, "--init", base, "--iters", "1", "--batch-size", "2",
                "--lr", "1e-12", "--threads", "1", "--run", root)
    return RunDir(root)


def test_random_pausing_eval_draws_from_its_own_seeded_generator(trained_run):
    """eval --pause-mode random: the report is what a hand loop gives with a fresh generator
    seeded by --seed (0) in batches of 2, whatever the global RNG state; another seed differs."""
    from adaseg.data import build_dataset, collate
    from adaseg.eval.miou import ConfusionMatrix
    from adaseg.models.adaptive.plan import PausePlan
    from adaseg.runs.parent import load_parent
    from adaseg.eval.scoring import Scorer
    from adaseg.eval.tasks.semantic import SEMANTIC

    spec = "3:0.4,5:0.3"
    common = ("--run", trained_run.root, "--threads", "1", "--warmup", "0", "--timed", "1", "--batch-size", "2",
              "--pause", spec, "--pause-mode", "random")
    torch.manual_seed(12345)
    got = invoke_json("eval", *common, "--name", "random_a")["metrics"]
    torch.manual_seed(54321)  # the global RNG state must not matter
    assert invoke_json("eval", *common, "--name", "random_b")["metrics"] == got
    other = invoke_json("eval", *common, "--seed", "1", "--name", "random_seed1")["metrics"]
    assert other["per_class_iou"] != got["per_class_iou"]

    model, _ = load_parent(trained_run.parent_path)
    dataset = build_dataset(json.loads(trained_run.config_path.read_text())["data"], "val", train=False)
    scorer = Scorer(dataset, metric="pq")
    generator = torch.Generator().manual_seed(0)
    cm = ConfusionMatrix(num_classes=dataset.meta.num_classes, ignore_label=dataset.meta.ignore_label)
    for start in range(0, len(dataset), 2):
        batch = collate([dataset[i] for i in range(start, min(start + 2, len(dataset)))])
        with torch.no_grad():
            out = model(batch["images"], batch["padding_mask"],
                        AdaptiveSettings(pause=PausePlan.parse(spec), pause_mode="random", generator=generator))
        semantic = model.postprocess(out, batch["sizes"], task="semantic")
        for j, (h, w) in enumerate(batch["sizes"]):
            cm += SEMANTIC.confusion(scorer, batch["targets"][j]["semantic"][:h, :w], semantic[j].cpu())
    expected = cm.results(dataset.meta.class_names)
    assert got["pixel_acc"] == pytest.approx(expected["pixel_acc"], abs=1e-12)
    assert got["per_class_iou"] == pytest.approx(expected["per_class"], abs=1e-12)
