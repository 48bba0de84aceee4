"""Cross-validation by scene (:mod:`dsdrive.evaluation.cross_validate`): folds, the no-overlap rule,
per-sample metrics, aggregation, and a small real run (4 nuScenes-mini scenes, 2 folds x 1 seed)
that resumes without training anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_open_loop import make_sample, straight_line
from helpers_scenarionet import REAL_DIR, needs_real_data

from dsdrive.evaluation import cross_validate as cv
from dsdrive.evaluation.metrics.planning import PerSampleMetrics, summarize


def test_folds_are_a_deterministic_round_robin_partition_of_sorted_scenes():
    ids = ["s5", "s1", "s3", "s2", "s4", "s1", "s6", "s7", "s8"]
    folds = cv.make_folds(ids, 3)
    assert folds == [["s1", "s4", "s7"], ["s2", "s5", "s8"], ["s3", "s6"]]
    assert cv.make_folds(list(reversed(ids)), 3) == folds
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(set(ids)) and len(flat) == len(set(flat))  # every scene tested exactly once
    for k in range(3):  # training scenes of a fold never include its test scenes
        train = {s for j, f in enumerate(folds) if j != k for s in f}
        assert not train & set(folds[k]) and train | set(folds[k]) == set(ids)


@pytest.mark.parametrize("k", [1, 9, 0])
def test_bad_fold_counts_are_errors(k):
    with pytest.raises(ValueError, match=f"--folds {k}"):
        cv.make_folds([f"s{i}" for i in range(8)], k)


def test_overlap_is_refused_planned_or_recorded(tmp_path):
    unit = cv.Unit("ego_mlp", 0, 0, ["a", "b"], ["c", "d"], tmp_path)
    cv.check_no_overlap(unit, ["c", "d"], None)
    with pytest.raises(RuntimeError, match="include test scenes"):
        cv.check_no_overlap(cv.Unit("ego_mlp", 0, 0, ["a", "b"], ["b", "c"], tmp_path))
    with pytest.raises(RuntimeError, match="checkpoint's training scenes"):
        cv.check_no_overlap(unit, ["a", "c"], None)
    with pytest.raises(RuntimeError, match="held out"):
        cv.check_no_overlap(unit, None, ["a"])


def test_tags_select_recorded_ego_unmirrored_samples():
    s = make_sample(straight_line(5.0), sample_id="x")
    assert cv.is_recorded_ego(s)
    for tag in ({"ego_source": "agent"}, {"mirrored": True}):
        t = make_sample(straight_line(5.0), sample_id="y")
        for k, v in tag.items():
            setattr(t, k, v)
        assert not cv.is_recorded_ego(t)


def test_pooled_per_sample_columns_equal_the_open_loop_summary():
    rng = np.random.default_rng(0)
    l2, coll = rng.random((50, 6)) * 3, rng.random((50, 6)) < 0.1
    cols = cv.per_sample_columns(l2, coll).mean(0)
    ref = summarize(PerSampleMetrics([str(i) for i in range(50)], ["STRAIGHT"] * 50, l2, coll, np.zeros_like(coll)))
    for j, (p, m, h) in enumerate(cv.COLUMNS):
        assert cols[j] == pytest.approx(ref[p][m][h], abs=1e-12), (p, m, h)


def _record(planner, seed, ids, scenes, l2):
    return {"planner": planner, "seed": seed, "sample_ids": ids, "scene_ids": scenes, "l2": np.asarray(l2).tolist(),
            "collision": np.zeros((len(ids), 6), int).tolist(), "test_scenes": sorted(set(scenes))}


def test_aggregate_pools_folds_averages_seeds_and_pairs_samples():
    ids, scenes = [f"s{i}" for i in range(12)], [f"scene-{i % 4}" for i in range(12)]
    base = np.tile(np.arange(12.0)[:, None], (1, 6))
    res = {"constant_velocity": [_record("constant_velocity", None, ids[:6], scenes[:6], base[:6]),
                                 _record("constant_velocity", None, ids[6:], scenes[6:], base[6:])],
           "ego_mlp": [_record("ego_mlp", s, part, sc, base[sl] + 0.5 + s) for s in (0, 1)
                       for part, sc, sl in ((ids[:6], scenes[:6], slice(0, 6)), (ids[6:], scenes[6:], slice(6, 12)))]}
    agg = cv.aggregate(res, "constant_velocity", [], n_boot=200, seed=0)
    assert agg["planners"]["ego_mlp"]["seeds"] == [0, 1] and agg["planners"]["constant_velocity"]["seeds"] == [None]
    assert agg["planners"]["ego_mlp"]["seed_means"]["stp3/L2/avg"] == [6.0, 7.0]
    d = agg["differences"][0]
    assert (d["a"], d["b"]) == ("ego_mlp", "constant_velocity")
    assert d["mean"]["stp3/L2/avg"] == pytest.approx(1.0) and d["ci"]["stp3/L2/avg"] == pytest.approx([1.0, 1.0])
    res["ego_mlp"].append(_record("ego_mlp", 0, ids[:1], scenes[:1], base[:1]))
    with pytest.raises(RuntimeError, match="tested twice"):
        cv.aggregate(res, "constant_velocity", [], n_boot=50, seed=0)


# ------------------------------------------------------------------------------------------- real run
@pytest.fixture(scope="module")
def real4(tmp_path_factory):
    """The first 4 nuScenes-mini scenes with a mirrored copy of every sample, rule-annotated."""
    from dsdrive.cli import main

    root = tmp_path_factory.mktemp("cv_data")
    assert main(["build", "--source", "scenarionet", "--input", str(REAL_DIR), "--num-scenarios", "4", "--mirror",
                 "--out", str(root / "planning"), "--no-progress"]) == 0
    assert main(["annotate", "--teacher", "rule", "--data", str(root / "planning"), "--out", str(root / "ann")]) == 0
    assert main(["merge", "--data", str(root / "planning"), "--annotations", str(root / "ann"), "--out", str(root / "data")]) == 0
    return root / "data"


def _argv(data, out, *planners, extra=()):
    few_steps = "--max_steps 2 --per_device_train_batch_size 4"
    return ["--data", str(data), "--folds", "2", "--seeds", "1", "--planner", *planners, "--n-boot", "300", "--out", str(out),
            "--planner-args", "ego_mlp=--epochs 20", f"student={few_steps}", f"student_no_ego={few_steps}", *extra]


@needs_real_data
def test_cv_on_four_real_scenes_tests_each_sample_once_and_resumes(real4, tmp_path, monkeypatch, capsys):
    from dsdrive.data.dataset import load_samples

    out = tmp_path / "cv"
    assert cv.main(_argv(real4, out, "constant_velocity", "ego_mlp")) == 0
    report = json.loads((out / "cv.json").read_text())
    samples = load_samples(real4)
    recorded = [s for s in samples if cv.is_recorded_ego(s) and np.all(s.targets.ego_future_mask)]
    assert len(recorded) < len(samples)  # the mirrored copies are there, and are not tested
    s = report["settings"]
    assert s["num_test_samples"] == len(recorded) and len(s["fold_scenes"]) == 2
    tested = []
    for fold in (0, 1):
        res = json.loads((out / "runs" / "ego_mlp" / f"fold{fold}-seed0" / "result.json").read_text())
        assert not set(res["train_scenes"]) & set(res["test_scenes"]) and set(res["scene_ids"]) <= set(res["test_scenes"])
        ckpt = json.loads((out / "runs" / "ego_mlp" / f"fold{fold}-seed0" / "checkpoint" / "config.json").read_text())
        assert ckpt["trained_on_scenes"] == res["train_scenes"]
        assert ckpt["num_train_samples"] > sum(sc in res["train_scenes"] for sc in (x.scene_id for x in recorded))  # mirrored train
        tested += res["sample_ids"]
    assert sorted(tested) == sorted(x.sample_id for x in recorded)  # each recorded sample tested exactly once
    agg = report["aggregate"]
    assert set(agg["planners"]) == {"constant_velocity", "ego_mlp"}
    for r in agg["planners"].values():
        lo, hi = r["ci"]["stp3/L2/avg"]
        assert r["num_samples"] == len(recorded) and r["num_scenes"] == 4 and lo <= r["mean"]["stp3/L2/avg"] <= hi
    assert [(d["a"], d["b"]) for d in agg["differences"]] == [("ego_mlp", "constant_velocity")]
    assert report["intervals"]["ego_mlp"]["ALL"]["uniad"]["collision"]["3s"][0] >= 0
    from dsdrive.evaluation.open_loop_report import _check_cv

    assert set(_check_cv(report)) == {"constant_velocity", "ego_mlp"}  # readable by `dsdrive open-loop --cv-summary`
    md = (out / "cv.md").read_text()
    assert "## ST-P3" in md and "## UniAD" in md and "| ego_mlp - constant_velocity | stp3 |" in md and "wall" in md
    assert "wall time" in capsys.readouterr().out

    def no_training(*a, **k):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(cv, "train_unit", no_training)
    monkeypatch.setattr(cv, "evaluate_unit", no_training)
    assert cv.main(_argv(real4, out, "constant_velocity", "ego_mlp")) == 0
    again = json.loads((out / "cv.json").read_text())
    assert again["aggregate"] == report["aggregate"]
    assert capsys.readouterr().out.count("done before, skipped") == 4
    # other training arguments on the same --out are refused, naming the unit
    bad = _argv(real4, out, "constant_velocity", "ego_mlp")
    bad[bad.index('ego_mlp=--epochs 20')] = 'ego_mlp=--epochs 21'
    assert cv.main(bad) == 2
    assert "ego_mlp/fold0-seed0" in capsys.readouterr().err


@pytest.mark.slow
@needs_real_data
def test_cv_with_students_and_the_ego_status_ablation(real4, tmp_path):
    """Students trained a few steps per fold through ``dsdrive distill``; the ablation pair is added."""
    out = tmp_path / "cv"
    assert cv.main(_argv(real4, out, "constant_velocity", "student", "student_no_ego", extra=["--compare", "student:constant_velocity"])) == 0
    report = json.loads((out / "cv.json").read_text())
    pairs = [(d["a"], d["b"]) for d in report["aggregate"]["differences"]]
    assert pairs == [("student", "constant_velocity"), ("student_no_ego", "constant_velocity"), ("student", "student_no_ego")]
    for fold in (0, 1):
        cfg = json.loads((out / "runs" / "student_no_ego" / f"fold{fold}-seed0" / "checkpoint" / "config.json").read_text())
        assert cfg["use_ego_status"] is False
        rep = json.loads((out / "runs" / "student" / f"fold{fold}-seed0" / "checkpoint" / "eval_heldout.json").read_text())
        assert rep["val_scenes"] == report["settings"]["fold_scenes"][fold] and not set(rep["train_scenes"]) & set(rep["val_scenes"])
    assert "| student - student_no_ego | stp3 |" in (out / "cv.md").read_text()


@needs_real_data
def test_a_planner_whose_training_fails_is_reported_not_available(real4, tmp_path, capsys):
    out = tmp_path / "cv"
    argv = _argv(real4, out, "constant_velocity", "student_no_ego") + ['student_no_ego=--no_such_flag 1']
    assert cv.main(argv) == 0
    report = json.loads((out / "cv.json").read_text())
    assert "student_no_ego" in report["unavailable"] and "train.log" in report["unavailable"]["student_no_ego"]
    assert "| student_no_ego | – | – | not available" in (out / "cv.md").read_text()
    assert "no_such_flag" in (out / "runs" / "student_no_ego" / "fold0-seed0" / "train.log").read_text()


def test_stage_table_and_wrapper_name_the_command():
    from dsdrive.cli import SUBCOMMANDS

    assert SUBCOMMANDS["cross-validate"][:2] == ("dsdrive.evaluation.cross_validate", "main")
    wrapper = Path(__file__).resolve().parents[1] / "eval" / "cross_validate.py"
    assert "from dsdrive.evaluation.cross_validate import main" in wrapper.read_text()


def test_warm_start_planner_needs_init_from_and_pairs_with_the_student(tmp_path):
    """student_warm_start without --init_from would silently be the student again: refused before anything runs."""
    args = cv.build_parser().parse_args(["--data", str(tmp_path), "--folds", "2", "--planner", "constant_velocity",
                                         "student_warm_start", "--out", str(tmp_path / "cv")])
    with pytest.raises(ValueError, match="student_warm_start needs --planner-args"):
        cv.run(args)
    assert not (tmp_path / "cv").exists()
    assert ("student_warm_start", "student") in cv.NATURAL_PAIRS
    assert cv.RECIPES["student_warm_start"].args == cv.RECIPES["student"].args


def test_vae_planners_are_the_student_recipes_plus_the_op():
    """student_cvae / student_kd_cvae differ from their twins by --planning_cvae only, and are compared to them."""
    assert cv.RECIPES["student_cvae"].args == (*cv.RECIPES["student"].args, "--planning_cvae", "true")
    kd, kd_cvae = cv.RECIPES["student_kd_kinematic"], cv.RECIPES["student_kd_cvae"]
    assert kd_cvae.args == (*kd.args, "--planning_cvae", "true") and kd_cvae.teacher == kd.teacher == "planning_teacher_kinematic"
    assert {("student_cvae", "student"), ("student_kd_cvae", "student"), ("student_kd_cvae", "student_cvae")} <= set(cv.NATURAL_PAIRS)


def test_proposal_mode_planner_is_the_student_recipe_plus_its_head():
    """student_idm_modes differs from the student by the idm_modes head and best-mode plans, parses as
    a distill recipe, and is compared to the student."""
    from dsdrive.training.distill_config import DistillConfig

    extra = ("--waypoint_prior", "idm_modes", "--plan_selection", "best")
    assert cv.RECIPES["student_idm_modes"].args == (*cv.RECIPES["student"].args, *extra)
    cfg = DistillConfig(waypoint_prior="idm_modes", plan_selection="best")
    assert cfg.student_config_kwargs()["waypoint_prior"] == "idm_modes"
    assert ("student_idm_modes", "student") in cv.NATURAL_PAIRS
