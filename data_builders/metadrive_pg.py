"""MetaDrive procedural (PG) scenes -> ScenarioNet scenarios -> planning samples.

Run as:
    dsdrive build --source metadrive-pg --num-scenarios 8 --out /tmp/planning-pg
    dsdrive build --source metadrive-pg --num-scenarios 8 --input /tmp/pg-scenarios --out /tmp/planning-pg

Scenes come from MetaDrive's procedural generation (Li et al., "MetaDrive: Composing Diverse
Driving Scenarios for Generalizable Reinforcement Learning", TPAMI 2022): seed i builds a random
map of :data:`MAP_BLOCKS` blocks with traffic at :data:`TRAFFIC_DENSITY`; the ego is driven by
MetaDrive's ``IDMPolicy`` (the "expert") at 10 Hz. The episode is recorded with MetaDrive 0.4.3's episode
recorder and ``convert_recorded_scenario_exported`` (what ``BaseEnv.export_scenarios`` does) in
the ScenarioNet format (the same format as ``../shared/data/nuscenes-mini-scenarionet``), then
cut (:func:`slice_scenario`) to what a log of an expert should be:

* **warm-up**: the first :data:`WARMUP_STEPS` (3 s) are dropped. MetaDrive spawns the ego at
  rest and the IDM accelerates at about 2.8 m/s^2 to its 8.3 m/s cruise speed, above nuPlan's
  comfort bound (2.40 m/s^2): every uncut log failed the comfort metric in log replay and
  started with a standing, history-less ego. After the cut the log starts at cruise speed, as
  a nuScenes log starts with a moving ego; :data:`EPISODE_STEPS` frames are kept after it.
* **expert crash**: MetaDrive's traffic does not yield to the ego, so the IDM expert sometimes
  hits a vehicle (seeds 1 and 4 of 8: contact at 16.5 s and 9.5 s) or leaves the road. The log
  then ends :data:`CRASH_MARGIN_STEPS` (1 s) before the first contact / off-road step, so the
  replayed expert never crashes (the replay also drops its last 0.5 s). A seed with fewer than
  :data:`MIN_KEPT_STEPS` frames left is dropped. What happened to every seed (kept, truncated at
  which step and why, dropped) is stored in ``metadata["dsdrive_generation"]`` and in
  :data:`GENERATION_LOG` in the scenario folder.
* **expert comfort**: the IDM does not slow for sharp turns (lateral acceleration up to about
  6 m/s^2 at 8.3 m/s) and brakes at up to 5 m/s^2 behind a slower car, above nuPlan's comfort
  bounds: such a log fails the comfort metric in log replay too (3 + 1 of seeds 0-7). This is
  the expert's driving, not an export error; the bounds each kept log breaks are recorded
  (``expert_comfort_violations``) and counted in the build report.

The scenarios are written as
``sd_metadrive_pg_seedNNNNN.pkl`` plus ScenarioNet's ``dataset_summary.pkl`` /
``dataset_mapping.pkl`` into the scenario folder (``--input``, default ``<out>_scenarios``), so
``eval/closed_loop.py --scenarios`` can replay them too. The samples are then built by
:func:`data_builders.scenarionet.build_folder` (identical conventions to real logs) with
``source = "metadrive"``.

Simulation is state-only (no rendering): the offline asset stub of
:mod:`dsdrive.evaluation.closed_loop.metadrive_assets` suffices. Already generated seeds are reused (resumable).
Dropped seeds are remembered in
:data:`GENERATION_LOG` and not tried again; the build report counts them.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from dsdrive.data.atomic_io import write_bytes_atomic, write_json_atomic

MAP_BLOCKS = 3
"""Blocks per procedural map (straight, curve, intersection, roundabout ... chosen by seed)."""
TRAFFIC_DENSITY = 0.15
"""MetaDrive traffic density (vehicles per lane and 10 m, roughly), as ScenarioNet's ``convert_pg``."""
EPISODE_STEPS = 200
"""Recorded frames per scene after the warm-up (20 s at 10 Hz, like a nuScenes scene)."""
WARMUP_STEPS = 30
"""Simulated steps dropped at the start (3 s: the IDM's acceleration from rest to cruise speed)."""
CRASH_MARGIN_STEPS = 10
"""A log whose expert crashes or leaves the road ends this many steps (1 s) before it."""
MIN_KEPT_STEPS = 35
"""Fewest frames a kept log has (3.5 s: one keyframe with 0.5 s of history and a 3 s future)."""
CRASH_FLAGS = ("crash_vehicle", "crash_human", "crash_object", "crash_building", "crash_sidewalk", "out_of_road")
"""MetaDrive ``info`` flags that end the usable part of an expert episode."""
GENERATION_LOG = "pg_generation.json"
"""Per-seed record of the generation (kept / truncated / dropped) in the scenario folder."""


