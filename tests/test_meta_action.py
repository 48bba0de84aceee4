"""Meta-action rules (dsdrive.annotation.meta_action) on hand-built ego-frame trajectories (0.5 s steps)."""

from __future__ import annotations

import numpy as np
import pytest

from dsdrive.annotation.schema import BEHAVIOURS, SPEEDS
from dsdrive.annotation.meta_action import TrajectoryFeatures, meta_action_from_features, meta_action_from_trajectory, trajectory_features

T = 0.5 * np.arange(1, 7)


def straight(v0: float, a: float = 0.0) -> np.ndarray:
    tc = np.minimum(T, v0 / -a) if a < 0 else T
    return np.stack([v0 * tc + 0.5 * a * tc**2, np.zeros(6)], axis=-1)


def arc(speed: float, radius: float, left: bool = True) -> np.ndarray:
    """Constant-speed circular arc starting along +x."""
    th = speed * T / radius
    y = radius * (1 - np.cos(th))
    return np.stack([radius * np.sin(th), y if left else -y], axis=-1)


def lane_change(speed: float, offset: float) -> np.ndarray:
    """Smooth lateral move of ``offset`` m (cosine profile) that ends parallel to the lane."""
    return np.stack([speed * T, offset * (1 - np.cos(np.pi * T / 3.0)) / 2], axis=-1)


@pytest.mark.parametrize(
    "wp, v, behaviour, speed",
    [
        (straight(8.0), 8.0, "MOVE FORWARD", "CONSTANT"),
        (straight(8.0, 0.3), 8.0, "MOVE FORWARD", "CONSTANT"),
        (straight(5.0, 1.0), 5.0, "MOVE FORWARD", "ACCELERATION"),
        (straight(5.0, 3.0), 5.0, "MOVE FORWARD", "QUICK ACCELERATION"),
        (straight(10.0, -1.0), 10.0, "MOVE FORWARD", "DECELERATION"),
        (straight(10.0, -3.0), 10.0, "MOVE FORWARD", "QUICK DECELERATION"),
        (straight(6.0, -3.0), 6.0, "MOVE FORWARD", "DECELERATION TO ZERO"),
        (np.zeros((6, 2)), 0.0, "STOP", "CONSTANT"),
        (np.full((6, 2), [0.1, 0.0]), 2.0, "STOP", "DECELERATION TO ZERO"),
        (arc(6.0, 10.0, left=True), 6.0, "TURN LEFT", "CONSTANT"),
        (arc(6.0, 10.0, left=False), 6.0, "TURN RIGHT", "CONSTANT"),
        (lane_change(10.0, 3.5), 10.0, "CHANGE LANE TO LEFT", "CONSTANT"),
        (lane_change(10.0, -3.5), 10.0, "CHANGE LANE TO RIGHT", "CONSTANT"),
        (lane_change(10.0, 1.0), 10.0, "MOVE FORWARD", "CONSTANT"),
    ],
)
def test_meta_action_classes(wp, v, behaviour, speed):
    ma = meta_action_from_trajectory(wp, v)
    assert (ma.behaviour, ma.speed) == (behaviour, speed)
    assert 0 <= ma.index < len(BEHAVIOURS) * len(SPEEDS)


def feats(lateral: float, heading: float) -> TrajectoryFeatures:
    return TrajectoryFeatures(v_now=8.0, v_late=8.0, v_final=8.0, accel=0.0, path_length=24.0,
                              lateral=lateral, heading_change_deg=heading, horizon=3.0)


@pytest.mark.parametrize(
    "lateral, heading, behaviour",
    [
        (0.5, 25.0, "TURN LEFT"),  # heading alone
        (-0.5, -25.0, "TURN RIGHT"),
        (4.5, 6.0, "TURN LEFT"),  # Senna: lateral > 4 m and heading > 5 deg
        (4.5, 3.0, "CHANGE LANE TO LEFT"),
        (3.0, 12.0, "TURN LEFT"),  # 2-4 m with >= 10 deg: a curve/turn
        (3.0, 6.0, "CHANGE LANE TO LEFT"),
        (-2.5, -2.0, "CHANGE LANE TO RIGHT"),
        (1.9, 8.0, "MOVE FORWARD"),
        (-4.5, 7.0, "TURN RIGHT"),  # side from the lateral offset when the two disagree
    ],
)
def test_path_thresholds(lateral, heading, behaviour):
    assert meta_action_from_features(feats(lateral, heading)).behaviour == behaviour


def test_heading_column_ignored_and_student_shape_agrees():
    wp = arc(6.0, 15.0)
    with_heading = np.concatenate([wp, np.full((6, 1), 3.0)], axis=1)  # nonsense headings
    assert meta_action_from_trajectory(wp, 6.0) == meta_action_from_trajectory(with_heading, 6.0)


def test_speed_from_history_when_status_unknown():
    hist = np.stack([-5.0 * 0.5 * np.arange(4, 0, -1), np.zeros(4)], axis=-1)  # 5 m/s before now
    f = trajectory_features(straight(5.0, 2.5), None, history=hist)
    assert f.v_now == pytest.approx(5.0)
    assert meta_action_from_trajectory(straight(5.0, 2.5), float("nan"), history=hist).speed == "QUICK ACCELERATION"
    # without status or history, the first step's mean speed stands in for the current speed
    assert trajectory_features(straight(8.0), None).v_now == pytest.approx(8.0)


def test_mask_uses_valid_prefix():
    wp = straight(8.0)
    wp[3:] = np.nan  # past the end of the log
    mask = np.array([True, True, True, False, False, False])
    ma = meta_action_from_trajectory(wp, 8.0, mask=mask)
    assert (ma.behaviour, ma.speed) == ("MOVE FORWARD", "CONSTANT")
    assert trajectory_features(wp, 8.0, mask=mask).horizon == pytest.approx(1.5)


@pytest.mark.parametrize(
    "wp, mask, match",
    [
        (np.zeros((6, 4)), None, "shape"),
        (np.full((6, 2), np.nan), None, "non-finite"),
        (np.zeros((6, 2)), np.zeros(6, bool), "no valid waypoint"),
        (np.zeros((6, 2)), np.ones(5, bool), "mask"),
    ],
)
def test_bad_input_raises(wp, mask, match):
    with pytest.raises(ValueError, match=match):
        meta_action_from_trajectory(wp, 1.0, mask=mask)
