"""ScenarioNet index files in a working copy, so MetaDrive's ``ScenarioEnv`` can replay a folder.

``ScenarioEnv(data_directory=DIR)`` reads ``DIR/dataset_summary.pkl`` (file name -> the
scenario's ``metadata`` dict) and ``DIR/dataset_mapping.pkl`` (file name -> sub-folder holding
it), as ScenarioNet writes them (``metadrive.scenario.utils.read_dataset_summary``). A folder of
bare ``sd_*.pkl`` files (e.g. ``../shared/data/nuscenes-mini-scenarionet``) lacks them, and shared
data is read-only, so :func:`prepare_working_copy` makes a *working copy*: a new folder holding a
symbolic link to each scenario (a copy where links are unsupported) plus the two index files.
The source folder is never written.

Every scenario file is read with :func:`dsdrive.data.safe_pickle.load_pickle` and checked for the keys
MetaDrive needs; a file that fails is left out of the index and returned as a
:class:`RejectedScenario` with the reason, so a run can report it and go on.
"""

from __future__ import annotations

import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from dsdrive.constants import FUTURE_STEPS, SIM_DT, STEP_SECONDS
from dsdrive.data.atomic_io import write_bytes_atomic
from dsdrive.data.safe_pickle import load_pickle

SUMMARY_FILE = "dataset_summary.pkl"
MAPPING_FILE = "dataset_mapping.pkl"
REQUIRED_KEYS = ("id", "version", "length", "tracks", "map_features", "metadata", "dynamic_map_states")
"""Top-level keys of a ScenarioNet scenario (``ScenarioDescription``) that MetaDrive reads."""
MIN_SCENARIO_STEPS = FUTURE_STEPS * round(STEP_SECONDS / SIM_DT) + 5 + 1
"""Shortest scenario a closed-loop run accepts (36 steps = 3.6 s at 10 Hz): one planning horizon
(3 s, so the logged future and the log_waypoints plan exist) plus the 0.5 s the rollout trims
off every log's end, plus the start."""


@dataclass
class RejectedScenario:
    """A scenario file left out of the working copy. ``reason`` says why (file, field, value)."""

    file: str
    reason: str


@dataclass
class WorkingCopy:
    """The result of :func:`prepare_working_copy`.

    Attributes:
        directory: the folder to pass as ``ScenarioEnv(data_directory=...)``.
        files: indexed scenario file names in ``ScenarioEnv`` seed order (seed i -> files[i]).
        scene_ids: a short id per file (``scene-0061`` for nuScenes files, else the file stem).
        rejected: files that could not be indexed, with reasons.
    """

    directory: Path
    files: list[str]
    scene_ids: list[str]
    rejected: list[RejectedScenario] = field(default_factory=list)


def scene_id_from_file(name: str) -> str:
    """``sd_nuscenes_v1.0-mini_scene-0061.pkl`` -> ``scene-0061``; other names -> the stem."""
    stem = Path(name).stem
    if "scene-" in stem:
        return stem[stem.index("scene-"):]
    return stem[3:] if stem.startswith("sd_") else stem


def list_scenario_files(source: str | os.PathLike) -> list[Path]:
    """Scenario pickles of a folder (``*.pkl`` except the two index files), sorted by name.

    Raises:
        FileNotFoundError: ``source`` is not a folder, or holds no scenario pickle.
    """
    src = Path(source).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"--scenarios {src}: no such folder")
    files = sorted(p for p in src.glob("*.pkl") if p.name not in (SUMMARY_FILE, MAPPING_FILE))
    if not files:
        raise FileNotFoundError(
            f"--scenarios {src}: no ScenarioNet scenario (*.pkl) in this folder. Point it at a ScenarioNet "
            "export (e.g. ../shared/data/nuscenes-mini-scenarionet) or generate one with "
            "`dsdrive build --source metadrive-pg --num-scenarios 8 --out DIR`."
        )
    return files