def scenario_file_name(seed: int) -> str:
    """File name of the scenario generated from ``seed``."""
    return f"sd_metadrive_pg_seed{seed:05d}.pkl"


def scene_id_of_seed(seed: int) -> str:
    """Scene id (``metadata.scenario_id``) of the scenario generated from ``seed``."""
    return f"pg-seed{seed:05d}"


def _plain(obj):
    """Recursively turn MetaDrive's export into dicts/lists/str/int/float/numpy arrays only
    (so :func:`dsdrive.data.safe_pickle.load_pickle` reads it)."""
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


def slice_scenario(sd: dict, start: int, end: int) -> dict:
    """Frames ``[start, end)`` of a ScenarioNet scenario dict (``convert_recorded_scenario_exported``
    output, plain data): every per-frame array of ``tracks`` and ``dynamic_map_states`` is cut,
    ``length`` / ``metadata.ts`` / ``track_length`` follow; tracks never valid in the window are
    left out (the ego, ``metadata.sdc_id``, always stays). The map is static and kept.

    Raises:
        ValueError: an empty or out-of-range window (scenario id, length and window named).
    """
    import numpy as np

    n = int(sd["length"])
    if not 0 <= start < end <= n:
        raise ValueError(f"scenario {sd.get('id')}: frames [{start}, {end}) outside its length {n}")

    def cut(v):
        return v[start:end] if hasattr(v, "__len__") and not isinstance(v, (str, dict)) and len(v) == n else v

    out = dict(sd, length=end - start, metadata=dict(sd["metadata"], ts=np.arange(end - start, dtype=np.float32) * 0.1))
    sdc = str(sd["metadata"]["sdc_id"])
    tracks = {}
    for tid, tr in sd["tracks"].items():
        state = {k: cut(v) for k, v in tr["state"].items()}
        if str(tid) != sdc and not np.asarray(state["valid"]).astype(bool).any():
            continue
        tracks[tid] = dict(tr, state=state, metadata=dict(tr.get("metadata", {}), track_length=end - start))
    out["tracks"] = tracks
    out["dynamic_map_states"] = {k: dict(v, state={kk: cut(vv) for kk, vv in v.get("state", {}).items()})
                                 for k, v in (sd.get("dynamic_map_states") or {}).items()}
    return out


