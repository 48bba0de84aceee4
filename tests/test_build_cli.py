"""``dsdrive build``: the CLI on real data, report file, broken inputs, dispatch to other sources."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from data_builders import build
from dsdrive.cli import main as cli_main
from dsdrive.data.dataset import load_samples
from helpers_scenarionet import REAL_DIR, REAL_SAMPLES_PER_SCENE, circle_scenario, needs_real_data, write_pickle

DSDRIVE = Path(sys.executable).parent / "dsdrive"


@needs_real_data
def test_cli_builds_real_scenes(tmp_path, capsys):
    out = tmp_path / "planning"
    rc = cli_main(["build", "--source", "scenarionet", "--input", str(REAL_DIR), "--out", str(out), "--no-progress"])
    assert rc == 0
    samples = load_samples(out)
    assert len(samples) == sum(REAL_SAMPLES_PER_SCENE.values())
    report = json.loads((out / "build_report.json").read_text())
    assert report["samples_per_scene"] == REAL_SAMPLES_PER_SCENE
    assert sum(report["commands"].values()) == len(samples)
    assert report["commands"]["LEFT"] == sum(s.inputs.command == "LEFT" for s in samples)
    assert report["skip_counts"] == {"keyframe": 48}
    assert report["commands_per_subset"] == {"recorded_ego": report["commands"]} and report["agent_ego"] == {}
    assert sum(r["samples"] for r in report["sample_counts"]) == len(samples)
    text = capsys.readouterr().out
    assert "scene-0655" in text and "future beyond log end" in text and str(out) in text.replace("\n", "")


@needs_real_data
@pytest.mark.skipif(not DSDRIVE.exists(), reason=f"console script not installed at {DSDRIVE}")
def test_console_script_subset(tmp_path):
    out = tmp_path / "two"
    proc = subprocess.run(
        [str(DSDRIVE), "build", "--input", str(REAL_DIR), "--out", str(out), "--num-scenarios", "2", "--keyframe-step", "10", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "build_report.json").read_text())
    # keyframes every 1.0 s: 191 steps -> 0..160 (17), 201 steps -> 0..170 (18)
    assert report["samples_per_scene"] == {"scene-0061": 17, "scene-0553": 18} and report["files_seen"] == 2


@needs_real_data
def test_cli_agents_as_ego_and_mirror_on_real_scenes(tmp_path, capsys):
    """Two real scenes (0061 Singapore, 0553 Boston): every vehicle as ego + mirrored copies; the
    counts are this data's (measured), the parked vehicles are counted and skipped by default."""
    out = tmp_path / "aug"
    rc = build.main(["--input", str(REAL_DIR), "--out", str(out), "--num-scenarios", "2", "--agents-as-ego", "--mirror", "--no-progress"])
    assert rc == 0
    report = json.loads((out / "build_report.json").read_text())
    assert {k: v["samples"] for k, v in report["agent_ego"].items()} == {"scene-0061": 69, "scene-0553": 210}
    assert {k: v["parked_skipped"] for k, v in report["agent_ego"].items()} == {"scene-0061": 328, "scene-0553": 344}
    assert report["samples"] == 2 * (33 + 35 + 69 + 210) == len(load_samples(out))
    subsets = report["commands_per_subset"]
    assert sum(subsets["recorded_ego"].values()) == 68 and subsets["agent"]["RIGHT"] > 0
    assert subsets["agent mirrored"]["LEFT"] == subsets["agent"]["RIGHT"] and report["commands"]["RIGHT"] == report["commands"]["LEFT"]
    assert "parked 672 (kept 0, skipped 672)" in capsys.readouterr().out


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    rc = build.main(["--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "nowhere: no such folder" in err and "DSDRIVE_SCENARIOS" in err
    assert not (tmp_path / "o").exists()


def test_broken_file_is_reported_and_strict_fails(tmp_path, capsys):
    src = tmp_path / "scenes"
    write_pickle(src / "sd_scene-0001.pkl", circle_scenario())
    write_pickle(src / "sd_list.pkl", [1, 2])
    out = tmp_path / "out"
    assert build.main(["--input", str(src), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "build_report.json").read_text())
    assert report["samples"] == 10 and report["skip_counts"]["file"] == 1
    assert any(s["kind"] == "file" and s["file"].endswith("sd_list.pkl") and "list" in s["reason"] for s in report["skips"])
    assert "skipped file" in capsys.readouterr().out
    before = (out / "build_report.json").read_text()
    assert build.main(["--input", str(src), "--out", str(out), "--strict", "--no-progress"]) == 1
    assert "sd_list.pkl" in capsys.readouterr().err
    assert (out / "build_report.json").read_text() == before  # a failed build keeps the previous output


def test_no_samples_writes_nothing(tmp_path, capsys):
    src = tmp_path / "scenes"
    write_pickle(src / "sd_scene-0002.pkl", circle_scenario(n=30))
    assert build.main(["--input", str(src), "--out", str(tmp_path / "out"), "--no-progress"]) == 1
    assert "no samples built" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_other_sources_dispatch_lazily(tmp_path, monkeypatch):
    seen = {}

    def fake_build(args):
        seen.update(vars(args))
        return 7

    monkeypatch.setitem(sys.modules, "data_builders.drivelm", types.SimpleNamespace(build=fake_build))
    rc = build.main(["--source", "drivelm", "--input", "somewhere", "--out", str(tmp_path / "d"), "--version", "v1.0-trainval"])
    assert rc == 7 and seen["input"] == "somewhere" and seen["version"] == "v1.0-trainval" and seen["source"] == "drivelm"
