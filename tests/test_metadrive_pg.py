"""``dsdrive build --source metadrive-pg``: MetaDrive procedural scenes exported in the ScenarioNet
format, read back with the restricted unpickler, turned into planning samples and replayable."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

pytest.importorskip("metadrive")

from data_builders.metadrive_pg import generate_scenarios, scenario_file_name, scene_id_of_seed  # noqa: E402
from dsdrive.data.safe_pickle import load_pickle  # noqa: E402


def test_generate_export_and_build(tmp_path):
    scen = tmp_path / "pg_scenarios"
    files = generate_scenarios(scen, num_scenarios=1, start_seed=3, episode_steps=45, progress=False)
    assert [f.name for f in files] == [scenario_file_name(3)]
    sd = load_pickle(files[0])  # plain data only
    ego = sd["tracks"][sd["metadata"]["sdc_id"]]["state"]
    assert sd["length"] >= 40 and ego["position"].shape[0] == sd["length"]
    assert np.linalg.norm(ego["position"][-1, :2] - ego["position"][0, :2]) > 1.0  # the IDM expert drove
    assert np.linalg.norm(ego["velocity"][0]) > 5.0  # the standing start (warm-up) is cut off
    assert sd["length"] == 45 and sd["metadata"]["dsdrive_generation"]["status"] == "kept"
    summary = pickle.loads((scen / "dataset_summary.pkl").read_bytes())
    assert list(summary) == [files[0].name] and summary[files[0].name]["scenario_id"] == scene_id_of_seed(3)
    mtime = files[0].stat().st_mtime
    generate_scenarios(scen, num_scenarios=1, start_seed=3, episode_steps=45, progress=False)
    assert files[0].stat().st_mtime == mtime  # resumable: existing seeds are reused

    from data_builders.build import build_parser
    from data_builders.metadrive_pg import build
    from dsdrive.data.dataset import load_samples

    out = tmp_path / "planning"
    args = build_parser().parse_args(["--source", "metadrive-pg", "--num-scenarios", "1", "--input", str(scen), "--out", str(out), "--no-progress"])
    args.seed, args.episode_steps = 3, 45  # reuse the scene generated above
    assert build(args) == 0
    samples = load_samples(out)
    assert len(samples) >= 2 and all(s.source == "metadrive" and s.scene_id == scene_id_of_seed(3) for s in samples)
    assert samples[0].inputs.map.points.shape[1:] == (20, 2) and len(samples[0].inputs.map) > 0
    assert (out / "build_report.json").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num-scenarios 0"):
        generate_scenarios(tmp_path, num_scenarios=0)
    with pytest.raises(ValueError, match="episode_steps 10"):
        generate_scenarios(tmp_path, num_scenarios=1, episode_steps=10)


def test_expert_crash_truncated_or_dropped_and_log_replay_clean(tmp_path, monkeypatch):
    """Seed 4's IDM expert hits a vehicle at step 95 (9.5 s): the log ends 1 s before, and its log
    replay, like seed 3's (no crash), has no collision, comfort 1 and RC >= 0.9. With a higher
    minimum length the seed is dropped, logged, and not generated again."""
    import data_builders.metadrive_pg as pg
    from dsdrive.evaluation.closed_loop.metrics import scenario_metrics
    from dsdrive.evaluation.closed_loop.rollout import RolloutConfig, run_closed_loop
    from dsdrive.evaluation.closed_loop.scenario_index import prepare_working_copy

    scen = tmp_path / "scen"
    files = generate_scenarios(scen, num_scenarios=2, start_seed=3, episode_steps=80, progress=False)
    log = json.loads((scen / pg.GENERATION_LOG).read_text())
    assert log["3"]["status"] == "kept" and log["3"]["frames"] == 80
    assert log["4"]["status"] == "truncated" and log["4"]["event"] == {"kind": "crash_vehicle", "step": 95}
    crashed = load_pickle(files[1])
    assert crashed["length"] == 95 - pg.CRASH_MARGIN_STEPS - pg.WARMUP_STEPS
    assert all(len(t["state"]["position"]) == crashed["length"] for t in crashed["tracks"].values())

    rollouts = run_closed_loop(prepare_working_copy(scen, tmp_path / "wc"), None, RolloutConfig(), progress=False)
    ms = [scenario_metrics(r) for r in rollouts]
    assert [m["status"] for m in ms] == ["ok", "ok"]
    assert not any(m["collision_vehicle"] or m["collision_object"] or m["nc"] < 1 or m["ttc"] < 1 for m in ms)
    assert all(m["comfort"] == 1.0 and m["route_completion"] >= 0.9 for m in ms)

    monkeypatch.setattr(pg, "MIN_KEPT_STEPS", 60)
    scen2 = tmp_path / "scen2"
    assert generate_scenarios(scen2, num_scenarios=1, start_seed=4, episode_steps=80, progress=False) == []
    assert json.loads((scen2 / pg.GENERATION_LOG).read_text())["4"]["status"] == "dropped"
    monkeypatch.setattr(pg, "_record_episode", lambda *a: pytest.fail("a dropped seed was generated again"))
    assert generate_scenarios(scen2, num_scenarios=1, start_seed=4, episode_steps=80, progress=False) == []


def test_slice_scenario_bad_window():
    from data_builders.metadrive_pg import slice_scenario

    sd = {"id": "x", "length": 10, "metadata": {"sdc_id": "ego"}, "tracks": {}, "dynamic_map_states": {}}
    with pytest.raises(ValueError, match=r"scenario x: frames \[5, 12\) outside its length 10"):
        slice_scenario(sd, 5, 12)