def _record_episode(env, seed: int, episode_steps: int) -> tuple[dict | None, dict]:
    """Drive seed ``seed`` with the IDM expert; returns (scenario dict or None when dropped, record).

    The record says how the episode was cut: ``{"seed", "status": kept|truncated|dropped,
    "sim_steps", "warmup_steps", "frames", "event": {"kind", "step"} | None, "reason"}`` (steps
    counted from reset).
    """
    from metadrive.scenario.utils import convert_recorded_scenario_exported

    env.config["record_episode"] = True
    env.reset(seed=seed)
    event = None
    total = WARMUP_STEPS + episode_steps - 1  # frame 0 is the reset state
    steps = 0
    for steps in range(1, total + 1):
        _, _, terminated, truncated, info = env.step([0.0, 0.0])
        hit = next((k for k in CRASH_FLAGS if info.get(k)), None)
        if hit is not None:
            event = {"kind": hit, "step": steps}
            break
        if terminated or truncated:
            break
    sd = _plain(convert_recorded_scenario_exported(env.engine.dump_episode(), to_dict=True))
    env.config["record_episode"] = False
    end = int(sd["length"]) if event is None else max(event["step"] - CRASH_MARGIN_STEPS, 0)
    record = {"seed": seed, "sim_steps": steps, "warmup_steps": WARMUP_STEPS, "event": event,
              "status": "kept" if event is None else "truncated", "frames": max(end - WARMUP_STEPS, 0), "reason": None}
    if event is not None:
        record["reason"] = f"expert {event['kind']} at step {event['step']} ({event['step'] / 10:.1f} s): log ends {CRASH_MARGIN_STEPS} steps before"
    if end - WARMUP_STEPS < MIN_KEPT_STEPS:
        record.update(status="dropped", reason=(record["reason"] or f"episode ended at step {steps}")
                      + f"; {record['frames']} frames after the warm-up < {MIN_KEPT_STEPS}")
        return None, record
    sd = slice_scenario(sd, WARMUP_STEPS, end)
    record["expert_comfort_violations"] = _comfort_violations(sd)
    sd["metadata"]["dsdrive_generation"] = dict(record)
    return sd, record


def _comfort_violations(sd: dict) -> dict[str, float]:
    """nuPlan comfort bounds the logged expert breaks over the kept frames: name -> the frame's
    time (s) of its first violation (:func:`dsdrive.evaluation.closed_loop.metrics.comfort_bounds_ok`).
    The IDM expert does not slow for sharp turns and brakes at up to 5 m/s^2: such logs fail the
    comfort metric even in log replay; this says so before any replay."""
    import numpy as np

    from dsdrive.evaluation.closed_loop.metrics import comfort_bounds_ok, comfort_signals

    ego = sd["tracks"][str(sd["metadata"]["sdc_id"])]["state"]
    ok = comfort_bounds_ok(comfort_signals(np.asarray(ego["position"])[:, :2], np.asarray(ego["heading"]).reshape(-1)))
    return {k: round(float(np.argmin(v)) * 0.1, 1) for k, v in ok.items() if not v.all()}


def _read_log(folder: Path) -> dict[int, dict]:
    path = folder / GENERATION_LOG
    if not path.is_file():
        return {}
    try:
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{path}: not a dsdrive generation log ({exc}); delete it to regenerate") from exc


