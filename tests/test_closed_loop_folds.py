"""``dsdrive closed-loop --cv-runs``: each scene is driven by the cross-validation checkpoint of the
fold that held it out (:mod:`dsdrive.evaluation.closed_loop.fold_checkpoints`). A fake
``dsdrive cross-validate`` output (``cv_settings.json`` + ``runs/PLANNER/foldF-seedS/checkpoint``)
with the records the stages write; the end-to-end run uses two tiny ego_mlp checkpoints that drive
visibly differently (fold 0 plans to stand still, fold 1 keeps its speed) on two real scenes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from dsdrive.evaluation.closed_loop.cli import main, resolve_cv_runs
from dsdrive.evaluation.closed_loop.fold_checkpoints import checkpoints_for_scenes, fold_checkpoint

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "nuscenes-mini-scenarionet"
FOLDS = [["scene-0061", "scene-0796"], ["scene-0553", "scene-0655"]]


def _cv_out(root: Path, planner: str = "student", seeds=(0,), folds=FOLDS) -> Path:
    """A cross-validation output: settings + one checkpoint per fold x seed recording its split as
    the distillation stage does (``eval_heldout.json``) and ``train.json`` as cross-validate does."""
    (root / "runs" / planner).mkdir(parents=True)
    (root / "cv_settings.json").write_text(json.dumps({"data": "/x", "folds": len(folds), "fold_scenes": folds}))
    for k, held in enumerate(folds):
        train = sorted(s for j, f in enumerate(folds) if j != k for s in f)
        for seed in seeds:
            unit = root / "runs" / planner / f"fold{k}-seed{seed}"
            (unit / "checkpoint").mkdir(parents=True)
            (unit / "checkpoint" / "eval_heldout.json").write_text(json.dumps({"train_scenes": train, "val_scenes": held}))
            (unit / "train.json").write_text(json.dumps({"test_scenes": held, "checkpoint_train_scenes": train}))
    return root / "runs" / planner


def test_each_scene_gets_the_checkpoint_of_the_fold_that_held_it_out(tmp_path):
    runs = _cv_out(tmp_path / "cv", seeds=(0, 1))
    got = checkpoints_for_scenes(runs, ["scene-0655", "scene-0061", "scene-0796"], seed=1)
    assert {s: fc.directory for s, fc in got.items()} == {
        "scene-0655": runs / "fold1-seed1" / "checkpoint", "scene-0061": runs / "fold0-seed1" / "checkpoint",
        "scene-0796": runs / "fold0-seed1" / "checkpoint"}
    fc = got["scene-0655"]
    assert (fc.recipe, fc.registry, fc.fold, fc.seed, fc.label) == ("student", "student", 1, 1, "fold1-seed1")
    assert fc.trained_on == ("scene-0061", "scene-0796") and "scene-0655" in fc.held_out
    assert got["scene-0061"] is got["scene-0796"]  # one checkpoint per fold
    assert fc.to_dict()["checkpoint"] == str(runs / "fold1-seed1" / "checkpoint")


def test_a_scene_no_fold_held_out_is_refused(tmp_path):
    runs = _cv_out(tmp_path / "cv")
    with pytest.raises(ValueError, match=r"\['scene-1100'\] held out by no fold .*cv_settings.json"):
        checkpoints_for_scenes(runs, ["scene-0061", "scene-1100"])


def test_a_checkpoint_that_trained_on_its_scene_is_refused(tmp_path):
    runs = _cv_out(tmp_path / "cv")
    rec = runs / "fold1-seed0" / "checkpoint" / "eval_heldout.json"
    rec.write_text(json.dumps({"train_scenes": ["scene-0061", "scene-0655", "scene-0796"], "val_scenes": ["scene-0553"]}))
    with pytest.raises(ValueError, match=r"fold1-seed0/checkpoint: .*training scenes .* include test scenes \['scene-0655'\]"):
        checkpoints_for_scenes(runs, ["scene-0655"])
    checkpoints_for_scenes(runs, ["scene-0061"])  # the other fold is still fine
    # held out other scenes than the fold's: another split, refused even without an overlap
    rec.write_text(json.dumps({"train_scenes": ["scene-0061"], "val_scenes": ["scene-0553"]}))
    with pytest.raises(ValueError, match=r"held out \['scene-0553'\], expected the fold's scenes"):
        fold_checkpoint(runs, 1, 0)


def test_missing_checkpoint_unrecorded_split_and_bad_folders_are_refused(tmp_path):
    runs = _cv_out(tmp_path / "cv")
    with pytest.raises(ValueError, match=r"--cv-seed 2: no checkpoint .*fold0-seed2/checkpoint for fold 0"):
        checkpoints_for_scenes(runs, ["scene-0061"], seed=2)
    (runs / "fold0-seed0" / "checkpoint" / "eval_heldout.json").unlink()
    (runs / "fold0-seed0" / "train.json").unlink()
    with pytest.raises(ValueError, match="records no training scenes"):
        checkpoints_for_scenes(runs, ["scene-0061"])
    with pytest.raises(ValueError, match="no such folder"):
        checkpoints_for_scenes(tmp_path / "nope" / "runs" / "student", ["scene-0061"])
    (tmp_path / "cv" / "runs" / "constant_velocity").mkdir()
    with pytest.raises(ValueError, match="constant_velocity trains nothing"):
        checkpoints_for_scenes(tmp_path / "cv" / "runs" / "constant_velocity", ["scene-0061"])
    (tmp_path / "cv" / "runs" / "mystery").mkdir()
    with pytest.raises(ValueError, match="'mystery' is no cross-validated planner"):
        checkpoints_for_scenes(tmp_path / "cv" / "runs" / "mystery", ["scene-0061"])
    (tmp_path / "cv" / "cv_settings.json").unlink()
    with pytest.raises(ValueError, match="cv_settings.json missing"):
        checkpoints_for_scenes(runs, ["scene-0061"])


def test_ego_mlp_split_is_read_from_its_config(tmp_path):
    runs = tmp_path / "cv" / "runs" / "ego_mlp"
    ckpt = runs / "fold0-seed0" / "checkpoint"
    ckpt.mkdir(parents=True)
    (tmp_path / "cv" / "cv_settings.json").write_text(json.dumps({"fold_scenes": FOLDS}))
    (ckpt / "config.json").write_text(json.dumps({"trained_on_scenes": ["scene-0553", "scene-0655"]}))
    assert checkpoints_for_scenes(runs, ["scene-0796"])["scene-0796"].registry == "ego_mlp"
    (ckpt / "config.json").write_text(json.dumps({"trained_on_scenes": ["scene-0553", "scene-0796"]}))
    with pytest.raises(ValueError, match=r"include test scenes \['scene-0796'\]"):
        checkpoints_for_scenes(runs, ["scene-0796"])


def _ns(planner, cv_runs, checkpoint=()):
    return argparse.Namespace(planner=list(planner), cv_runs=list(cv_runs), checkpoint=list(checkpoint))


def test_cv_runs_argument_names_the_planner(tmp_path):
    student = _cv_out(tmp_path / "cv", "student")
    kd = _cv_out(tmp_path / "cv2", "student_kd")
    assert resolve_cv_runs(_ns(["log_waypoints", "student"], [str(student)])) == {"student": student}  # bare DIR
    assert resolve_cv_runs(_ns(["student_kd"], [f"student_kd={kd}"])) == {"student_kd": kd}  # cross-validation name
    assert resolve_cv_runs(_ns(["student"], [f"student={kd}"])) == {"student": kd}  # its registry name
    assert resolve_cv_runs(_ns(["student_checked"], [str(student)])) == {"student_checked": student}  # loads student checkpoints
    with pytest.raises(ValueError, match="say which planner"):
        resolve_cv_runs(_ns(["student", "ego_mlp"], [str(student)]))
    with pytest.raises(ValueError, match="holds student runs .*not ego_mlp"):
        resolve_cv_runs(_ns(["ego_mlp"], [f"ego_mlp={student}"]))
    with pytest.raises(ValueError, match="holds ego_mlp runs .*not student_checked"):
        resolve_cv_runs(_ns(["student_checked"], [f"student_checked={_cv_out(tmp_path / 'cv3', 'ego_mlp')}"]))
    with pytest.raises(ValueError, match="also has a --checkpoint"):
        resolve_cv_runs(_ns(["student"], [str(student)], [f"student={student}"]))


# ------------------------------------------------------------------------------------------ real scenes
def _ego_mlp_cv(root: Path) -> Path:
    """ego_mlp fold checkpoints with a zero output layer: fold 0 plans to stand still (absolute
    waypoints, all 0), fold 1 keeps its speed (constant-velocity residual + 0)."""
    from dsdrive.planners.ego_mlp import EgoMLPConfig, EgoMLPPlanner, EgoStatusMLP

    folds = [["scene-0061", "scene-0796"], ["scene-0553", "scene-0655"]]
    (root / "runs" / "ego_mlp").mkdir(parents=True)
    (root / "cv_settings.json").write_text(json.dumps({"fold_scenes": folds}))
    for k in (0, 1):
        cfg = EgoMLPConfig(hidden_dim=8, num_hidden_layers=1, cv_residual=k == 1, trained_on_scenes=folds[1 - k])
        model = EgoStatusMLP(cfg)
        with torch.no_grad():
            model.net[-1].weight.zero_()
            model.net[-1].bias.zero_()
        EgoMLPPlanner(model, cfg).save(root / "runs" / "ego_mlp" / f"fold{k}-seed0" / "checkpoint")
    return root / "runs" / "ego_mlp"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")
def test_closed_loop_drives_each_scene_with_its_fold_checkpoint(tmp_path, capsys):
    pytest.importorskip("metadrive")
    runs = _ego_mlp_cv(tmp_path / "cv")
    out = tmp_path / "cl"
    assert main(["--scenarios", str(DATA), "--planner", "ego_mlp", "--cv-runs", str(runs), "--scenes", "scene-0061", "scene-0655",
                 "--max-steps", "10", "--no-explain", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ego_mlp: scene-0061 <- {runs / 'fold0-seed0' / 'checkpoint'}" in printed
    assert f"ego_mlp: scene-0655 <- {runs / 'fold1-seed0' / 'checkpoint'}" in printed
    rep = json.loads((out / "report.json").read_text())
    scen = {s["scene_id"]: s for s in rep["planners"]["ego_mlp"]["scenarios"]}
    assert scen["scene-0061"]["checkpoint"] == str(runs / "fold0-seed0" / "checkpoint")
    assert rep["config"]["cv_runs"]["ego_mlp"]["scenes"]["scene-0655"]["fold"] == 1
    # the fold-0 checkpoint drove scene-0061 (plans to stand still), the fold-1 one scene-0655 (keeps speed)
    assert all(w == [0.0, 0.0, 0.0] for p in scen["scene-0061"]["plans"] for w in p["waypoints_ego"])
    assert min(p["waypoints_ego"][-1][0] for p in scen["scene-0655"]["plans"]) > 5.0
    assert scen["scene-0061"]["ego_progress_m"] < scen["scene-0655"]["ego_progress_m"]
    assert (out / "scenarios_folds" / "ego_mlp-fold0-seed0" / "dataset_summary.pkl").is_file()
    # a scene no fold held out: refused before any rollout, in one line
    assert main(["--scenarios", str(DATA), "--planner", "ego_mlp", "--cv-runs", str(runs), "--scenes", "scene-1100",
                 "--no-progress", "--out", str(tmp_path / "cl2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "['scene-1100'] held out by no fold" in err[0]
    assert not (tmp_path / "cl2" / "report.json").exists()
