"""Planning samples on disk: a Hugging Face ``datasets`` Arrow dataset, one row per keyframe.

The row layout is :meth:`dsdrive.data.types.PlanningSample.to_row`; the schema is
:func:`planning_features`. Coordinates are in the ego frame (x forward, y left, metres).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import datasets
from datasets import Features, Sequence, Value

from dsdrive.data.types import PlanningSample


def planning_features() -> Features:
    """The Arrow schema of a planning dataset (see ``shared/DESIGN.md``)."""
    f32 = Value("float32")
    return Features(
        {
            "sample_id": Value("string"),
            "scene_id": Value("string"),
            "source": Value("string"),
            "map_name": Value("string"),
            "timestamp": Value("float64"),
            "ego_source": Value("string"),  # recorded_ego | agent (dsdrive.data.types.EGO_SOURCES)
            "ego_track_id": Value("string"),  # the log's track id of the vehicle taken as the ego
            "mirrored": Value("bool"),  # a left-right mirrored copy (dsdrive.data.mirror)
            "ego_history": Sequence(Sequence(f32)),  # (4, 3)
            "ego_history_mask": Sequence(Value("bool")),  # (4,)
            "ego_status": Sequence(f32),  # (6,)
            "ego_status_mask": Sequence(Value("bool")),  # (6,)
            "command": Value("string"),
            "ego_future": Sequence(Sequence(f32)),  # (6, 3)
            "ego_future_mask": Sequence(Value("bool")),  # (6,)
            "agent_ids": Sequence(Value("string")),  # (N,)
            "agent_types": Sequence(Value("string")),  # (N,)
            "agent_boxes": Sequence(Sequence(f32)),  # (N, 7)
            "agent_velocities": Sequence(Sequence(f32)),  # (N, 2)
            "agent_futures": Sequence(Sequence(Sequence(f32))),  # (N, 12, 3)
            "agent_future_masks": Sequence(Sequence(Value("bool"))),  # (N, 12)
            "map_types": Sequence(Value("string")),  # (M,)
            "map_points": Sequence(Sequence(Sequence(f32))),  # (M, 20, 2)
            "cameras": [
                {
                    "name": Value("string"),
                    "image_path": Value("string"),
                    "intrinsics": Sequence(Sequence(f32)),
                    "cam2ego": Sequence(Sequence(f32)),
                }
            ],
            "annotation": Value("string"),  # JSON of dsdrive.annotation.schema.Annotation, or null
        }
    )


def samples_to_dataset(samples: Iterable[PlanningSample]) -> datasets.Dataset:
    """Build an in-memory Arrow dataset from samples (order kept)."""
    rows = [s.to_row() for s in samples]
    columns = {k: [r[k] for r in rows] for k in planning_features()}
    return datasets.Dataset.from_dict(columns, features=planning_features())


def save_dataset_atomic(ds: datasets.Dataset, out_dir: str | Path) -> datasets.Dataset:
    """``Dataset.save_to_disk`` into ``out_dir`` through a sibling temporary folder and renames.

    The new dataset is written to ``<out_dir>.tmp-write``; the old one is renamed to
    ``<out_dir>.old`` and deleted only after the new one is in place. An interruption therefore
    never leaves a half-written dataset under ``out_dir``; at worst both complete copies are left
    beside it under those two names.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + ".tmp-write")
    old = out_dir.with_name(out_dir.name + ".old")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    ds.save_to_disk(str(tmp))
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old.exists():
        shutil.rmtree(old)
    return ds


def save_samples(samples: Iterable[PlanningSample], out_dir: str | Path) -> datasets.Dataset:
    """Write samples to ``out_dir`` (atomically, :func:`save_dataset_atomic`) and return the dataset."""
    return save_dataset_atomic(samples_to_dataset(samples), out_dir)


def load_dataset_dir(data_dir: str | Path) -> datasets.Dataset:
    """Open a planning dataset written by :func:`save_samples`.

    Raises:
        FileNotFoundError: ``data_dir`` does not exist or is not a saved dataset, naming the path.
    """
    data_dir = Path(data_dir)
    if not (data_dir / "dataset_info.json").exists() and not (data_dir / "state.json").exists():
        raise FileNotFoundError(
            f"{data_dir}: not a planning dataset (no dataset_info.json/state.json); "
            "build one with `dsdrive build --source scenarionet --input PATH --out DIR`"
        )
    return datasets.load_from_disk(str(data_dir))


def original_sample_mask(ds: datasets.Dataset) -> list[bool]:
    """Per row of a planning dataset: True for an original sample (the recorded ego, not mirrored),
    read from the ``ego_source`` / ``mirrored`` columns alone; a dataset written before those
    columns existed holds only original samples."""
    n = len(ds)
    sources = ds["ego_source"] if "ego_source" in ds.column_names else ["recorded_ego"] * n
    mirrored = ds["mirrored"] if "mirrored" in ds.column_names else [False] * n
    return [(src or "recorded_ego") == "recorded_ego" and not m for src, m in zip(sources, mirrored)]


def load_samples(data_dir: str | Path, scenes: Iterable[str] | None = None, augmented: bool = True) -> list[PlanningSample]:
    """Load the samples of a planning dataset, in stored order.

    Args:
        data_dir: a folder written by :func:`save_samples`.
        scenes: keep only these scene ids (None = every scene).
        augmented: False keeps only original samples (the recorded ego, not mirrored:
            :attr:`dsdrive.data.types.PlanningSample.augmented` False); rows are selected on the
            metadata columns before any row is decoded.

    Raises:
        FileNotFoundError: ``data_dir`` is not a planning dataset (:func:`load_dataset_dir`).
    """
    ds = load_dataset_dir(data_dir)
    keep_scene = set(scenes) if scenes is not None else None
    scene_ids = ds["scene_id"]
    original = original_sample_mask(ds) if not augmented else [True] * len(ds)
    rows = [i for i, (sid, ok) in enumerate(zip(scene_ids, original)) if ok and (keep_scene is None or sid in keep_scene)]
    if len(rows) < len(ds):
        ds = ds.select(rows)
    return [PlanningSample.from_row(row) for row in ds]