def generate_scenarios(out_dir: str | Path, num_scenarios: int, start_seed: int = 0, episode_steps: int = EPISODE_STEPS,
                       progress: bool = True) -> list[Path]:
    """Generate ``num_scenarios`` PG scenes (seeds ``start_seed ...``) as ScenarioNet pickles
    (warm-up cut, expert crashes cut or dropped: see the module docstring).

    Existing files and seeds the generation log marks dropped are kept as they are (resume).
    Writes the two ScenarioNet index files and :data:`GENERATION_LOG`.

    Returns:
        The scenario files of the kept seeds, in seed order.

    Raises:
        ValueError: ``num_scenarios`` < 1 or ``episode_steps`` < 31 (too short for one sample).
    """
    if num_scenarios < 1:
        raise ValueError(f"--num-scenarios {num_scenarios}: expected >= 1")
    if episode_steps < 31:
        raise ValueError(f"episode_steps {episode_steps}: expected >= 31 (0.5 s keyframe + 3 s future)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = _read_log(out)
    seeds = list(range(start_seed, start_seed + num_scenarios))
    todo = [s for s in seeds if not (out / scenario_file_name(s)).is_file() and log.get(s, {}).get("status") != "dropped"]
    if todo:
        from metadrive.envs.metadrive_env import MetaDriveEnv
        from metadrive.policy.idm_policy import IDMPolicy

        from dsdrive.evaluation.closed_loop.metadrive_assets import ensure_offline_assets

        ensure_offline_assets()
        env = MetaDriveEnv(dict(
            start_seed=start_seed, num_scenarios=num_scenarios, map=MAP_BLOCKS, traffic_density=TRAFFIC_DENSITY,
            agent_policy=IDMPolicy, crash_vehicle_done=False, store_map=False, use_render=False, log_level=logging.ERROR,
            horizon=None,
            vehicle_config=dict(lidar=dict(num_lasers=0, distance=0), side_detector=dict(num_lasers=0, distance=0),
                                lane_line_detector=dict(num_lasers=0, distance=0)),
        ))
        try:
            for seed in tqdm(todo, desc="metadrive-pg", unit="scene", disable=not progress):
                sd, record = _record_episode(env, seed, episode_steps)
                log[seed] = record
                if sd is not None:
                    sd["metadata"].update(scenario_id=scene_id_of_seed(seed), map=f"metadrive-pg-{MAP_BLOCKS}blocks-seed{seed}",
                                          sample_rate=0.1, dataset="metadrive")
                    write_bytes_atomic(out / scenario_file_name(seed), pickle.dumps(sd))
                else:
                    print(f"metadrive-pg: seed {seed} dropped: {record['reason']}", file=sys.stderr)
                write_json_atomic(out / GENERATION_LOG, {str(k): v for k, v in sorted(log.items())}, indent=1)
        finally:
            env.close()
    files = [out / scenario_file_name(s) for s in seeds if (out / scenario_file_name(s)).is_file()]
    _write_index(out)
    return files


def _write_index(folder: Path) -> None:
    from dsdrive.data.safe_pickle import load_pickle
    from dsdrive.evaluation.closed_loop.scenario_index import write_index_files

    write_index_files(folder, {p.name: load_pickle(p)["metadata"] for p in sorted(folder.glob("sd_*.pkl"))})


def build(args: argparse.Namespace) -> int:
    """``dsdrive build --source metadrive-pg``: generate, export, build samples; returns an exit code.

    Uses ``args.num_scenarios`` (default 8), ``args.out``, ``args.input`` (scenario folder,
    default ``<out>_scenarios``), the ScenarioNet options (``keyframe_step``, ``radius``,
    ``map_roi``, ``max_polylines``) and, when present, ``args.seed`` / ``args.episode_steps``.
    """
    from data_builders.build import save_build
    from data_builders.scenarionet import BuildOptions, build_folder

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
    seeds = set(range(args.seed, args.seed + n))
    gen = {k: r for k, r in _read_log(scen_dir).items() if k in seeds}
    samples = [s for s in samples if s.scene_id in keep]
    for s in samples:
        s.source = "metadrive"
    from dsdrive.data.types import COMMANDS

    per_scene: dict[str, Counter] = {}
    for s in samples:
        per_scene.setdefault(s.scene_id, Counter())[s.inputs.command] += 1
    report = {
        "source": "metadrive-pg", "input": str(scen_dir), "out": str(out.resolve()), "options": asdict(options),
        "map_blocks": MAP_BLOCKS, "traffic_density": TRAFFIC_DENSITY, "warmup_steps": WARMUP_STEPS,
        "generation": dict(Counter(r["status"] for r in gen.values())),
        "generation_events": {str(k): r["reason"] for k, r in gen.items() if r["status"] != "kept"},
        "expert_comfort_violations": {str(k): r["expert_comfort_violations"] for k, r in gen.items() if r.get("expert_comfort_violations")},
        "files_seen": rep.files_seen, "samples": len(samples),
        "samples_per_scene": {k: v for k, v in rep.samples_per_scene.items() if k in keep},
        "commands_order": list(COMMANDS), "commands": dict(sum(per_scene.values(), Counter())),
        "commands_per_scene": {k: dict(v) for k, v in per_scene.items()},
        "skip_counts": rep.skip_counts(), "skip_reasons": rep.reason_counts(), "skips": [asdict(s) for s in rep.skips],
    }
    return save_build(samples, out, report, t0, scen_dir)
