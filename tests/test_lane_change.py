"""Lane change by command in the lane walk (``route_centerline(..., lane_change_m=...)``) and in the
student's lane priors: LEFT / RIGHT move the centreline to the lane beside the ego when the ego's own
lane does not reach 2 m to that side, and the priors close the lateral offset to that lane."""

from __future__ import annotations

import dataclasses

import numpy as np
from helpers_student import make_inputs
from test_pdm_closed import _line, straight_road

from dsdrive.data.types import MapPolylines
from dsdrive.planners.pdm_centerline import route_centerline
from dsdrive.student.lane_prior import command_centerline, idm_mode_targets, lane_following_prior, lane_idm_proposals


def _y_at(line, x: float) -> float:
    return float(line.xy[np.argmin(np.abs(line.xy[:, 0] - x)), 1])


def test_left_command_takes_the_lane_beside_a_straight_lane():
    road = straight_road()  # ego lane y = 0, a lane to its left at y = 3.5
    old = route_centerline(road, None, "LEFT", 60.0, 60.0)
    assert not old.lane_change and abs(_y_at(old, 20.0)) < 0.1  # without lane_change_m: PDM-Closed's own walk
    line = route_centerline(road, None, "LEFT", 60.0, 60.0, lane_change_m=20.0)
    assert line.lane_change and "lane change LEFT" in line.source
    assert abs(_y_at(line, 20.0) - 3.5) < 0.1
    assert abs(float(line.project(np.zeros((1, 2)))[1][0]) + 3.5) < 0.1  # the ego is 3.5 m right of it
    for cmd in ("STRAIGHT", "RIGHT"):  # straight: keep the lane; right: no lane there
        other = route_centerline(road, None, cmd, 60.0, 60.0, lane_change_m=20.0)
        assert not other.lane_change and abs(_y_at(other, 20.0)) < 0.1


def test_right_command_leaves_a_left_turn_lane_for_the_straight_lane_beside_it():
    # scene-0757's layout: the ego's lane bends left 30 m ahead, a straight lane 3.5 m to its right
    x = np.linspace(-10.0, 30.0, 30)
    ang = np.linspace(0.0, np.pi / 2, 30)
    turn = np.vstack([np.stack([x, 0 * x], 1), np.stack([30 + 20 * np.sin(ang), 20 * (1 - np.cos(ang))], 1)[1:]])
    straight = np.stack([np.linspace(-10.0, 80.0, 40), np.full(40, -3.5)], 1)
    road = MapPolylines(["lane_centerline", "lane_centerline"], np.stack([_line(turn), _line(straight)]))
    keep = route_centerline(road, None, "RIGHT", 60.0, 60.0, lane_change_m=15.0)
    assert keep.lane_change and abs(_y_at(keep, 45.0) + 3.5) < 0.2
    left = route_centerline(road, None, "LEFT", 60.0, 60.0, lane_change_m=15.0)
    assert not left.lane_change  # LEFT: the ego's own lane turns left, no lane change
    near = route_centerline(road, None, "RIGHT", 60.0, 60.0, lane_change_m=45.0)
    assert near.lane_change  # the turn is within reach but goes left: still the lane change


def test_lane_priors_close_the_offset_to_the_new_lane():
    inp = dataclasses.replace(make_inputs(speed=8.0), map=straight_road(), command="LEFT")
    line, s0, d0 = command_centerline(inp, 8.0, 60.0)
    assert line.lane_change and abs(d0 + 3.5) < 0.1
    prior = lane_following_prior(inp)
    np.testing.assert_allclose(prior[:, 1], [0.875, 1.75, 2.625, 3.5, 3.5, 3.5], atol=0.05)  # linear over clip(2 s x 8, 8, 25) = 16 m
    props = lane_idm_proposals(inp, idm_mode_targets(6))
    assert np.all(props[1:, -1, 1] > 1.0)  # every moving proposal heads into the left lane
    straight = lane_following_prior(dataclasses.replace(inp, command="STRAIGHT"))
    assert np.abs(straight[:, 1]).max() < 0.05  # keeping the lane holds the offset (0 here)
