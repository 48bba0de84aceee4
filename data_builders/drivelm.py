"""DriveLM-nuScenes QA JSON + camera images -> one record per keyframe (HF datasets, Arrow).

Run as:
    dsdrive build --source drivelm --input ../shared/data/drivelm-challenge-sample --out /tmp/drivelm

Source: DriveLM (Sima et al., "DriveLM: Driving with Graph Visual Question Answering",
ECCV 2024), the ``train_sample.json`` layout: ``{scene_token: {scene_description, key_frames:
{sample_token: {key_object_infos, QA: {perception, prediction, planning, behavior: [{Q, A,
...}]}, image_paths: {CAM_*: "../nuscenes/samples/CAM_*/file.jpg"}}}}}``.

A record holds the scene and keyframe (nuScenes sample) tokens, the QA pairs per stage in the
perception -> prediction -> planning -> behaviour order, the key objects parsed from their keys
``<c1,CAM_BACK,1088.3,497.5>`` (id, camera, centre u, v in pixels of that 1600x900 image) with
``Category``, ``Status``, ``Visual_description`` and ``2d_bbox`` (x1, y1, x2, y2 pixels), and the
six images resolved to absolute paths: a relative ``image_paths`` entry is looked up under
``<input>/samples/<CAM>/<file>`` (the DriveLM release points at ``../nuscenes/samples``).

Bad input: a malformed key or field raises :class:`DriveLMFormatError` naming the file, the
keyframe and the key; a missing image raises it too, or (``strict=False``) the keyframe is
skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import datasets
from datasets import Features, Sequence, Value
from pydantic import BaseModel, Field

from dsdrive.data.paths import SHARED_DATA
from dsdrive.data.types import CAMERA_NAMES

STAGES = ("perception", "prediction", "planning", "behavior")
DRIVELM_SAMPLE = SHARED_DATA / "drivelm-challenge-sample"
"""The shared DriveLM sample (nine keyframes with six real images each)."""
_KEY = re.compile(r"^<(c\d+),(CAM_[A-Z_]+),(-?[\d.]+),(-?[\d.]+)>$")


class DriveLMFormatError(ValueError):
    """A DriveLM file does not follow the expected layout; the message names file, keyframe, key."""


class QA(BaseModel):
    """One question/answer pair."""

    Q: str
    A: str


class KeyObject(BaseModel):
    """A key object: ``<id,camera,u,v>`` plus its description; pixels of that camera's image."""

    id: str
    camera: str
    u: float
    v: float
    category: str = Field(alias="Category")
    status: str | None = Field(default=None, alias="Status")
    visual_description: str | None = Field(default=None, alias="Visual_description")
    bbox_2d: list[float] = Field(alias="2d_bbox", min_length=4, max_length=4)

    model_config = {"populate_by_name": True}


class DriveLMRecord(BaseModel):
    """One DriveLM keyframe."""

    scene_token: str
    sample_token: str
    scene_description: str
    qa: dict[str, list[QA]]
    key_objects: list[KeyObject]
    image_paths: dict[str, str]


def parse_key_object(key: str, info: dict) -> KeyObject:
    """Parse ``"<c1,CAM_BACK,1088.3,497.5>"`` and its info dict into a :class:`KeyObject`.

    Raises:
        ValueError: the key does not match ``<cN,CAM_*,u,v>`` or the camera is unknown.
        pydantic.ValidationError: the info dict lacks ``Category`` / ``2d_bbox`` or has bad types.
    """
    m = _KEY.match(key.replace(" ", ""))
    if not m or m.group(2) not in CAMERA_NAMES:
        raise ValueError(f"key object {key!r} is not <cN,CAM_*,u,v> with a nuScenes camera")
    return KeyObject(id=m.group(1), camera=m.group(2), u=float(m.group(3)), v=float(m.group(4)), **info)


