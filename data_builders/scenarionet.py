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
* the planner inputs come from :func:`dsdrive.data.world_state.planning_inputs_from_world` (the
  one feature path, shared with the closed-loop simulator): the builder gives it the ego track
  up to the keyframe (10 Hz, ``velocity`` from the track, a backward difference of positions
  when missing), the agents valid at the keyframe (box-centre z from ``position``), the map
  (:class:`dsdrive.data.map_index.MapIndex`) and the route (the logged ego path), and it makes
  ``ego_history`` (4, 3), ``ego_status`` (steering unknown: masked), agents within ``radius``
  (default 50 m) nearest first with z relative to the ego, map polylines and the command (the
  route point 3 s later, i.e. the lateral offset of the ego future at +3 s);
* targets: ``ego_future`` (6, 3) at +0.5 ... +3.0 s and, for the agents the inputs kept, futures
  (12, 3) at +0.5 ... +6.0 s, masked where invalid, non-finite or past the log end;
* tags: ``ego_source="recorded_ego"``, ``ego_track_id`` = ``metadata.sdc_id``, ``mirrored=False``.

Two augmentations (``BuildOptions``; off by default, ``dsdrive build --agents-as-ego --mirror``):

* **every vehicle as ego** (LAV: Chen & Kraehenbuehl, "Learning from All Vehicles", CVPR 2022):
  at each keyframe, every logged ``VEHICLE`` track other than the recorded ego that is valid and
  finite at every 10 Hz step from -2.0 s to +3.0 s (its whole history and future window) becomes
  a sample in its own ego frame, made by the same :func:`planning_inputs_from_world` with that
  track as the :class:`EgoTrack` (history and ego status from its own track, no CAN bus, so
  steering is masked), its own logged path as the :class:`Route` (the command), the other
  agents valid then, and the recorded ego added as a ``VEHICLE`` agent with its logged box and
  its own future. Heights share one datum: the recorded ego's ``z`` is the ground at its pose
  (nuScenes ego_pose z), so an agent taken as ego stands at its box bottom (centre z - height/2)
  and the recorded ego as an agent has its box centre at its z + height/2. ScenarioNet's nuScenes
  converter stores the ego's length and width swapped (1.73 x 4.08 m): the box is ordered so
  length >= width. Ids ``{scene}_{step}_agent-{track id}``, ``ego_source="agent"``.
  **Parked vehicles**: a candidate whose positions over the whole 5 s window all lie within
  ``parked_motion_m`` (0.5 m) of its current position is *parked*; of a scene's parked candidates
  ``parked_fraction`` (default 0: none) are kept, evenly spaced in (keyframe, track) order; the
  counts are in :attr:`BuildReport.agent_ego`.
* **left-right mirroring** (:func:`dsdrive.data.mirror.mirror_sample`): every sample (agent
  samples included) gets a mirrored copy right after it, id suffix ``_mirror``, ``mirrored=True``.

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

