"""Risk, notable objects, the rule teacher and the reasoning/student templates."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from helpers_annotate import make_sample, shared_data_dir

from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.annotation.reasoning import REASONING_TEMPLATE_VERSION, render_reasoning, render_student_prompt
from dsdrive.annotation.risk import agent_positions, constant_acceleration_rollout, ego_positions, notable_objects, risk_scores
from dsdrive.annotation.annotators import build_annotator
from dsdrive.annotation.annotators.rule import RuleAnnotator

STEPS = 0.5 * np.arange(7)  # 0 ... 3 s


def ego_line(speed: float) -> np.ndarray:
    return np.stack([speed * STEPS, np.zeros(7)], axis=-1)


def agent_line(x0, y0, vx, vy) -> np.ndarray:
    return np.stack([x0 + vx * STEPS, y0 + vy * STEPS], axis=-1)


def risk_of(agents: list[tuple[float, float, float, float]], ego_speed: float = 0.0):
    xy = np.stack([agent_line(*a) for a in agents])
    n = len(agents)
    return risk_scores(ego_line(ego_speed), xy, np.full(n, 4.5), np.full(n, 1.9), np.array([a[2:] for a in agents]))


# ------------------------------------------------------------------------------------ risk
def test_closer_agent_has_higher_risk():
    r = risk_of([(8.0, 0.0, 0.0, 0.0), (20.0, 0.0, 0.0, 0.0), (40.0, 0.0, 0.0, 0.0)])
    assert r.risk[0] > r.risk[1] > r.risk[2]
    assert r.rank.tolist() == [1, 2, 3]


def test_faster_approaching_agent_has_higher_risk():
    r = risk_of([(40.0, 0.0, -3.0, 0.0), (40.0, 0.0, -12.0, 0.0)])
    assert r.risk[1] > r.risk[0]
    assert r.ttc[1] < r.ttc[0]
    assert r.rank.tolist() == [2, 1]


def test_agent_moving_away_is_low_risk():
    r = risk_of([(12.0, 0.0, 8.0, 0.0), (12.0, 0.0, -8.0, 0.0)])
    assert r.risk[0] < 0.1 < 0.9 < r.risk[1]
    assert np.isinf(r.ttc[0])


def test_risk_bounds_and_rank_permutation():
    rng = np.random.default_rng(0)
    agents = [tuple(v) for v in rng.uniform([-30, -30, -10, -10], [30, 30, 10, 10], size=(25, 4))]
    r = risk_of(agents, ego_speed=6.0)
    assert ((r.risk >= 0) & (r.risk <= 1)).all()
    assert sorted(r.rank.tolist()) == list(range(1, 26))
    assert r.rank[np.argmax(r.risk)] == 1


def test_ego_rollout_when_future_masked_never_reverses():
    xy = ego_positions(np.zeros((6, 3)), np.zeros(6, bool), np.array([4.0, 0.0, -2.0, 0, 0, 0]))
    assert xy[0].tolist() == [0.0, 0.0]
    assert np.all(np.diff(xy[:, 0]) >= 0) and xy[-1, 0] == pytest.approx(4.0)  # stops after 2 s at 4 m
    np.testing.assert_allclose(constant_acceleration_rollout(2.0, 1.0, 2), [[1.125, 0.0], [2.5, 0.0]])


def test_masked_agent_steps_continue_at_constant_velocity():
    boxes = np.array([[10.0, 0.0, 0, 4.5, 1.9, 1.6, 0]])
    fut = np.zeros((1, 12, 3))
    fut[0, :, 0] = 10.0 + 2.0 * 0.5 * np.arange(1, 13)
    mask = np.ones((1, 12), bool)
    mask[0, 3:] = False
    fut[0, 3:] = np.nan
    pos, gt = agent_positions(boxes, np.array([[2.0, 0.0]]), fut, mask)
    np.testing.assert_allclose(pos[0, :, 0], 10.0 + 2.0 * STEPS)
    assert gt[0].tolist() == [True, True, True, True, False, False, False]


def test_notable_objects_corridor():
    ego = ego_line(8.0)  # 24 m straight ahead in 3 s
    agents = np.stack([
        agent_line(15.0, 0.3, 4.0, 0.0),  # lead vehicle in the ego lane
        agent_line(18.0, 3.7, -8.0, 0.0),  # oncoming, next lane
        agent_line(10.0, -6.0, 0.0, 2.0),  # pedestrian crossing onto the path
        agent_line(30.0, 0.0, 0.0, 0.0),  # on the path but beyond 20 m now
    ])
    notable = notable_objects(ego, agents, np.ones((4, 7), bool), np.array([1.9, 1.9, 0.7, 1.9]))
    assert sorted(notable.indices.tolist()) == [0, 2]
    # a stopped ego still sees the vehicle it queues behind (10 m look-ahead)
    queued = notable_objects(np.zeros((7, 2)), agents[:1] * 0 + [7.0, 0.0], np.ones((1, 7), bool), np.array([1.9]))
    assert queued.indices.tolist() == [0]


# ---------------------------------------------------------------------------- rule teacher
def test_rule_teacher_synthetic_annotation():
    s = make_sample(speed=8.0, accel=-2.5)
    (ann,) = RuleAnnotator().annotate([s])
    assert isinstance(ann, Annotation) and ann.hindsight and ann.teacher == "rule" and ann.prompt_version == "rule/v1"
    Annotation.model_validate_json(ann.model_dump_json())
    np.testing.assert_allclose(np.array(ann.waypoints), s.targets.ego_future[:, :2], atol=1e-3)
    assert ann.meta_action == meta_action_from_trajectory(s.targets.ego_future, 8.0)
    assert str(ann.meta_action) == "MOVE FORWARD with QUICK DECELERATION"
    assert {k.agent_id for k in ann.key_objects} == {"lead", "ped"}
    assert [r.rank for r in ann.risks] == list(range(1, len(ann.risks) + 1))
    assert [r.risk for r in ann.risks] == sorted((r.risk for r in ann.risks), reverse=True)
    assert "oncoming" not in {k.agent_id for k in ann.key_objects}
    assert "pedestrian crossing" in ann.scene_summary.lower()


def test_rule_teacher_with_no_agents():
    """An empty road (seen in MetaDrive procedural scenes) is annotated, not failed."""
    (ann,) = RuleAnnotator().annotate([make_sample(with_agents=False)])
    assert isinstance(ann, Annotation), ann
    assert ann.key_objects == [] and ann.risks == []
    assert str(ann.meta_action) == "MOVE FORWARD with CONSTANT"


def test_rule_teacher_failure_on_masked_future():
    s = make_sample(future_mask=np.zeros(6, bool))
    ok = make_sample("ok")
    res = RuleAnnotator().annotate([s, ok])
    assert isinstance(res[0], AnnotationFailure) and "ego_future_mask" in res[0].reason
    assert isinstance(res[1], Annotation) and res[1].sample_id == "ok"


def test_partial_future_keeps_annotation_without_waypoints():
    mask = np.array([True] * 4 + [False] * 2)
    (ann,) = RuleAnnotator().annotate([make_sample(future_mask=mask)])
    assert isinstance(ann, Annotation) and ann.waypoints is None


def test_build_teacher_errors(monkeypatch):
    import dsdrive.annotation.annotators as teachers

    assert isinstance(build_annotator("rule"), RuleAnnotator)
    with pytest.raises(ValueError, match="unknown annotator"):
        build_annotator("gpt-9")
    monkeypatch.setitem(teachers.ANNOTATORS, "missing", ("dsdrive.annotation.annotators.no_such_module", "X"))
    with pytest.raises(ImportError, match="no_such_module"):
        build_annotator("missing")


@pytest.fixture(scope="module")
def real_samples():
    if importlib.util.find_spec("data_builders.scenarionet") is None:
        pytest.skip("data_builders.scenarionet is not in this checkout")
    folder = shared_data_dir() / "nuscenes-mini-scenarionet"
    if not folder.is_dir():
        pytest.skip(f"real data absent: {folder}")
    from data_builders.scenarionet import build_scene, load_scenario

    out = []
    for scene in ("scene-0061", "scene-0553"):  # a moving and a stopped ego
        path = folder / f"sd_nuscenes_v1.0-mini_{scene}.pkl"
        out += build_scene(load_scenario(path), path)
    return out


def test_rule_teacher_on_real_nuscenes(real_samples):
    res = RuleAnnotator().annotate(real_samples)
    failures = [r for r in res if isinstance(r, AnnotationFailure)]
    assert not failures, failures[:3]
    assert [r.sample_id for r in res] == [s.sample_id for s in real_samples]
    behaviours = set()
    for s, ann in zip(real_samples, res):
        Annotation.model_validate(ann.model_dump(mode="json"))  # JSON round trip validates
        text = render_reasoning(ann.model_dump(mode="json"))
        assert f"Plan: {ann.meta_action}." in text
        assert 10 <= len(text.split()) <= 120, text
        ids = set(s.inputs.agents.ids)
        assert all(k.agent_id in ids for k in ann.key_objects) and all(r.agent_id in ids for r in ann.risks)
        behaviours.add(ann.meta_action.behaviour)
    assert {"STOP", "MOVE FORWARD"} <= behaviours  # scene-0553 is stopped, scene-0061 drives


# ------------------------------------------------------------------------------ templates
def test_render_reasoning_four_parts_and_rounding():
    (ann,) = RuleAnnotator().annotate([make_sample(speed=7.0)])
    text = render_reasoning(ann)
    assert text == render_reasoning(ann.model_dump(mode="json"))
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Scene", "Key objects", "Plan", "Why"]
    assert "(15.0, 0.2)" in text  # the lead vehicle, rounded to 0.1
    assert REASONING_TEMPLATE_VERSION == "v1"
    with pytest.raises(FileNotFoundError, match="v999"):
        render_reasoning(ann, version="v999")


def test_student_prompt_has_no_future():
    s = make_sample(speed=6.5)
    prompt = render_student_prompt(s.inputs)
    assert "6.5 m/s" in prompt and "Mission goal: STRAIGHT" in prompt and "(-3.2, 0.0)" in prompt
    assert "steering unknown" in prompt  # masked status says so
    with pytest.raises(TypeError, match="PlanningInputs"):
        render_student_prompt(s)


def test_build_teacher_passes_only_accepted_options(monkeypatch, tmp_path):
    """A VLM teacher gets the CLI options its constructor takes; a missing --model is named."""
    import argparse
    import sys as _sys
    import types

    import dsdrive.annotation.annotators as teachers

    class FakeVLM(RuleAnnotator):
        def __init__(self, model: str, prompt: str = "p", concurrency: int = 1):
            super().__init__()
            self.options = dict(model=model, prompt=prompt, concurrency=concurrency)

    module = types.ModuleType("fake_vlm_teacher")
    module.FakeVLM = FakeVLM
    monkeypatch.setitem(_sys.modules, "fake_vlm_teacher", module)
    monkeypatch.setitem(teachers.ANNOTATORS, "fake", ("fake_vlm_teacher", "FakeVLM"))
    args = argparse.Namespace(model="/models/x", prompt=None, batch_size=4, concurrency=8, base_url=None,
                              max_pixels=1000, load_in_4bit=None, hindsight=None)
    t = build_annotator("fake", args)
    assert t.options == {"model": "/models/x", "prompt": "p", "concurrency": 8}
    with pytest.raises(ValueError, match="needs --model"):
        build_annotator("fake", argparse.Namespace(**{**vars(args), "model": None}))
