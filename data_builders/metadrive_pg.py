"""MetaDrive procedural (PG) scenes -> ScenarioNet scenarios -> planning samples.

Run as:
    dsdrive build --source metadrive-pg --num-scenarios 8 --out /tmp/planning-pg
    dsdrive build --source metadrive-pg --num-scenarios 8 --input /tmp/pg-scenarios --out /tmp/planning-pg

Scenes come from MetaDrive's procedural generation (Li et al., "MetaDrive: Composing Diverse
Driving Scenarios for Generalizable Reinforcement Learning", TPAMI 2022): seed i builds a random
map of :data:`MAP_BLOCKS` blocks with traffic at :data:`TRAFFIC_DENSITY`; the ego is driven by
MetaDrive's ``IDMPolicy`` (the "expert") for :data:`EPISODE_STEPS` steps at 10 Hz. MetaDrive
0.4.3's ``BaseEnv.export_scenarios`` records each episode in the ScenarioNet format (the same
format as ``../shared/data/nuscenes-mini-scenarionet``); the scenarios are written as
``sd_metadrive_pg_seedNNNNN.pkl`` plus ScenarioNet's ``dataset_summary.pkl`` /
``dataset_mapping.pkl`` into the scenario folder (``--input``, default ``<out>_scenarios``), so
``eval/closed_loop.py --scenarios`` can replay them too. The samples are then built by
:func:`data_builders.scenarionet.build_folder` (identical conventions to real logs) with
``source = "metadrive"``.

Simulation is state-only (no rendering): the offline asset stub of
:mod:`dsdrive.sim.metadrive_assets` suffices. Already generated seeds are reused (resumable).
A seed whose episode ends before 3.5 s (crash, leaving the road) is kept but yields no sample
(counted in the build report by the ScenarioNet builder).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

MAP_BLOCKS = 3
"""Blocks per procedural map (straight, curve, intersection, roundabout ... chosen by seed)."""
TRAFFIC_DENSITY = 0.15
"""MetaDrive traffic density (vehicles per lane and 10 m, roughly), as ScenarioNet's ``convert_pg``."""
EPISODE_STEPS = 200
"""Recorded steps per scene (20 s at 10 Hz, like a nuScenes scene)."""


def scenario_file_name(seed: int) -> str:
    """File name of the scenario generated from ``seed``."""
    return f"sd_metadrive_pg_seed{seed:05d}.pkl"


def scene_id_of_seed(seed: int) -> str:
    """Scene id (``metadata.scenario_id``) of the scenario generated from ``seed``."""
    return f"pg-seed{seed:05d}"


