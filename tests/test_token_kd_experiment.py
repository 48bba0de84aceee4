"""recipes/token_kd_experiment.py end to end on a tiny version (slow): two real nuScenes-mini scenes
(2-fold CV, one scene held out per fold), a tiny text teacher SFT'd until it writes the rule
reasoning of its training keyframes, hf-llm annotation with cached top-k log-probs, the kd and sft
students, the held-out metrics and the paired summary; a rerun resumes without retraining."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from helpers_token_kd import DATA, real_samples

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not DATA.is_dir(), reason=f"real ScenarioNet data not found at {DATA}")]
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "token_kd_experiment.py"


def _recipe():
    spec = importlib.util.spec_from_file_location("token_kd_experiment", RECIPE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_experiment_end_to_end_and_resumes(tmp_path):
    from dsdrive.data.dataset import save_samples

    save_samples(real_samples("scene-0061", 4) + real_samples("scene-0553", 4), tmp_path / "data")
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "exp"), "--folds", "2", "--seeds", "0", "--parallel", "2",
            "--teacher-hidden", "64", "--teacher-layers", "2", "--teacher-heads", "4", "--teacher-kv-heads", "2",
            "--teacher-intermediate", "128", "--teacher-steps", "150", "--teacher-batch", "4", "--teacher-lr", "3e-3",
            "--student-args", "--max_steps 2 --per_device_train_batch_size 4 --num_threads 1", "--n-boot", "50"]
    mod = _recipe()
    assert mod.main(argv) == 0
    rep = json.loads((tmp_path / "exp" / "kd_experiment.json").read_text())
    assert rep["folds_done"] == [0, 1] and rep["folds"] == [["scene-0061"], ["scene-0553"]]
    for t in rep["teachers"]:
        assert t["annotated"] >= 1 and t["teacher_parameters"] > 0 and t["student_parameters"] > 0
    for arm in ("sft", "kd"):
        for k in mod.METRICS:
            c = rep["arms"][arm][k]
            if k == "agree_parsed" and c["num_samples"] == 0:  # a 2-step student may state no meta-action: no parsed text to judge
                assert math.isnan(c["mean"]) and rep["arms"][arm]["parsed"]["mean"] == 0.0
                continue
            assert c["num_scenes"] >= 1 and c["low"] <= c["mean"] <= c["high"], (arm, k, c)
            assert k == "agree_parsed" or c["num_scenes"] == 2
    assert rep["arms"]["sft"]["reasoning_ce"]["num_samples"] == 8 and math.isfinite(rep["arms"]["teacher"]["reasoning_ce"]["mean"])
    assert set(rep["paired_kd_minus_sft"]) == set(mod.METRICS)
    fold = tmp_path / "exp" / "fold0"
    assert "learnt as hard targets only" in (fold / "sft-seed0" / "train.log").read_text()
    assert "token KD: " in (fold / "kd-seed0" / "train.log").read_text() and "weight 1.0" in (fold / "kd-seed0" / "train.log").read_text()
    held = json.loads((fold / "kd-seed0" / "heldout.json").read_text())
    assert {s[:10] for s in held["scene_ids"]} == {"scene-0061"} and len(held["texts"]) == len(held["l2_stp3_avg"]) == 4
    assert "| held-out reasoning CE" in (tmp_path / "exp" / "kd_experiment.md").read_text()
    stamp = (fold / "kd-seed0" / "checkpoint" / "model.safetensors").stat().st_mtime
    assert mod.main(argv) == 0  # resumes: every step's output exists, nothing is retrained
    assert (fold / "kd-seed0" / "checkpoint" / "model.safetensors").stat().st_mtime == stamp
