"""Planning metrics: hand-computed L2 / collision cases and vectorised-vs-shapely agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers_open_loop import make_sample, straight_line
from shapely.geometry import Polygon

from dsdrive.constants import EGO_CENTER_OFFSET_M, EGO_LENGTH_M, EGO_WIDTH_M
from dsdrive.geometry import box_corners, trajectory_yaw
from dsdrive.evaluation.metrics.planning import (
    FutureAgentBoxes,
    PerSampleMetrics,
    boxes_overlap,
    evaluate_trajectories,
    summarize,
    summarize_by_command,
)
from dsdrive.evaluation.metrics.reference import reference_evaluate, reference_yaw
from dsdrive.evaluation.metrics.synthetic import random_samples

FRONT = EGO_CENTER_OFFSET_M + EGO_LENGTH_M / 2.0  # waypoint -> front edge of the ego box (yaw 0)


def _eval(pred_xy, sample):
    return evaluate_trajectories(np.asarray(pred_xy, np.float64)[None], [sample])


def test_l2_straight_line_both_protocols():
    # GT at 1 m/s, plan at 2 m/s along +x: per-step error 0.5 k m for k = 1..6.
    sample = make_sample(straight_line(1.0))
    m = _eval(straight_line(2.0), sample)
    np.testing.assert_allclose(m.l2[0], 0.5 * np.arange(1, 7), atol=1e-6)
    s = summarize(m)
    assert s["stp3"]["L2"] == pytest.approx({"1s": 0.75, "2s": 1.25, "3s": 1.75, "avg": 1.25})
    assert s["uniad"]["L2"] == pytest.approx({"1s": 1.0, "2s": 2.0, "3s": 3.0, "avg": 2.0})
    assert s["stp3"]["collision"]["avg"] == 0.0


def test_box_exactly_on_the_ego_box_collides_only_at_its_step():
    # Plan at 4 m/s: waypoint 3 (index 2) at x = 6, ego box centre x = 6.5. The agent is the same box,
    # present at that step only. GT at 1 m/s stays well behind it.
    agent = dict(x=6.0 + EGO_CENTER_OFFSET_M, y=0.0, yaw=0.0, length=EGO_LENGTH_M, width=EGO_WIDTH_M, steps=[2])
    m = _eval(straight_line(4.0), make_sample(straight_line(1.0), [agent]))
    assert m.collision[0].tolist() == [False, False, True, False, False, False]
    assert not m.gt_collision.any()
    s = summarize(m)
    # ST-P3: running mean of per-step rates (0, 0, 100, 0, 0, 0) %; UniAD: value at steps 2 / 4 / 6.
    assert s["stp3"]["collision"] == pytest.approx({"1s": 0.0, "2s": 25.0, "3s": 100.0 / 6, "avg": (25.0 + 100.0 / 6) / 3})
    assert s["uniad"]["collision"] == pytest.approx({"1s": 0.0, "2s": 0.0, "3s": 0.0, "avg": 0.0})


@pytest.mark.parametrize("gap, expected", [(0.01, False), (-0.01, True)])
def test_box_ahead_separated_or_overlapping_by_1cm(gap, expected):
    # A 2 m x 2 m box straight ahead of waypoint 6 (x = 12), its rear edge `gap` m beyond the ego front.
    agent = dict(x=12.0 + FRONT + gap + 1.0, y=0.0, yaw=0.0, length=2.0, width=2.0, steps=[5])
    m = _eval(straight_line(4.0), make_sample(straight_line(1.0), [agent]))
    assert bool(m.collision[0, 5]) is expected
    assert not m.collision[0, :5].any()


@pytest.mark.parametrize("gap, expected", [(0.01, False), (-0.01, True)])
def test_box_beside_separated_or_overlapping_by_1cm(gap, expected):
    agent = dict(x=12.0 + EGO_CENTER_OFFSET_M, y=EGO_WIDTH_M / 2 + gap + 0.5, yaw=0.0, length=3.0, width=1.0, steps=[5])
    m = _eval(straight_line(4.0), make_sample(straight_line(1.0), [agent]))
    assert bool(m.collision[0, 5]) is expected


@pytest.mark.parametrize("gap, expected", [(0.01, False), (-0.01, True)])
def test_rotated_box_corner_against_the_ego_front(gap, expected):
    # A 2 m square rotated 45 deg points a corner at the ego's front edge; half diagonal sqrt(2).
    agent = dict(x=12.0 + FRONT + math.sqrt(2.0) + gap, y=0.3, yaw=math.pi / 4, length=2.0, width=2.0, steps=[5])
    m = _eval(straight_line(4.0), make_sample(straight_line(1.0), [agent]))
    assert bool(m.collision[0, 5]) is expected


def test_corner_to_corner_of_two_rotated_boxes():
    # Both boxes rotated by the same 30 deg, b shifted along their common diagonal: corners meet
    # within 1 cm (overlap) or stay 1 cm apart.
    yaw = math.radians(30.0)
    half = np.array([2.0, 1.0])
    diag = 2 * (half[0] * np.array([math.cos(yaw), math.sin(yaw)]) + half[1] * np.array([-math.sin(yaw), math.cos(yaw)]))
    unit = diag / np.linalg.norm(diag)
    for gap, expected in ((0.01, False), (-0.01, True)):
        centre_b = diag + gap * unit
        assert bool(boxes_overlap(np.zeros(2), yaw, half, centre_b, yaw, half)) is expected


def test_exactly_touching_boxes_count_like_shapely_intersects():
    half = np.array([0.5, 0.5])
    for centre_b in ([1.0, 0.0], [1.0, 1.0], [1.0, 1.0 + 2.0**-20]):
        ours = bool(boxes_overlap(np.zeros(2), 0.0, half, np.array(centre_b), 0.0, half))
        a = Polygon(box_corners(0.0, 0.0, 1.0, 1.0, 0.0))
        b = Polygon(box_corners(centre_b[0], centre_b[1], 1.0, 1.0, 0.0))
        assert ours == a.intersects(b)
    assert bool(boxes_overlap(np.zeros(2), 0.0, half, np.array([1.0, 1.0]), 0.0, half))  # corner contact


def test_step_excluded_when_ground_truth_also_collides():
    agent = dict(x=6.0 + EGO_CENTER_OFFSET_M, y=0.0, yaw=0.0, length=2.0, width=2.0, steps=[2])
    m = _eval(straight_line(4.0), make_sample(straight_line(4.0), [agent]))
    assert m.gt_collision[0].tolist() == [False, False, True, False, False, False]
    assert not m.collision.any()
    assert summarize(m)["gt_collision_steps"] == 1


def test_agent_absent_at_a_step_is_ignored():
    # A static 2 m box at x = 6.5 is reached by the 4.084 m ego box at waypoints 2, 3 and 4.
    agent = dict(x=6.0 + EGO_CENTER_OFFSET_M, y=0.0, yaw=0.0, length=2.0, width=2.0)
    present = _eval(straight_line(4.0), make_sample(straight_line(1.0), [agent]))
    assert present.collision[0].tolist() == [False, True, True, True, False, False]
    agent["steps"] = [0, 1, 3, 4, 5]
    absent = _eval(straight_line(4.0), make_sample(straight_line(1.0), [agent]))
    assert absent.collision[0].tolist() == [False, True, False, True, False, False]


def test_yaw_central_difference_and_backward_last_step():
    xy = np.array([[[1, 0], [2, 1], [2, 3], [1, 4], [0, 4], [-1, 4]]], np.float64)
    expect = [math.atan2(1, 2), math.atan2(3, 1), math.atan2(3, -1), math.atan2(1, -2), math.atan2(0, -2), math.atan2(0, -1)]
    np.testing.assert_allclose(trajectory_yaw(xy)[0], expect, atol=1e-12)
    np.testing.assert_allclose(reference_yaw([tuple(p) for p in xy[0]]), expect, atol=1e-12)


def test_nearly_stationary_plan_faces_forward_not_sideways():
    # Displacement 0.3 m < 0.5 m -> yaw 0 (x forward). A yaw of pi/2 (the original LiDAR-frame value
    # taken literally) would stretch the 4.084 m ego length along y and reach this agent.
    plan = np.stack([np.linspace(0.05, 0.3, 6), np.zeros(6)], axis=-1)
    assert np.all(trajectory_yaw(plan[None]) == 0.0)
    agent = dict(x=0.0, y=EGO_WIDTH_M / 2 + 0.05 + 0.5, yaw=0.0, length=1.0, width=1.0)
    m = _eval(plan, make_sample(straight_line(3.0), [agent]))
    assert not m.collision.any()
    sideways = boxes_overlap(np.array([0.3, 0.5]), math.pi / 2, np.array([EGO_LENGTH_M / 2, EGO_WIDTH_M / 2]), np.array([0.0, agent["y"]]), 0.0, np.array([0.5, 0.5]))
    assert bool(sideways)


def test_vectorised_agrees_with_shapely_reference_on_random_samples():
    samples = random_samples(300, seed=7)
    rng = np.random.default_rng(11)
    pred = np.stack([s.targets.ego_future for s in samples]) + rng.normal(0.0, 1.5, (len(samples), 6, 3))
    pred[::10] *= 0.05  # some near-stationary plans exercise the yaw special case
    fast = evaluate_trajectories(pred, samples)
    ref = reference_evaluate(pred, samples)
    assert fast.collision.sum() > 20 and fast.gt_collision.sum() > 20  # both branches are exercised
    np.testing.assert_array_equal(fast.collision, ref.collision)
    np.testing.assert_array_equal(fast.gt_collision, ref.gt_collision)
    np.testing.assert_allclose(fast.l2, ref.l2, atol=1e-6, rtol=0)


def test_per_command_breakdown_counts_and_empty_groups():
    samples = [make_sample(straight_line(2.0), sample_id="a"), make_sample(straight_line(3.0), sample_id="b")]
    curved = np.stack([np.linspace(1, 6, 6), np.linspace(0.5, 3.0, 6)], axis=-1)
    samples.append(make_sample(curved, sample_id="c"))
    pred = np.stack([s.targets.ego_future for s in samples])
    pred[2, :, 1] += 1.0
    out = summarize_by_command(evaluate_trajectories(pred, samples))
    assert [out[c]["num_samples"] for c in ("ALL", "LEFT", "RIGHT", "STRAIGHT")] == [3, 1, 0, 2]
    assert out["RIGHT"]["stp3"]["L2"]["1s"] is None
    assert out["LEFT"]["uniad"]["L2"]["3s"] == pytest.approx(1.0)
    assert out["STRAIGHT"]["uniad"]["L2"]["3s"] == pytest.approx(0.0)
    assert out["ALL"]["uniad"]["L2"]["3s"] == pytest.approx(1.0 / 3)


def test_errors_name_the_problem():
    good = make_sample(straight_line(1.0), sample_id="ok")
    bad = make_sample(straight_line(1.0), sample_id="short", future_mask=[True] * 5 + [False])
    with pytest.raises(ValueError, match="short"):
        evaluate_trajectories(np.zeros((2, 6, 2)), [good, bad])
    with pytest.raises(ValueError, match=r"\(1, 6, >=2\)"):
        evaluate_trajectories(np.zeros((1, 5, 2)), [good])
    broken = make_sample(straight_line(1.0), [dict(x=5, y=0, yaw=0, length=1, width=1)], sample_id="broken")
    broken.targets.agent_futures = broken.targets.agent_futures[:0]
    with pytest.raises(ValueError, match="broken"):
        FutureAgentBoxes.from_samples([broken])


def test_select_subsets_every_field():
    m = evaluate_trajectories(np.zeros((2, 6, 2)), [make_sample(straight_line(1.0), sample_id=i) for i in "xy"])
    sub = m.select(np.array([False, True]))
    assert isinstance(sub, PerSampleMetrics) and sub.sample_ids == ["y"] and sub.l2.shape == (1, 6)
