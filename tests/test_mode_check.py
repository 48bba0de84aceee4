"""PDM-Closed's check on the student's modes (dsdrive.planners.mode_check, ``student_checked``): a mode
that runs into a standing car or over a road edge is never driven, the student's favourite safe mode
is, the progress weight trades the student's score for progress, and every mode unsafe falls back to
the latest collision. Also the checked planner on a saved tiny student and its ``--cv-runs`` name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers_student import make_inputs, make_samples, one_thread, tiny_student  # noqa: F401
from test_pdm_closed import inputs, straight_road

from dsdrive.planners.mode_check import check_modes, track_plan
from dsdrive.planners.registry import load_planner

T = 0.5 * np.arange(1, 7)
CAR = ("VEHICLE", 18.0, 0.0, 4.5, 2.0, 0.0, 0.0, 0.0)  # standing 18 m ahead in the ego's lane


def _modes(speed: float) -> np.ndarray:
    """(3, 6, 2): brake to a stand within 3 s, hold ``speed``, hold ``speed`` while drifting 4 m right."""
    stop = np.stack([speed * T - speed / 6.0 * T ** 2, 0 * T], 1)
    cruise = np.stack([speed * T, 0 * T], 1)
    drift = np.stack([speed * T, -4.0 * (T / 3.0) ** 2], 1)
    return np.stack([stop, cruise, drift])


def test_tracked_plan_starts_at_the_ego_and_follows_the_waypoints():
    states = track_plan(inputs(8.0, straight_road()), _modes(8.0)[1])
    assert states.shape == (41, 6) and np.allclose(states[0, :2], 0.0)
    np.testing.assert_allclose(states[30, 0], 24.0, atol=1.0)  # 3 s at 8 m/s
    np.testing.assert_allclose(states[40, 0], 32.0, atol=1.5)  # extended at the last velocity to 4 s


def test_the_favourite_mode_is_driven_unless_it_collides_or_leaves_the_road():
    free = check_modes(inputs(8.0, straight_road()), _modes(8.0), np.array([0.2, 0.7, 0.1]))
    assert free.best == free.preferred == 1 and free.safe
    assert free.proposals[2].dac == 0.0  # 4 m right of the lane crosses the edge at y = -2
    blocked = check_modes(inputs(8.0, straight_road(), [CAR]), _modes(8.0), np.array([0.2, 0.7, 0.1]))
    assert blocked.proposals[1].nc == 0.0 and blocked.proposals[0].nc == 1.0
    assert blocked.best == 0 and blocked.preferred == 1 and blocked.safe
    assert blocked.explanation()["nc"] == [p.nc for p in blocked.proposals]


def test_progress_weight_trades_the_students_score_for_progress():
    scores = np.array([0.7, 0.3, 0.0])  # the student prefers to brake on a free road
    assert check_modes(inputs(8.0, straight_road()), _modes(8.0), scores).best == 0
    assert check_modes(inputs(8.0, straight_road()), _modes(8.0), scores, progress_weight=5.0).best == 1


def test_every_mode_unsafe_falls_back_to_the_latest_collision():
    modes = _modes(12.0)[[1, 0]]  # cruise into the car, or brake but still reach it
    res = check_modes(inputs(12.0, straight_road(), [("VEHICLE", 20.0, 0.0, 4.5, 2.0, 0.0, 0.0, 0.0)]), modes, np.array([0.9, 0.1]))
    assert not res.safe and all(p.nc == 0.0 for p in res.proposals)
    assert res.best == 1 and res.proposals[1].collision_step > res.proposals[0].collision_step


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"modes \(6, 2\)"):
        check_modes(inputs(8.0, straight_road()), np.zeros((6, 2)), np.ones(6))
    with pytest.raises(ValueError, match=r"scores \(2,\)"):
        check_modes(inputs(8.0, straight_road()), _modes(8.0), np.ones(2))
    with pytest.raises(ValueError, match="progress_weight -1"):
        check_modes(inputs(8.0, straight_road()), _modes(8.0), np.ones(3), progress_weight=-1.0)


def test_checked_student_drives_one_of_its_modes(tmp_path, one_thread):  # noqa: F811
    model, proc = tiny_student(make_samples(), waypoint_prior="idm_modes")
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    planner = load_planner("student_checked", tmp_path)
    inp = dataclasses.replace(make_inputs(speed=6.0), map=straight_road())
    out = planner.plan([inp], risk_map=False)
    wp = planner.compute_trajectory(inp)
    modes = out.mode_waypoints[0].float().numpy()
    assert wp.shape == (6, 3) and min(np.abs(m - wp).max() for m in modes) < 1e-5
    _, explanation = planner.plan_and_explain(inp)
    check = explanation["mode_check"]
    assert len(check["nc"]) == modes.shape[0] and 0 <= check["chosen"] < modes.shape[0]
    with pytest.raises(ValueError, match="progress_weight"):
        load_planner("student_checked", tmp_path, progress_weight=-1.0)