def check_scenario(path: Path) -> dict:
    """Load a scenario safely and check the fields MetaDrive needs.

    Returns:
        The scenario's ``metadata`` dict (what ScenarioNet stores in the summary).

    Raises:
        ValueError: a required key is missing, the ego (``metadata.sdc_id``) has no track, the
            ego is never valid, or the scenario is shorter than :data:`MIN_SCENARIO_STEPS`; the
            message names file, field and value.
        pickle.UnpicklingError / UnsafePickleError: the file is not a plain-data pickle.
    """
    sd = load_pickle(path)
    if not isinstance(sd, dict):
        raise ValueError(f"{path.name}: top level is {type(sd).__name__}, expected a ScenarioNet dict")
    missing = [k for k in REQUIRED_KEYS if k not in sd]
    if missing:
        raise ValueError(f"{path.name}: missing field(s) {missing}")
    meta = sd["metadata"]
    sdc = meta.get("sdc_id") if isinstance(meta, dict) else None
    if sdc not in sd["tracks"]:
        raise ValueError(f"{path.name}: metadata.sdc_id={sdc!r} is not a key of tracks")
    valid = sd["tracks"][sdc]["state"].get("valid")
    if valid is None or not bool(sum(valid)):
        raise ValueError(f"{path.name}: tracks[{sdc!r}].state.valid is never true (no ego states)")
    if int(sd["length"]) < MIN_SCENARIO_STEPS:
        raise ValueError(f"{path.name}: length={sd['length']} steps is shorter than the horizon "
                         f"({MIN_SCENARIO_STEPS} steps needed: 3 s plan + 0.5 s trimmed tail)")
    return dict(meta)


def prepare_working_copy(
    source: str | os.PathLike,
    workdir: str | os.PathLike,
    scenes: list[str] | None = None,
) -> WorkingCopy:
    """Link the scenarios of ``source`` into ``workdir`` and write the two index files there.

    Args:
        source: a folder of ScenarioNet ``*.pkl`` scenarios (read only).
        workdir: a folder to create (or reuse); it must not be ``source`` itself.
        scenes: keep only files whose name contains one of these strings (e.g. ``scene-0061``);
            None keeps all.

    Returns:
        A :class:`WorkingCopy`; rejected files are listed, not raised.

    Raises:
        FileNotFoundError: no scenario in ``source``, or none matches ``scenes``.
        ValueError: ``workdir`` is ``source``, or every scenario was rejected.
    """
    src = Path(source).expanduser().resolve()
    dst = Path(workdir).expanduser().resolve()
    if dst == src:
        raise ValueError(f"working copy {dst} must differ from the source folder (never write into source data)")
    files = list_scenario_files(src)
    if scenes:
        files = [f for f in files if any(s in f.name for s in scenes)]
        if not files:
            raise FileNotFoundError(f"--scenes {scenes}: no scenario file in {src} matches")
    dst.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    rejected: list[RejectedScenario] = []
    for f in files:
        try:
            meta = check_scenario(f)
        except Exception as e:  # noqa: BLE001 - any unreadable scenario is recorded, not fatal
            rejected.append(RejectedScenario(f.name, f"{type(e).__name__}: {e}"))
            continue
        link = dst / f.name
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(f)
        except OSError:
            shutil.copy2(f, link)
        summary[f.name] = meta
    if not summary:
        reasons = "; ".join(f"{r.file}: {r.reason}" for r in rejected)
        raise ValueError(f"every scenario in {src} was rejected: {reasons}")
    write_index_files(dst, summary)
    names = list(summary)
    return WorkingCopy(dst, names, [scene_id_from_file(n) for n in names], rejected)


def write_index_files(folder: Path, summary: dict) -> None:
    """Write ScenarioNet's ``dataset_summary.pkl`` (file name -> metadata) and
    ``dataset_mapping.pkl`` (file name -> sub-folder, ``""``) into ``folder``, atomically."""
    write_bytes_atomic(Path(folder) / SUMMARY_FILE, pickle.dumps(summary))
    write_bytes_atomic(Path(folder) / MAPPING_FILE, pickle.dumps({k: "" for k in summary}))