def _plain(obj):
    """Recursively turn MetaDrive's export into dicts/lists/str/int/float/numpy arrays only
    (so :func:`dsdrive.safe_pickle.load_pickle` reads it)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    return str(obj)


def generate_scenarios(out_dir: str | Path, num_scenarios: int, start_seed: int = 0, episode_steps: int = EPISODE_STEPS,
                       progress: bool = True) -> list[Path]:
    """Generate ``num_scenarios`` PG scenes (seeds ``start_seed ...``) as ScenarioNet pickles.

    Existing files are kept (resume). Writes the two ScenarioNet index files.

    Returns:
        The scenario files, in seed order.

    Raises:
        ValueError: ``num_scenarios`` < 1 or ``episode_steps`` < 31 (too short for one sample).
    """
    if num_scenarios < 1:
        raise ValueError(f"--num-scenarios {num_scenarios}: expected >= 1")
    if episode_steps < 31:
        raise ValueError(f"episode_steps {episode_steps}: expected >= 31 (0.5 s keyframe + 3 s future)")
    from metadrive.envs.metadrive_env import MetaDriveEnv
    from metadrive.policy.idm_policy import IDMPolicy

    from dsdrive.sim.metadrive_assets import ensure_offline_assets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(start_seed, start_seed + num_scenarios))
    todo = [s for s in seeds if not (out / scenario_file_name(s)).is_file()]
    if todo:
        ensure_offline_assets()
        env = MetaDriveEnv(dict(
            start_seed=start_seed, num_scenarios=num_scenarios, map=MAP_BLOCKS, traffic_density=TRAFFIC_DENSITY,
            agent_policy=IDMPolicy, crash_vehicle_done=False, store_map=False, use_render=False, log_level=logging.ERROR,
            vehicle_config=dict(lidar=dict(num_lasers=0, distance=0), side_detector=dict(num_lasers=0, distance=0),
                                lane_line_detector=dict(num_lasers=0, distance=0)),
        ))
        try:
            for seed in tqdm(todo, desc="metadrive-pg", unit="scene", disable=not progress):
                scen, _ = env.export_scenarios(lambda obs: [0.0, 0.0], scenario_index=[seed], max_episode_length=episode_steps - 2,
                                               to_dict=True, suppress_warning=True)
                sd = _plain(scen[seed])
                sd["metadata"].update(scenario_id=scene_id_of_seed(seed), map=f"metadrive-pg-{MAP_BLOCKS}blocks-seed{seed}",
                                      sample_rate=0.1, dataset="metadrive")
                tmp = out / (scenario_file_name(seed) + ".tmp")
                with open(tmp, "wb") as f:
                    pickle.dump(sd, f)
                tmp.replace(out / scenario_file_name(seed))
        finally:
            env.close()
    files = [out / scenario_file_name(s) for s in seeds]
    _write_index(out)
    return files


def _write_index(folder: Path) -> None:
    from dsdrive.safe_pickle import load_pickle
    from dsdrive.sim.scenario_index import MAPPING_FILE, SUMMARY_FILE

    summary = {}
    for p in sorted(folder.glob("sd_*.pkl")):
        summary[p.name] = load_pickle(p)["metadata"]
    with open(folder / SUMMARY_FILE, "wb") as f:
        pickle.dump(summary, f)
    with open(folder / MAPPING_FILE, "wb") as f:
        pickle.dump({k: "" for k in summary}, f)


def build(args: argparse.Namespace) -> int:
    """``dsdrive build --source metadrive-pg``: generate, export, build samples; returns an exit code.

    Uses ``args.num_scenarios`` (default 8), ``args.out``, ``args.input`` (scenario folder,
    default ``<out>_scenarios``), the ScenarioNet options (``keyframe_step``, ``radius``,
    ``map_roi``, ``max_polylines``) and, when present, ``args.seed`` / ``args.episode_steps``.
    """
    from data_builders.build import _print_summary, write_report
    from data_builders.scenarionet import BuildOptions, build_folder
    from dsdrive.dataset import save_samples

    t0 = time.perf_counter()
    out = Path(args.out)
    scen_dir = Path(args.input) if args.input else out.with_name(out.name + "_scenarios")
    n = args.num_scenarios or 8
    try:
        files = generate_scenarios(scen_dir, n, args.seed, args.episode_steps or EPISODE_STEPS,
                                   progress=not args.no_progress)
    except (ValueError, ModuleNotFoundError) as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 2
    options = BuildOptions(keyframe_step=args.keyframe_step, radius=args.radius, map_roi=tuple(args.map_roi), max_polylines=args.max_polylines)
    samples, rep = build_folder(scen_dir, options, num_scenarios=None, strict=args.strict, progress=not args.no_progress)
    keep = {scene_id_of_seed(int(f.stem[-5:])) for f in files}  # the folder may hold other seeds
    samples = [s for s in samples if s.scene_id in keep]
    for s in samples:
        s.source = "metadrive"
    from dsdrive.types import COMMANDS

    per_scene: dict[str, Counter] = {}
    for s in samples:
        per_scene.setdefault(s.scene_id, Counter())[s.inputs.command] += 1
    report = {
        "source": "metadrive-pg", "input": str(scen_dir), "out": str(out.resolve()), "options": asdict(options),
        "map_blocks": MAP_BLOCKS, "traffic_density": TRAFFIC_DENSITY, "files_seen": rep.files_seen, "samples": len(samples),
        "samples_per_scene": {k: v for k, v in rep.samples_per_scene.items() if k in keep},
        "commands_order": list(COMMANDS), "commands": dict(sum(per_scene.values(), Counter())),
        "commands_per_scene": {k: dict(v) for k, v in per_scene.items()},
        "skip_counts": rep.skip_counts(), "skip_reasons": rep.reason_counts(), "skips": [asdict(s) for s in rep.skips],
    }
    if not samples:
        print(f"dsdrive build: no samples built from {scen_dir}; nothing written to {out}", file=sys.stderr)
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    save_samples(samples, out)
    report["seconds"] = time.perf_counter() - t0
    write_report(out, report)
    _print_summary(report)
    return 0
