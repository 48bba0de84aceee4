"""ScenarioNet scenarios -> :class:`dsdrive.data.types.PlanningSample` (one per keyframe).

Run as:
    dsdrive build --source scenarionet --input ../shared/data/nuscenes-mini-scenarionet --out /tmp/planning

Source format: ScenarioNet's unified scenario description (Li et al., "ScenarioNet: Open-Source
Platform for Large-Scale Traffic Scenario Simulation and Modeling", NeurIPS 2023 D&B; the format
MetaDrive replays). One pickle per scenario, a dict with ``metadata`` (``sdc_id``, ``map``,
``dataset``, ``sample_rate``, ``ts``), ``length`` T, ``tracks[id].state`` (``position`` (T, 2|3)
global metres, ``heading`` (T,) rad, ``velocity`` (T, 2) m/s, ``valid`` (T,), ``length`` /
``width`` / ``height`` (T, 1)) and ``map_features`` (global polylines/polygons).

What one sample holds (all in the **ego frame** of the current step: x forward, y left, origin
at the ego track's position, heading 0 along +x):

* keyframes every ``keyframe_step`` steps (default 0.5 s: every 5th step at 10 Hz, nuScenes'
  2 Hz keyframes); a keyframe is a sample only if the ego is valid and finite there and over
  all 6 future steps (+0.5 ... +3.0 s); otherwise it is skipped and counted with a reason;
* ``ego_history`` (4, 3) at -2.0 ... -0.5 s, masked where before the log start or invalid;
* ``ego_status`` over ``EGO_STATUS_FIELDS``: velocity from the track's ``velocity`` rotated into
  the ego frame (backward difference of positions when missing); acceleration and yaw rate from
  *backward* differences over 0.5 s (t-0.5 s -> t, so no future value enters an input);
  steering is unknown (mask False);
* agents valid at the current step within ``radius`` (default 50 m) of the ego, nearest first,
  the ego track (``metadata.sdc_id``) excluded; futures (12, 3) at +0.5 ... +6.0 s, masked where
  invalid, non-finite or past the log end;
* map polylines: see :mod:`data_builders.scenarionet_map`.

Bad input: :func:`load_scenario` raises :class:`ScenarioFormatError` / ``UnsafePickleError``
naming the file and field; :func:`build_folder` turns those into counted file skips (or raises
when ``strict``) so one broken file does not stop a folder build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_builders.scenarionet_map import MapIndex
from dsdrive.geometry import global_to_ego, rotate_vectors, wrap_angle
from dsdrive.data.paths import GET_DATA_HELP
from dsdrive.data.safe_pickle import UnsafePickleError, load_pickle
from dsdrive.data.types import (
    AGENT_FUTURE_STEPS,
    AGENT_TYPES,
    EGO_STATUS_FIELDS,
    FUTURE_STEPS,
    HISTORY_STEPS,
    STEP_SECONDS,
    Agents,
    PlanningInputs,
    PlanningSample,
    PlanningTargets,
    command_from_future,
)


class ScenarioFormatError(ValueError):
    """A file is not a ScenarioNet scenario; the message names the file, the field and the value."""


@dataclass
class BuildOptions:
    """Options of a ScenarioNet build.

    Attributes:
        keyframe_step: steps between keyframes; None = 0.5 s (5 at 10 Hz, the 2 Hz nuScenes
            keyframes); 1 = every step (denser training data).
        radius: agents farther than this from the ego at the current step are left out (m).
        map_roi: half extents (x, y) of the ego-frame map box (m): |x| <= 50, |y| <= 30 by default.
        max_polylines: keep at most this many map polylines, nearest to the ego first.
    """

    keyframe_step: int | None = None
    radius: float = 50.0
    map_roi: tuple[float, float] = (50.0, 30.0)
    max_polylines: int = 100


@dataclass
class Skip:
    """One counted skip.

    Attributes:
        kind: file | scene | keyframe | agent | map.
        file: the scenario file.
        reason: full message (field, value, step).
        code: short reason used to group counts (e.g. ``future beyond log end``).
    """

    kind: str
    file: str
    reason: str
    code: str
    scene_id: str = ""
    step: int | None = None


@dataclass
class BuildReport:
    """Counts of a build: files read, samples per scene, every skip with its reason."""

    files_seen: int = 0
    samples_per_scene: dict[str, int] = field(default_factory=dict)
    skips: list[Skip] = field(default_factory=list)

    def skip(self, kind: str, file: str | Path, reason: str, scene_id: str = "", step: int | None = None, code: str | None = None) -> None:
        """Record a skip; ``code`` (default: ``reason``) groups it in :meth:`reason_counts`."""
        self.skips.append(Skip(kind, str(file), reason, code or reason, scene_id, step))

    def skip_counts(self) -> dict[str, int]:
        """Number of skips per kind."""
        out: dict[str, int] = {}
        for s in self.skips:
            out[s.kind] = out.get(s.kind, 0) + 1
        return out

    def reason_counts(self) -> dict[str, int]:
        """Number of skips per ``"kind: code"``."""
        out: dict[str, int] = {}
        for s in self.skips:
            key = f"{s.kind}: {s.code}"
            out[key] = out.get(key, 0) + 1
        return out


# --------------------------------------------------------------------------------- loading
def _need(d: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(d, dict):
        raise ScenarioFormatError(f"{path}: field {where!r} is {type(d).__name__}, expected a dict")
    if key not in d:
        raise ScenarioFormatError(f"{path}: not a ScenarioNet scenario: missing field {where}[{key!r}] (has {sorted(map(str, d))[:8]})")
    return d[key]


def load_scenario(path: str | Path) -> dict:
    """Read and validate one ScenarioNet scenario pickle (restricted unpickler).

    Returns:
        The scenario dict (global frame, as stored).

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the pickle references a disallowed global (file + ``module.name``).
        ScenarioFormatError: not a scenario dict, a missing field, or an ego state of the wrong
            shape (file + field + value).
    """
    path = Path(path)
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise ScenarioFormatError(
            f"{path}: not a ScenarioNet scenario: top level is {type(data).__name__}, "
            "expected a dict with 'metadata' and 'tracks'"
        )
    meta = _need(data, "metadata", path, "scenario")
    tracks = _need(data, "tracks", path, "scenario")
    sdc = _need(meta, "sdc_id", path, "metadata")
    ego = _need(tracks, sdc, path, "tracks")
    state = _need(ego, "state", path, f"tracks[{sdc!r}]")
    n = int(data.get("length", len(np.asarray(_need(state, "position", path, "ego state")))))
    for key, tail in (("position", None), ("heading", ()), ("valid", ())):
        arr = np.asarray(_need(state, key, path, f"tracks[{sdc!r}].state"))
        tail_ok = arr.shape[1:] in {(2,), (3,)} if tail is None else arr.shape[1:] == tail
        if arr.shape[:1] != (n,) or not tail_ok:
            raise ScenarioFormatError(
                f"{path}: field tracks[{sdc!r}].state[{key!r}] has shape {arr.shape}, expected ({n}, ...) for length {n}"
            )
    return data


# --------------------------------------------------------------------------------- scene ids
def scene_id_of(data: dict, path: Path) -> str:
    """Scene id: ``scene-XXXX`` for nuScenes (from metadata or the file name), else metadata id or file stem."""
    meta = data.get("metadata", {})
    candidates = [str(meta.get(k, "")) for k in ("scenario_id", "id")] + [path.stem]
    for c in candidates:
        m = re.search(r"scene-\d{4}", c)
        if m:
            return m.group(0)
    return next((c for c in candidates[:2] if c), path.stem.removeprefix("sd_"))


def _agent_type(t: Any) -> str:
    t = str(t).upper()
    return t if t in AGENT_TYPES else "OTHER"


# --------------------------------------------------------------------------------- scene
@dataclass
class _Tracks:
    """Dense (A, T, ...) arrays of all non-ego tracks, invalid/non-finite steps masked."""

    ids: list[str]
    types: list[str]
    pos: np.ndarray  # (A, T, 3)
    heading: np.ndarray  # (A, T)
    vel: np.ndarray  # (A, T, 2)
    dims: np.ndarray  # (A, T, 3) length, width, height
    valid: np.ndarray  # (A, T) bool


def _velocity(state: dict, pos: np.ndarray, dt: float) -> np.ndarray:
    """(T, 2) global velocity: the stored one where finite, else a backward difference."""
    back = np.full_like(pos[:, :2], np.nan)
    back[1:] = (pos[1:, :2] - pos[:-1, :2]) / dt
    vel = np.asarray(state.get("velocity", np.full_like(back, np.nan)), dtype=np.float64)
    if vel.shape != back.shape:
        vel = np.full_like(back, np.nan)
    return np.where(np.isfinite(vel), vel, back)


def _collect_tracks(data: dict, path: Path, scene_id: str, n: int, dt: float, report: BuildReport) -> _Tracks:
    sdc = data["metadata"]["sdc_id"]
    ids, types, pos, head, vel, dims, valid = [], [], [], [], [], [], []
    for tid, track in data["tracks"].items():
        if tid == sdc:
            continue
        try:
            st = track["state"]
            p = np.zeros((n, 3))
            pp = np.asarray(st["position"], dtype=np.float64)
            p[:, : pp.shape[1]] = pp[:, :3]
            h = np.asarray(st["heading"], dtype=np.float64).reshape(n)
            v = np.asarray(st["valid"]).reshape(n).astype(bool)
            d = np.stack(
                [np.asarray(st.get(k, np.zeros(n)), dtype=np.float64).reshape(n) for k in ("length", "width", "height")], -1
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            reason = f"track {tid!r}: malformed state ({type(exc).__name__}: {exc})"
            report.skip("agent", path, reason, scene_id, code="malformed track dropped")
            continue
        bad = v & ~(np.isfinite(p).all(1) & np.isfinite(h))
        if bad.any():
            field_ = "position" if not np.isfinite(p[bad]).all() else "heading"
            reason = (
                f"track {tid!r}: non-finite {field_} at {int(bad.sum())} valid steps "
                f"(first step {int(np.argmax(bad))}); those steps marked invalid"
            )
            report.skip("agent", path, reason, scene_id, code="non-finite agent steps marked invalid")
            v = v & ~bad
        if not v.any():
            continue
        ids.append(str(tid))
        types.append(_agent_type(track.get("type")))
        pos.append(np.nan_to_num(p))
        head.append(np.nan_to_num(h))
        vel.append(np.nan_to_num(_velocity(st, p, dt)))
        dims.append(np.nan_to_num(d))
        valid.append(v)
    a = len(ids)
    return _Tracks(
        ids,
        types,
        np.asarray(pos).reshape(a, n, 3),
        np.asarray(head).reshape(a, n),
        np.asarray(vel).reshape(a, n, 2),
        np.asarray(dims).reshape(a, n, 3),
        np.asarray(valid, dtype=bool).reshape(a, n),
    )


def _agents_at(tr: _Tracks, t: int, stride: int, ego_xy: np.ndarray, ego_z: float, ego_yaw: float, radius: float):
    """Agents valid at step ``t`` within ``radius``: (Agents, futures (N,12,3), masks (N,12))."""
    n_steps = tr.valid.shape[1]
    dist = np.linalg.norm(tr.pos[:, t, :2] - ego_xy, axis=-1)
    sel = np.where(tr.valid[:, t] & (dist <= radius))[0]
    sel = sel[np.argsort(dist[sel], kind="stable")]
    xy = global_to_ego(tr.pos[sel, t, :2], ego_xy, ego_yaw)
    boxes = np.concatenate(
        [xy, tr.pos[sel, t, 2:3] - ego_z, tr.dims[sel, t], wrap_angle(tr.heading[sel, t] - ego_yaw)[:, None]], axis=-1
    )
    vel = rotate_vectors(tr.vel[sel, t], ego_yaw)
    steps = t + stride * np.arange(1, AGENT_FUTURE_STEPS + 1)
    inside = steps < n_steps
    idx = np.minimum(steps, n_steps - 1)
    fmask = tr.valid[sel][:, idx] & inside[None, :]
    fut = np.concatenate(
        [global_to_ego(tr.pos[sel][:, idx, :2], ego_xy, ego_yaw), wrap_angle(tr.heading[sel][:, idx] - ego_yaw)[..., None]], -1
    )
    fut = np.where(fmask[..., None], fut, 0.0)
    agents = Agents([tr.ids[i] for i in sel], [tr.types[i] for i in sel], boxes.astype(np.float32), vel.astype(np.float32))
    return agents, fut.astype(np.float32), fmask


@dataclass
class _Ego:
    """The ego track at 10 Hz (global frame): positions, headings, velocities, usable steps."""

    pos: np.ndarray  # (T, 3)
    heading: np.ndarray  # (T,)
    vel: np.ndarray  # (T, 2)
    ok: np.ndarray  # (T,) valid and finite
    ts: np.ndarray  # (T,) seconds since log start

    def poses(self, steps: np.ndarray, t: int) -> np.ndarray:
        """(K, 3) ``x, y, heading`` of ``steps`` in the ego frame of step ``t``."""
        xy = global_to_ego(self.pos[steps, :2], self.pos[t, :2], self.heading[t])
        return np.concatenate([xy, wrap_angle(self.heading[steps] - self.heading[t])[:, None]], -1)

    def history(self, t: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """(4, 3) poses at -2.0 ... -0.5 s and their (4,) mask (False before the log / invalid)."""
        steps = t - stride * np.arange(HISTORY_STEPS, 0, -1)
        safe = np.maximum(steps, 0)
        mask = (steps >= 0) & self.ok[safe]
        return np.where(mask[:, None], self.poses(safe, t), 0.0), mask

    def status(self, t: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
        """(6,) ego status over ``EGO_STATUS_FIELDS`` and its mask; backward differences over 0.5 s."""
        yaw = self.heading[t]
        status, mask = np.zeros(len(EGO_STATUS_FIELDS)), np.zeros(len(EGO_STATUS_FIELDS), bool)
        v_now = rotate_vectors(self.vel[t], yaw)
        status[0:2], mask[0:2] = np.nan_to_num(v_now), np.isfinite(v_now).all()
        tb = t - stride
        span = self.ts[t] - self.ts[tb] if tb >= 0 else 0.0
        if tb >= 0 and self.ok[tb] and mask[0] and span > 0:  # repeated timestamps: leave masked
            accel = (v_now - rotate_vectors(self.vel[tb], yaw)) / span
            if np.isfinite(accel).all():
                status[2:4], mask[2:4] = accel, True
            yaw_rate = wrap_angle(self.heading[t] - self.heading[tb]) / span
            status[4], mask[4] = (yaw_rate, True) if np.isfinite(yaw_rate) else (0.0, False)
        return status, mask


def _ego_track(data: dict, n: int, dt: float) -> _Ego:
    meta, state = data["metadata"], data["tracks"][data["metadata"]["sdc_id"]]["state"]
    raw = np.asarray(state["position"], dtype=np.float64)
    pos = np.zeros((n, 3))
    pos[:, : min(raw.shape[1], 3)] = raw[:, :3]
    head = np.asarray(state["heading"], dtype=np.float64)
    ok = np.asarray(state["valid"]).astype(bool) & np.isfinite(pos).all(1) & np.isfinite(head)
    ts = np.asarray(meta.get("ts", np.arange(n) * dt), dtype=np.float64)
    ts = ts - ts[0] if ts.shape == (n,) and np.isfinite(ts).all() else np.arange(n) * dt
    return _Ego(pos, head, _velocity(state, pos, dt), ok, ts)


def _keyframe_problem(ego: _Ego, valid: np.ndarray, t: int, stride: int, sdc: str) -> tuple[str, str] | None:
    """(reason, code) when keyframe ``t`` cannot be a sample, else None."""
    n = len(ego.ok)
    fut = t + stride * np.arange(1, FUTURE_STEPS + 1)
    if not ego.ok[t]:
        what = "position/heading non-finite" if valid[t] else "invalid (valid=0)"
        return f"ego {what} at step {t} (field tracks[{sdc!r}].state)", f"ego {what} at current step"
    if fut[-1] >= n:
        return f"future beyond log end at step {t} (needs step {fut[-1]}, log has {n})", "future beyond log end"
    if not ego.ok[fut].all():
        bad = int(fut[~ego.ok[fut]][0])
        reason = f"ego future invalid/non-finite at step {t} (field tracks[{sdc!r}].state, step {bad})"
        return reason, "ego future invalid/non-finite"
    return None


def build_scene(
    data: dict, path: str | Path, options: BuildOptions | None = None, report: BuildReport | None = None
) -> list[PlanningSample]:
    """All planning samples of one loaded scenario (see the module docstring for the contents).

    Args:
        data: a scenario from :func:`load_scenario` (global frame).
        path: its file (for messages).
        options: build options; defaults to :class:`BuildOptions`.
        report: collects skips (keyframes, agents, map features, a too-short scene).

    Returns:
        Samples in keyframe order; ``[]`` when the scene is too short (counted in ``report``).

    Raises:
        ScenarioFormatError: the sample rate does not divide 0.5 s.
    """
    options = options or BuildOptions()
    report = report if report is not None else BuildReport()
    path = Path(path)
    meta = data["metadata"]
    scene_id = scene_id_of(data, path)
    dt = float(meta.get("sample_rate", 0.1))
    stride = int(round(STEP_SECONDS / dt))
    if stride < 1 or abs(stride * dt - STEP_SECONDS) > 1e-6:
        raise ScenarioFormatError(f"{path}: metadata['sample_rate'] = {dt} s does not divide {STEP_SECONDS} s")
    sdc = meta["sdc_id"]
    n = int(data.get("length", len(data["tracks"][sdc]["state"]["position"])))
    need = FUTURE_STEPS * stride + 1
    if n < need:
        reason = f"scene too short: {n} steps < {need} needed for the current step + {FUTURE_STEPS * STEP_SECONDS:.1f} s future"
        report.skip("scene", path, reason, scene_id, code="scene too short")
        return []
    ego = _ego_track(data, n, dt)
    valid = np.asarray(data["tracks"][sdc]["state"]["valid"]).astype(bool)
    tracks = _collect_tracks(data, path, scene_id, n, dt, report)
    map_index = MapIndex.from_features(data.get("map_features") or {}, path, scene_id, report)
    source = "scenarionet:" + str(meta.get("dataset", "unknown"))
    samples = []
    for t in range(0, n, int(options.keyframe_step or stride)):
        problem = _keyframe_problem(ego, valid, t, stride, sdc)
        if problem is not None:
            report.skip("keyframe", path, problem[0], scene_id, t, code=problem[1])
            continue
        xy0, yaw0 = ego.pos[t, :2], ego.heading[t]
        future = ego.poses(t + stride * np.arange(1, FUTURE_STEPS + 1), t)
        history, history_mask = ego.history(t, stride)
        status, status_mask = ego.status(t, stride)
        agents, agent_futures, agent_masks = _agents_at(tracks, t, stride, xy0, ego.pos[t, 2], yaw0, options.radius)
        inputs = PlanningInputs(
            sample_id=f"{scene_id}_{t}",
            scene_id=scene_id,
            ego_history=history.astype(np.float32),
            ego_history_mask=history_mask,
            ego_status=status.astype(np.float32),
            ego_status_mask=status_mask,
            command=command_from_future(future),
            agents=agents,
            map=map_index.polylines_at(xy0, yaw0, options.map_roi, options.max_polylines),
        )
        targets = PlanningTargets(future.astype(np.float32), np.ones(FUTURE_STEPS, bool), agent_futures, agent_masks)
        samples.append(PlanningSample(source, str(meta.get("map", "")), float(ego.ts[t]), inputs, targets))
    report.samples_per_scene[scene_id] = report.samples_per_scene.get(scene_id, 0) + len(samples)
    return samples


def scenario_files(folder: str | Path) -> list[Path]:
    """ScenarioNet scenario pickles of a folder (sorted), without ScenarioNet's index files.

    Raises:
        FileNotFoundError: the folder is missing or holds no ``*.pkl`` (with how to get data).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of ScenarioNet scenarios.\n\n{GET_DATA_HELP}")
    files = sorted(p for p in folder.glob("*.pkl") if p.name not in {"dataset_summary.pkl", "dataset_mapping.pkl"})
    if not files:
        raise FileNotFoundError(f"{folder}: no ScenarioNet *.pkl scenarios in this folder.\n\n{GET_DATA_HELP}")
    return files


def build_folder(
    folder: str | Path,
    options: BuildOptions | None = None,
    num_scenarios: int | None = None,
    strict: bool = False,
    progress: bool = True,
) -> tuple[list[PlanningSample], BuildReport]:
    """Build samples from every scenario of a folder.

    A file that cannot be read (not a scenario, disallowed pickle global, truncated) is skipped
    and counted in the report with its reason, so the other files still build; with
    ``strict=True`` the first such file raises instead.

    Raises:
        FileNotFoundError: missing/empty folder.
        ScenarioFormatError / UnsafePickleError / pickle.UnpicklingError: only when ``strict``.
    """
    import pickle

    report = BuildReport()
    files = scenario_files(folder)[: num_scenarios or None]
    samples: list[PlanningSample] = []
    for path in tqdm(files, desc="scenarionet", unit="scene", disable=not progress):
        report.files_seen += 1
        try:
            samples.extend(build_scene(load_scenario(path), path, options, report))
        except (ScenarioFormatError, UnsafePickleError, pickle.UnpicklingError) as exc:
            if strict:
                raise
            report.skip("file", path, str(exc).splitlines()[0], code=type(exc).__name__)
    return samples, report
