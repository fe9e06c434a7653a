"""Step A settings from what the user gave: resume merging, --epochs, idle options."""

import pytest

from adaseg.engine.train_parent import TrainSettingError, TrainSettings
from adaseg.engine.train_setup import TrainUsageError, iters_from_epochs, merge_resume, refuse_idle_options


def test_resume_takes_the_stored_settings_and_only_the_resumable_changes():
    stored = TrainSettings(iters=100, batch_size=4, ckpt_every=10, lr=2e-4)
    given = TrainSettings(iters=300, ckpt_every=5)  # batch_size, lr at their defaults: not given
    merged = merge_resume(stored, given, {"iters", "ckpt_every"})
    assert (merged.iters, merged.ckpt_every, merged.batch_size, merged.lr) == (300, 5, 4, 2e-4)
    assert stored.iters == 100  # the stored settings are not changed in place


def test_resume_refuses_a_given_setting_that_differs():
    with pytest.raises(TrainUsageError, match=r"^--batch-size 8 differs from the interrupted run's 4: "):
        merge_resume(TrainSettings(batch_size=4), TrainSettings(batch_size=8), {"batch_size"})
    # Given but equal to the stored value: accepted.
    assert merge_resume(TrainSettings(batch_size=4), TrainSettings(batch_size=4), {"batch_size"}).batch_size == 4


def test_epochs_become_iterations_rounded_up():
    lines = []
    from adaseg.data import build_dataset

    images = len(build_dataset("synthetic", "train", train=True))
    settings = iters_from_epochs(TrainSettings(batch_size=5), 1.5, set(), note=lines.append)
    assert settings.iters == -(-3 * images // 10)  # ceil(1.5 * images / 5) in integers
    assert lines == [f"train-parent: --epochs 1.5 = {settings.iters} iterations ({images} training images, batch 5)"]
    with pytest.raises(TrainUsageError, match="^give --iters or --epochs, not both$"):
        iters_from_epochs(TrainSettings(), 1.0, {"iters"})


def test_options_the_recipe_would_ignore_are_refused():
    with pytest.raises(TrainSettingError, match="--alphas weigh the exits") as info:
        refuse_idle_options(TrainSettings(recipe="pause"), {"alphas"})
    assert info.value.param == "alphas"
    with pytest.raises(TrainSettingError) as info:
        refuse_idle_options(TrainSettings(recipe="wsd"), {"pause_range"})
    assert info.value.param == "pause-range"
    refuse_idle_options(TrainSettings(recipe="wsd+pause"), {"alphas", "pause_layers", "aux_weight"})
