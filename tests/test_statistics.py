"""Scene-bootstrap intervals (:mod:`dsdrive.evaluation.statistics`): known answers and the reasons for
bootstrapping by scene."""

from __future__ import annotations

import numpy as np
import pytest

from dsdrive.evaluation.statistics import naive_bootstrap_ci, paired_difference_ci, scene_bootstrap_ci


def correlated(n_scenes: int = 8, per_scene: int = 35, scene_sd: float = 1.0, noise_sd: float = 0.2, seed: int = 0):
    """Values with a shared effect per scene (as samples 0.5 s apart in one scene have) + noise."""
    rng = np.random.default_rng(seed)
    scenes = np.repeat([f"scene-{i:04d}" for i in range(n_scenes)], per_scene)
    x = np.repeat(rng.normal(0, scene_sd, n_scenes), per_scene) + rng.normal(0, noise_sd, n_scenes * per_scene)
    return x, scenes


def test_identical_planners_differ_by_exactly_zero():
    x, scenes = correlated()
    d = paired_difference_ci(x, x.copy(), scenes)
    assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0) and d.includes_zero()


def test_a_constant_shift_is_recovered_with_a_zero_width_interval():
    x, scenes = correlated()
    d = paired_difference_ci(x + 0.25, x, scenes)
    assert d.mean == pytest.approx(0.25, abs=1e-12)
    assert d.low == pytest.approx(0.25, abs=1e-12) and d.high == pytest.approx(0.25, abs=1e-12)
    assert not d.includes_zero()


def test_metric_zero_everywhere_gives_zero_and_a_zero_interval():
    _, scenes = correlated()
    r = scene_bootstrap_ci(np.zeros((len(scenes), 3)), scenes)
    assert np.array_equal(r.mean, np.zeros(3)) and np.array_equal(r.low, np.zeros(3)) and np.array_equal(r.high, np.zeros(3))


def test_two_scenes_known_answer():
    """Scenes A (all 0) and B (all 1), equal sizes, scenes-only resampling: replicate means are 0,
    0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 95 % interval is [0, 1] around 0.5."""
    x = np.r_[np.zeros(10), np.ones(10)]
    r = scene_bootstrap_ci(x, ["A"] * 10 + ["B"] * 10, resample_within=False, keep_replicates=True)
    assert r.mean == 0.5 and (r.low, r.high) == (0.0, 1.0)
    assert set(np.unique(r.replicates)) == {0.0, 0.5, 1.0}
    assert np.mean(r.replicates == 0.5) == pytest.approx(0.5, abs=0.04)


def test_interval_width_matches_the_standard_error_of_scene_means():
    """Scenes-only bootstrap of equal-size scenes: the replicate SD is sd(scene means) * sqrt((S-1)/S) / sqrt(S)."""
    x, scenes = correlated(n_scenes=40, per_scene=5, noise_sd=0.0, seed=3)
    r = scene_bootstrap_ci(x, scenes, n_boot=4000, resample_within=False, keep_replicates=True)
    means = x.reshape(40, 5).mean(1)
    se = means.std(ddof=0) / np.sqrt(40)
    assert r.replicates.std() == pytest.approx(se, rel=0.06)
    assert r.high - r.low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_interval_widens_when_scenes_disagree():
    agree, scenes = correlated(scene_sd=0.05)
    disagree, _ = correlated(scene_sd=1.0)
    w_agree = scene_bootstrap_ci(agree, scenes)
    w_disagree = scene_bootstrap_ci(disagree, scenes)
    assert (w_disagree.high - w_disagree.low) > 5 * (w_agree.high - w_agree.low)


def test_by_scene_interval_is_wider_than_the_naive_one_on_correlated_samples():
    x, scenes = correlated()
    by_scene, naive = scene_bootstrap_ci(x, scenes), naive_bootstrap_ci(x)
    assert naive.num_scenes == len(x) and by_scene.num_scenes == 8
    assert by_scene.mean == naive.mean
    assert (by_scene.high - by_scene.low) > 3 * (naive.high - naive.low)


def test_pooled_mean_weights_every_sample_and_multi_metric_rows_share_resamples():
    x = np.r_[np.zeros(30), np.ones(10)]  # unequal scene sizes: pooled mean 0.25, not the scene mean 0.5
    scenes = ["A"] * 30 + ["B"] * 10
    r = scene_bootstrap_ci(np.c_[x, 2 * x], scenes)
    assert r.mean.tolist() == [0.25, 0.5]
    assert r.low[1] == pytest.approx(2 * r.low[0]) and r.high[1] == pytest.approx(2 * r.high[0])


def test_non_finite_samples_are_excluded_and_counted():
    x, scenes = correlated()
    y = x.copy()
    y[[0, 5, 100]] = np.nan
    r = scene_bootstrap_ci(y, scenes)
    ref = scene_bootstrap_ci(np.delete(x, [0, 5, 100]), np.delete(scenes, [0, 5, 100]))
    assert r.num_excluded == 3 and r.num_samples == len(x) - 3
    assert (r.mean, r.low, r.high) == (ref.mean, ref.low, ref.high)
    two = scene_bootstrap_ci(np.c_[x, y], scenes)  # a row non-finite in one metric leaves all of them
    assert two.num_excluded == 3 and two.num_samples == len(x) - 3
    d = paired_difference_ci(y, x, scenes)
    assert d.num_excluded == 3
    empty = scene_bootstrap_ci([np.nan, np.inf], ["A", "B"])
    assert empty.num_samples == 0 and np.isnan(empty.mean) and empty.to_dict()["mean"] is None


def test_one_scene_is_flagged():
    x, scenes = correlated(n_scenes=1)
    r = scene_bootstrap_ci(x, scenes)
    assert r.single_scene and r.num_scenes == 1 and r.low < r.mean < r.high
    assert "scene-to-scene" in r.to_dict()["note"]


def test_seeded_and_reproducible():
    x, scenes = correlated()
    a, b, c = scene_bootstrap_ci(x, scenes, seed=1), scene_bootstrap_ci(x, scenes, seed=1), scene_bootstrap_ci(x, scenes, seed=2)
    assert (a.low, a.high) == (b.low, b.high) and (a.low, a.high) != (c.low, c.high)
    # chunking does not change the draws' distribution enough to matter, and a chunk size that divides B or not is fine
    d = scene_bootstrap_ci(x, scenes, seed=1, chunk=7)
    assert d.low == pytest.approx(a.low, abs=0.15) and d.high == pytest.approx(a.high, abs=0.15)


def test_bad_input_is_an_error_naming_the_problem():
    x, scenes = correlated()
    with pytest.raises(ValueError, match="scene_ids"):
        scene_bootstrap_ci(x, scenes[:-1])
    with pytest.raises(ValueError, match="n_boot"):
        scene_bootstrap_ci(x, scenes, n_boot=0)
    with pytest.raises(ValueError, match="confidence"):
        scene_bootstrap_ci(x, scenes, confidence=95)
    with pytest.raises(ValueError, match="same samples"):
        paired_difference_ci(x, x[:-1], scenes)


def test_to_dict_names_metrics():
    x, scenes = correlated()
    d = scene_bootstrap_ci(np.c_[x, x + 1], scenes).to_dict(["a", "b"])
    assert set(d["mean"]) == {"a", "b"} and d["ci"]["b"][0] == pytest.approx(d["ci"]["a"][0] + 1)
    assert d["num_scenes"] == 8 and "bootstrap over scenes" in d["method"]