from dsdrive.constants import AGENT_FUTURE_STEPS, FUTURE_STEPS, HISTORY_STEPS, STEP_SECONDS
from dsdrive.data.map_index import MapIndex
from dsdrive.data.mirror import mirror_sample
from dsdrive.data.paths import GET_DATA_HELP
from dsdrive.data.safe_pickle import UnsafePickleError, load_pickle
from dsdrive.data.types import AGENT_TYPES, PlanningSample, PlanningTargets
from dsdrive.data.world_state import AgentState, EgoTrack, FeatureOptions, Route, WorldState, planning_inputs_from_world
from dsdrive.geometry import global_to_ego, wrap_angle


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
        agents_as_ego: also make a sample of every logged vehicle with a full window (LAV; see the
            module docstring).
        parked_fraction: share (0 ... 1) of a scene's parked agent-as-ego candidates kept.
        parked_motion_m: a candidate whose 5 s window stays within this distance (m) of its
            current position is parked.
        mirror: add a left-right mirrored copy of every sample.

    Raises:
        ValueError: ``parked_fraction`` outside [0, 1] or a negative ``parked_motion_m``.
    """

    keyframe_step: int | None = None
    radius: float = 50.0
    map_roi: tuple[float, float] = (50.0, 30.0)
    max_polylines: int = 100
    agents_as_ego: bool = False
    parked_fraction: float = 0.0
    parked_motion_m: float = 0.5
    mirror: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.parked_fraction <= 1.0:
            raise ValueError(f"BuildOptions: parked_fraction = {self.parked_fraction}, expected 0 ... 1")
        if not self.parked_motion_m >= 0.0:
            raise ValueError(f"BuildOptions: parked_motion_m = {self.parked_motion_m} m, expected >= 0")

    def features(self) -> FeatureOptions:
        """The feature options of :func:`dsdrive.data.world_state.planning_inputs_from_world`."""
        return FeatureOptions(self.radius, tuple(self.map_roi), self.max_polylines)


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


AGENT_EGO_COUNTS = ("vehicle_keyframes", "no_full_window", "parked_candidates", "parked_kept", "parked_skipped", "samples")
"""Per-scene counters of the agent-as-ego samples (:attr:`BuildReport.agent_ego`): vehicle tracks
valid at a keyframe, of which without a valid full -2 s ... +3 s window, parked candidates, parked
kept / skipped (``parked_fraction``), and samples made (moving + parked kept)."""


@dataclass
class BuildReport:
    """Counts of a build: files read, samples per scene (all kinds), every skip with its reason,
    and per scene the agent-as-ego counters :data:`AGENT_EGO_COUNTS` (only with ``agents_as_ego``)."""

    files_seen: int = 0
    samples_per_scene: dict[str, int] = field(default_factory=dict)
    skips: list[Skip] = field(default_factory=list)
    agent_ego: dict[str, dict[str, int]] = field(default_factory=dict)

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


def _agent_state_at(tr: _Tracks, t: int, exclude: int | None = None) -> AgentState:
    """The tracks valid at step ``t`` (global frame), in track order, without row ``exclude``."""
    sel = np.flatnonzero(tr.valid[:, t])
    if exclude is not None:
        sel = sel[sel != exclude]
    return AgentState(
        [tr.ids[i] for i in sel], [tr.types[i] for i in sel], tr.pos[sel, t, :2], tr.heading[sel, t], tr.dims[sel, t],
        tr.vel[sel, t], z=tr.pos[sel, t, 2],
    )


def _agent_futures(tr: _Tracks, rows: np.ndarray, t: int, stride: int, ego_xy: np.ndarray, ego_yaw: float):
    """Futures (N, 12, 3) in the ego frame of step ``t`` and masks (N, 12) of tracks ``rows``."""
    n_steps = tr.valid.shape[1]
    steps = t + stride * np.arange(1, AGENT_FUTURE_STEPS + 1)
    inside = steps < n_steps
    idx = np.minimum(steps, n_steps - 1)
    fmask = tr.valid[rows][:, idx] & inside[None, :]
    fut = np.concatenate(
        [global_to_ego(tr.pos[rows][:, idx, :2], ego_xy, ego_yaw), wrap_angle(tr.heading[rows][:, idx] - ego_yaw)[..., None]], -1
    )
    return np.where(fmask[..., None], fut, 0.0).astype(np.float32), fmask


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

    def track(self, t: int, dt: float) -> EgoTrack:
        """The ego track of steps 0 ... ``t`` (now = ``t``) for :class:`WorldState`."""
        return EgoTrack(dt, self.pos[: t + 1, :2], self.heading[: t + 1], float(self.pos[t, 2]), self.vel[: t + 1],
                        self.ok[: t + 1], timestamps=self.ts[: t + 1])

    def route(self, dt: float) -> Route:
        """The logged ego path (usable steps) on the nominal log clock ``step * dt``: the command source."""
        steps = np.flatnonzero(self.ok)
        return Route(self.pos[steps, :2], steps * dt)


def _with_recorded_ego(tr: _Tracks, ego: _Ego, state: dict, sdc: str) -> _Tracks:
    """``tr`` plus the recorded ego as a last ``VEHICLE`` row: its logged box ordered so length >=
    width (ScenarioNet's nuScenes converter swaps them), box-centre z = its z + height / 2 (its z
    is the ground at its pose), valid where its state is usable."""
    n = len(ego.ok)
    raw = np.stack([np.asarray(state.get(k, np.zeros(n)), dtype=np.float64).reshape(n) for k in ("length", "width", "height")], -1)
    dims = np.nan_to_num(np.stack([raw[:, :2].max(1), raw[:, :2].min(1), raw[:, 2]], -1))
    pos = ego.pos.copy()
    pos[:, 2] += dims[:, 2] / 2
    return _Tracks(
        [*tr.ids, str(sdc)], [*tr.types, "VEHICLE"],
        np.concatenate([tr.pos, np.nan_to_num(pos)[None]]), np.concatenate([tr.heading, np.nan_to_num(ego.heading)[None]]),
        np.concatenate([tr.vel, np.nan_to_num(ego.vel)[None]]), np.concatenate([tr.dims, dims[None]]),
        np.concatenate([tr.valid, ego.ok[None]]),
    )


def _track_as_ego(tr: _Tracks, row: int, ts: np.ndarray) -> _Ego:
    """Track ``row`` of ``tr`` as an :class:`_Ego`, standing at its box bottom (centre z - height / 2)."""
    pos = tr.pos[row].copy()
    pos[:, 2] -= tr.dims[row, :, 2] / 2
    return _Ego(pos, tr.heading[row], tr.vel[row], tr.valid[row].copy(), ts)


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


def _parked_keep(n: int, fraction: float) -> np.ndarray:
    """(n,) bool: ``floor(n * fraction)`` of n ordered candidates kept, evenly spaced."""
    k = np.arange(n)
    return np.floor((k + 1) * fraction + 1e-9) > np.floor(k * fraction + 1e-9)


def _agent_samples(
    everyone: _Tracks, keyframes: list[int], scene_id: str, source_map: tuple[str, str], ts: np.ndarray, dt: float,
    stride: int, map_index: MapIndex, options: BuildOptions, report: BuildReport,
) -> dict[int, list[PlanningSample]]:
    """Agent-as-ego samples per keyframe (LAV; see the module docstring); ``everyone`` holds the
    non-ego tracks and, last, the recorded ego (:func:`_with_recorded_ego`); ``source_map`` is the
    samples' (source, map name). Counts go to ``report.agent_ego[scene_id]``."""
    counts = dict.fromkeys(AGENT_EGO_COUNTS, 0)
    n, features, ego_row = everyone.valid.shape[1], options.features(), len(everyone.ids) - 1
    back, ahead = HISTORY_STEPS * stride, FUTURE_STEPS * stride
    row_of = {tid: i for i, tid in enumerate(everyone.ids)}
    moving: list[tuple[int, int]] = []
    parked: list[tuple[int, int]] = []
    for t in keyframes:
        for a in np.flatnonzero(everyone.valid[:ego_row, t]):
            if everyone.types[a] != "VEHICLE":
                continue
            counts["vehicle_keyframes"] += 1
            if t - back < 0 or t + ahead >= n or not everyone.valid[a, t - back : t + ahead + 1].all():
                counts["no_full_window"] += 1
                continue
            window = everyone.pos[a, t - back : t + ahead + 1, :2]
            still = np.linalg.norm(window - everyone.pos[a, t, :2], axis=1).max() < options.parked_motion_m
            (parked if still else moving).append((t, int(a)))
    keep = _parked_keep(len(parked), options.parked_fraction)
    counts["parked_candidates"], counts["parked_kept"] = len(parked), int(keep.sum())
    counts["parked_skipped"] = len(parked) - counts["parked_kept"]
    chosen = sorted(moving + [c for c, k in zip(parked, keep) if k])
    as_ego: dict[int, tuple[_Ego, Route]] = {}
    out: dict[int, list[PlanningSample]] = {}
    for t, a in chosen:
        if a not in as_ego:
            track = _track_as_ego(everyone, a, ts)
            as_ego[a] = (track, track.route(dt))
        track, route = as_ego[a]
        tid = everyone.ids[a]
        world = WorldState(f"{scene_id}_{t}_agent-{tid}", scene_id, track.track(t, dt),
                           _agent_state_at(everyone, t, exclude=a), route, map_index)
        inputs = planning_inputs_from_world(world, features)
        future = track.poses(t + stride * np.arange(1, FUTURE_STEPS + 1), t)
        rows = np.array([row_of[i] for i in inputs.agents.ids], dtype=np.int64)
        agent_futures, agent_masks = _agent_futures(everyone, rows, t, stride, track.pos[t, :2], track.heading[t])
        targets = PlanningTargets(future.astype(np.float32), np.ones(FUTURE_STEPS, bool), agent_futures, agent_masks)
        out.setdefault(t, []).append(PlanningSample(*source_map, float(ts[t]), inputs, targets, ego_source="agent", ego_track_id=tid))
    counts["samples"] = len(chosen)
    report.agent_ego[scene_id] = counts
    return out


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
    map_index = MapIndex.from_features(data.get("map_features") or {})
    for s in map_index.skipped:
        report.skip("map", path, s.reason, scene_id, code=s.code)
    route, features = (ego.route(dt) if ego.ok.any() else None), options.features()  # no usable step: every keyframe is skipped
    row_of = {tid: i for i, tid in enumerate(tracks.ids)}
    source, map_name = "scenarionet:" + str(meta.get("dataset", "unknown")), str(meta.get("map", ""))
    keyframes = list(range(0, n, int(options.keyframe_step or stride)))
    by_step: dict[int, list[PlanningSample]] = {}
    for t in keyframes:
        problem = _keyframe_problem(ego, valid, t, stride, sdc)
        if problem is not None:
            report.skip("keyframe", path, problem[0], scene_id, t, code=problem[1])
            continue
        world = WorldState(f"{scene_id}_{t}", scene_id, ego.track(t, dt), _agent_state_at(tracks, t), route, map_index)
        inputs = planning_inputs_from_world(world, features)
        future = ego.poses(t + stride * np.arange(1, FUTURE_STEPS + 1), t)
        rows = np.array([row_of[i] for i in inputs.agents.ids], dtype=np.int64)
        agent_futures, agent_masks = _agent_futures(tracks, rows, t, stride, ego.pos[t, :2], ego.heading[t])
        targets = PlanningTargets(future.astype(np.float32), np.ones(FUTURE_STEPS, bool), agent_futures, agent_masks)
        by_step[t] = [PlanningSample(source, map_name, float(ego.ts[t]), inputs, targets, ego_track_id=str(sdc))]
    if options.agents_as_ego:
        everyone = _with_recorded_ego(tracks, ego, data["tracks"][sdc]["state"], sdc)
        made = _agent_samples(everyone, keyframes, scene_id, (source, map_name), ego.ts, dt, stride, map_index, options, report)
        for t, agent_samples in made.items():
            by_step.setdefault(t, []).extend(agent_samples)
    samples = [s for t in sorted(by_step) for s in by_step[t]]
    if options.mirror:
        samples = [m for s in samples for m in (s, mirror_sample(s))]
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