def _resolve_image(root: Path, rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute():
        return p
    parts = p.parts
    if "samples" in parts:  # "../nuscenes/samples/CAM_X/file.jpg" -> <root>/samples/CAM_X/file.jpg
        return (root / Path(*parts[parts.index("samples"):])).resolve()
    return (root / p).resolve()


def load_records(input_dir: str | Path, json_name: str = "train_sample.json", strict: bool = True) -> tuple[list[DriveLMRecord], dict]:
    """Read a DriveLM QA JSON under ``input_dir`` (a folder, or the JSON file itself).

    Returns:
        ``(records, report)``: records in file order; report with ``scenes``, ``keyframes``,
        ``qa_pairs`` (per stage and ``total``), ``key_objects``, ``images`` and ``skipped``.

    Raises:
        FileNotFoundError: no such folder / JSON.
        DriveLMFormatError: malformed content, or a missing image when ``strict``.
    """
    path = Path(input_dir)
    path = path if path.is_file() else path / json_name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no DriveLM QA JSON (expected {json_name} in the --input folder)")
    root = path.parent
    data = json.loads(path.read_text())
    records, skipped = [], []
    for scene_token, scene in data.items():
        for sample_token, kf in scene.get("key_frames", {}).items():
            where = f"{path}: scene {scene_token} key_frame {sample_token}"
            try:
                qa = {st: [QA(Q=q["Q"], A=q["A"]) for q in kf["QA"].get(st, [])] for st in STAGES}
                objects = [parse_key_object(k, v) for k, v in kf.get("key_object_infos", {}).items()]
                images = {cam: _resolve_image(root, rel) for cam, rel in kf["image_paths"].items()}
            except (KeyError, TypeError, ValueError) as exc:
                raise DriveLMFormatError(f"{where}: {type(exc).__name__}: {exc}") from exc
            missing = [f"image_paths[{cam}] -> {p}" for cam, p in images.items() if not p.is_file()]
            if missing:
                if strict:
                    raise DriveLMFormatError(f"{where}: missing image {missing[0]}")
                skipped.append(f"{where}: missing {len(missing)} images, first {missing[0]}")
                continue
            records.append(DriveLMRecord(scene_token=scene_token, sample_token=sample_token, scene_description=scene.get("scene_description", ""), qa=qa, key_objects=objects, image_paths={c: str(p) for c, p in images.items()}))
    per_stage = {st: sum(len(r.qa[st]) for r in records) for st in STAGES}
    report = {
        "input": str(path),
        "scenes": len({r.scene_token for r in records}),
        "keyframes": len(records),
        "qa_pairs": {**per_stage, "total": sum(per_stage.values())},
        "key_objects": sum(len(r.key_objects) for r in records),
        "images": sum(len(r.image_paths) for r in records),
        "skipped": skipped,
    }
    return records, report


def keyframe_planning_sample(index: int = 0, input_dir: str | Path = DRIVELM_SAMPLE):
    """Keyframe ``index`` (file order, :func:`load_records`) as an image-only :class:`PlanningSample`.

    DriveLM's JSON has no calibration, ego state or future: the six cameras get identity
    ``intrinsics`` / ``cam2ego`` placeholders (a camera student reads them with the LLM but does not
    lift them to BEV), agents / map / history are empty, the ego status and future are masked out
    and the command is STRAIGHT. Source ``drivelm``, scene id = the scene token, sample id = the
    keyframe (nuScenes sample) token.

    Raises:
        FileNotFoundError: no DriveLM JSON under ``input_dir``.
        DriveLMFormatError: malformed content or a missing image (naming file, keyframe, key).
        IndexError: ``index`` outside the keyframes (naming the count).
    """
    import numpy as np

    from dsdrive.data.types import Agents, Camera, MapPolylines, PlanningInputs, PlanningSample, PlanningTargets

    records, _ = load_records(input_dir, strict=True)
    if not -len(records) <= index < len(records):
        raise IndexError(f"{input_dir}: keyframe index {index} outside the {len(records)} keyframes")
    rec = records[index]
    cameras = [Camera(cam, path, np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32)) for cam, path in rec.image_paths.items()]
    inputs = PlanningInputs(
        sample_id=rec.sample_token, scene_id=rec.scene_token, ego_history=np.zeros((4, 3), np.float32), ego_history_mask=np.zeros(4, bool),
        ego_status=np.zeros(6, np.float32), ego_status_mask=np.zeros(6, bool), command="STRAIGHT", agents=Agents.empty(),
        map=MapPolylines.empty(), cameras=cameras,
    )
    targets = PlanningTargets(np.zeros((6, 3), np.float32), np.zeros(6, bool), np.zeros((0, 12, 3), np.float32), np.zeros((0, 12), bool))
    return PlanningSample("drivelm", "unknown", 0.0, inputs, targets)


def drivelm_features() -> Features:
    """Arrow schema of a DriveLM record dataset."""
    qa = [{"Q": Value("string"), "A": Value("string")}]
    return Features({
        "scene_token": Value("string"),
        "sample_token": Value("string"),
        "scene_description": Value("string"),
        **{f"qa_{st}": qa for st in STAGES},
        "key_objects": [{"id": Value("string"), "camera": Value("string"), "u": Value("float32"), "v": Value("float32"), "category": Value("string"), "status": Value("string"), "visual_description": Value("string"), "bbox_2d": Sequence(Value("float32"), length=4)}],
        "image_cameras": Sequence(Value("string")),
        "image_paths": Sequence(Value("string")),
    })


def records_to_dataset(records: list[DriveLMRecord]) -> datasets.Dataset:
    """In-memory Arrow dataset of records (one row per keyframe)."""
    rows = []
    for r in records:
        rows.append({
            "scene_token": r.scene_token,
            "sample_token": r.sample_token,
            "scene_description": r.scene_description,
            **{f"qa_{st}": [q.model_dump() for q in r.qa[st]] for st in STAGES},
            "key_objects": [o.model_dump(by_alias=False) for o in r.key_objects],
            "image_cameras": list(r.image_paths),
            "image_paths": list(r.image_paths.values()),
        })
    features = drivelm_features()
    return datasets.Dataset.from_dict({k: [row[k] for row in rows] for k in features}, features=features)


def build(args: argparse.Namespace) -> int:
    """``dsdrive build --source drivelm``: write records with ``save_to_disk`` (temporary folder
    renamed into place) and print counts. Returns 0 ok, 1 bad content / nothing built, 2 bad path."""
    if not args.input:
        print("dsdrive build --source drivelm: --input is required (folder with train_sample.json and samples/)", file=sys.stderr)
        return 2
    try:
        records, report = load_records(args.input, strict=getattr(args, "strict", False))
    except FileNotFoundError as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 2
    except DriveLMFormatError as exc:
        print(f"dsdrive build: {exc}", file=sys.stderr)
        return 1
    print(f"drivelm {report['input']}: {report['scenes']} scenes, {report['keyframes']} keyframes, {report['qa_pairs']['total']} QA pairs {report['qa_pairs']}, {report['key_objects']} key objects, {len(report['skipped'])} keyframes skipped")
    for s in report["skipped"]:
        print(f"  skipped {s}", file=sys.stderr)
    if not records:
        return 1
    from dsdrive.data.atomic_io import write_json_atomic
    from dsdrive.data.dataset import save_dataset_atomic

    out = Path(args.out)
    save_dataset_atomic(records_to_dataset(records), out)
    write_json_atomic(out / "build_report.json", report)
    print(f"wrote {out}")
    return 0
