"""ImageParts.metrics on the full set and on resamples with repeats against independent oracles
(pq_compute on written panoptic files, ConfusionMatrix, pycocotools' COCOeval), and the parts
file's integrity checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adaseg.eval.image_parts import ImageParts, PartsError, load_parts, parts_path_for
from parts_cases import Cases

N = 24


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return Cases(tmp_path_factory.mktemp("parts"), seed=3, n=N, n_flops=15)


@pytest.fixture(scope="module")
def parts(cases):
    return cases.parts()


def _close(ours, ref, key):
    if ref is None or (isinstance(ref, float) and math.isnan(ref)) or (not isinstance(ref, dict) and ref < 0
                                                                        and key.startswith("AP")):
        assert ours is None, key
    else:
        assert ours == pytest.approx(ref, abs=1e-12), key


RESAMPLES = {
    "full": np.arange(N),
    "repeats": np.random.default_rng(7).integers(0, N, N),
    "few": np.array([5, 5, 5, 2, 17, 2]),
}


@pytest.mark.parametrize("which", list(RESAMPLES))
def test_pq_of_a_resample_is_pq_compute_on_the_resampled_images(cases, parts, which):
    idx = RESAMPLES[which]
    if which == "repeats":
        assert len(np.unique(idx)) < len(idx)
    ref = cases.pq_oracle(idx, f"pq_{which}")
    ours = parts.metrics(idx)
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            _close(ours[key.upper() + suffix], ref[group][key], key.upper() + suffix)
    assert ours["PQ"] is not None and 0 < ours["PQ"] < 1


@pytest.mark.parametrize("which", list(RESAMPLES))
def test_miou_of_a_resample_is_the_confusion_matrix_of_the_resampled_images(cases, parts, which):
    idx = RESAMPLES[which]
    ref = cases.miou_oracle(idx)
    ours = parts.metrics(idx, keys=("mIoU", "pixel_acc"))
    _close(ours["mIoU"], ref["mIoU"], "mIoU")
    _close(ours["pixel_acc"], ref["pixel_acc"], "pixel_acc")


@pytest.mark.parametrize("which", list(RESAMPLES))
def test_ap_of_a_resample_is_cocoeval_on_the_resampled_images(cases, parts, which):
    idx = RESAMPLES[which]
    ref = cases.ap_oracle(idx, f"ap_{which}")
    ours = parts.metrics(idx, keys=("AP", "AP50", "AP75"))
    for key, r in zip(("AP", "AP50", "AP75"), ref):
        _close(ours[key], float(r), key)
    assert ours["AP"] is not None and 0 < ours["AP"] < 1


def test_full_set_is_bit_identical_to_the_oracles_in_their_order(cases, parts):
    """metrics(None) sums in the evaluation order, as the report and pq_compute do."""
    ref = cases.pq_oracle(np.arange(N), "pq_exact")
    ours = parts.metrics()
    assert ours["PQ"] == ref["All"]["pq"] and ours["SQ_th"] == ref["Things"]["sq"]
    assert ours["mIoU"] == cases.miou_oracle(np.arange(N))["mIoU"]
    assert ours["AP"] == float(cases.ap_oracle(np.arange(N), "ap_exact")[0])


def test_costs_on_a_resample_count_only_images_with_flops(cases, parts):
    idx = np.array([0, 0, 14, 15, 23, 3])  # 15 and 23 have no FLOP count (n_flops = 15)
    got = parts.metrics(idx, keys=("gflops_encoder_mean", "gflops_total_mean", "exit_mean"))
    counted = [0, 0, 14, 3]
    assert got["gflops_encoder_mean"] == pytest.approx(
        np.mean([cases.flops[i].scopes["encoder"] / 1e9 for i in counted]), rel=1e-12)
    assert got["gflops_total_mean"] == pytest.approx(np.mean([cases.flops[i].total / 1e9 for i in counted]), rel=1e-12)
    assert got["exit_mean"] == pytest.approx(np.mean(cases.exits[idx]))
    assert parts.metrics(np.array([20, 21]), keys=("gflops_total_mean",))["gflops_total_mean"] is None


def test_undefined_figures_are_none_like_the_report(parts):
    """An image without any segment of a group leaves that group's PQ undefined."""
    stuff_only = [i for i in range(N) if parts.pq[i, parts.isthing, :3].sum() == 0 and parts.pq[i, :, :3].sum() > 0]
    assert stuff_only, "the cases should hold an image without things"
    got = parts.metrics(np.array(stuff_only[:1]))
    assert got["PQ_th"] is None and got["PQ"] is not None


def test_bad_indices_and_unknown_keys(parts):
    with pytest.raises(ValueError, match="0..23"):
        parts.metrics(np.array([0, N]))
    with pytest.raises(ValueError, match="non-empty"):
        parts.metrics(np.array([], dtype=np.int64))
    with pytest.raises(KeyError, match="choose from"):
        parts.metrics(keys=("PQ", "nope"))


# ---------------------------------------------------------------------- the file
def _report(tmp_path, parts: ImageParts):
    report = tmp_path / "reports" / "eval_x.json"
    path = parts_path_for(report)
    digest = parts.save(path)
    report.write_text(json.dumps({"settings": {}, "metrics": {}, "info": {},
                                  "parts": {"file": path.name, "content_sha256": digest}}))
    return report, path


def test_save_and_load_round_trip(tmp_path, parts):
    report, path = _report(tmp_path, parts)
    assert path.name == "eval_x.parts.safetensors"
    back = load_parts(report)
    assert np.array_equal(back.image_ids, parts.image_ids) and back.parent_fingerprint == parts.parent_fingerprint
    idx = RESAMPLES["repeats"]
    assert back.metrics(idx) == parts.metrics(idx)


def test_a_flipped_byte_is_caught(tmp_path, parts):
    report, path = _report(tmp_path, parts)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(PartsError, match="corrupt"):
        load_parts(report)


def test_missing_foreign_and_absent_parts_are_one_clear_error(tmp_path, parts, cases):
    report, path = _report(tmp_path, parts)
    # parts of another evaluation, valid in themselves, under this report's name
    other = Cases(tmp_path / "other", seed=4, n=6, n_flops=6)
    (tmp_path / "other").mkdir(exist_ok=True)
    other.parts().save(path)
    with pytest.raises(PartsError, match="does not belong"):
        load_parts(report)
    path.unlink()
    with pytest.raises(PartsError, match="missing"):
        load_parts(report)
    old = tmp_path / "reports" / "eval_old.json"
    old.write_text(json.dumps({"settings": {}, "metrics": {}, "info": {}}))
    with pytest.raises(PartsError, match="records no per-image parts"):
        load_parts(old)
    with pytest.raises(PartsError, match="no such eval report"):
        load_parts(tmp_path / "nope.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(PartsError, match="not an eval report"):
        load_parts(tmp_path / "junk.json")
