"""``dsdrive build --source metadrive-pg``: MetaDrive procedural scenes exported in the ScenarioNet
format, read back with the restricted unpickler, turned into planning samples and replayable."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("metadrive")

from data_builders.metadrive_pg import generate_scenarios, scenario_file_name, scene_id_of_seed  # noqa: E402
from dsdrive.safe_pickle import load_pickle  # noqa: E402


def test_generate_export_and_build(tmp_path):
    scen = tmp_path / "pg_scenarios"
    files = generate_scenarios(scen, num_scenarios=1, start_seed=3, episode_steps=45, progress=False)
    assert [f.name for f in files] == [scenario_file_name(3)]
    sd = load_pickle(files[0])  # plain data only
    ego = sd["tracks"][sd["metadata"]["sdc_id"]]["state"]
    assert sd["length"] >= 40 and ego["position"].shape[0] == sd["length"]
    assert np.linalg.norm(ego["position"][-1, :2] - ego["position"][0, :2]) > 1.0  # the IDM expert drove
    summary = pickle.loads((scen / "dataset_summary.pkl").read_bytes())
    assert list(summary) == [files[0].name] and summary[files[0].name]["scenario_id"] == scene_id_of_seed(3)
    mtime = files[0].stat().st_mtime
    generate_scenarios(scen, num_scenarios=1, start_seed=3, episode_steps=45, progress=False)
    assert files[0].stat().st_mtime == mtime  # resumable: existing seeds are reused

    from data_builders.build import build_parser
    from data_builders.metadrive_pg import build
    from dsdrive.dataset import load_samples

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
