"""data_builders.drivelm on the real DriveLM-nuScenes sample (shared/data/drivelm-challenge-sample)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import pytest

from data_builders.drivelm import DriveLMFormatError, STAGES, build, load_records, parse_key_object
from dsdrive.data.types import CAMERA_NAMES

DRIVELM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "drivelm-challenge-sample"
needs_data = pytest.mark.skipif(not (DRIVELM / "train_sample.json").exists(), reason=f"DriveLM sample absent: {DRIVELM}")


def test_parse_key_object():
    o = parse_key_object("<c1,CAM_BACK,1088.3,497.5>", {"Category": "Vehicle", "Status": "Moving", "Visual_description": "Brown SUV.", "2d_bbox": [966.6, 403.3, 1224.1, 591.7]})
    assert (o.id, o.camera, o.u, o.v, o.category, o.status) == ("c1", "CAM_BACK", 1088.3, 497.5, "Vehicle", "Moving")
    with pytest.raises(ValueError, match="CAM_TOP"):
        parse_key_object("<c1,CAM_TOP,1,2>", {"Category": "x", "2d_bbox": [0, 0, 1, 1]})
    with pytest.raises(ValueError):
        parse_key_object("<c1,CAM_BACK,1,2>", {"Category": "x", "2d_bbox": [0, 0, 1]})


@needs_data
def test_real_sample_counts_and_key_objects():
    records, report = load_records(DRIVELM)
    assert report["scenes"] == 2 and report["keyframes"] == 9
    assert report["qa_pairs"]["total"] == 790
    assert report["qa_pairs"] == {"perception": 337, "prediction": 271, "planning": 173, "behavior": 9, "total": 790}
    assert report["key_objects"] == 35 and not report["skipped"]
    for r in records:
        assert list(r.qa) == list(STAGES) and all(q.Q and q.A for st in STAGES for q in r.qa[st])
        assert set(r.image_paths) == set(CAMERA_NAMES)
        assert all(Path(p).is_file() and Path(p).is_relative_to(DRIVELM / "samples") for p in r.image_paths.values())
        for o in r.key_objects:
            x1, y1, x2, y2 = o.bbox_2d
            assert x1 <= o.u <= x2 and y1 <= o.v <= y2, o  # the key's centre lies in its 2D box
            assert 0 <= o.u <= 1600 and 0 <= o.v <= 900


@needs_data
def test_build_writes_hf_dataset(tmp_path):
    out = tmp_path / "drivelm"
    args = argparse.Namespace(source="drivelm", input=str(DRIVELM), out=str(out), strict=True)
    assert build(args) == 0
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 9
    assert sum(len(row[f"qa_{st}"]) for row in ds for st in STAGES) == 790
    assert ds[0]["key_objects"][0]["id"].startswith("c") and len(ds[0]["key_objects"][0]["bbox_2d"]) == 4
    assert json.loads((out / "build_report.json").read_text())["qa_pairs"]["total"] == 790


@needs_data
def test_missing_image_is_an_error_naming_file_and_key_or_a_counted_skip(tmp_path):
    data = json.loads((DRIVELM / "train_sample.json").read_text())
    scene = next(iter(data.values()))
    kf_token, kf = next(iter(scene["key_frames"].items()))
    kf["image_paths"]["CAM_FRONT"] = "../nuscenes/samples/CAM_FRONT/missing.jpg"
    (tmp_path / "samples").symlink_to(DRIVELM / "samples")
    (tmp_path / "train_sample.json").write_text(json.dumps(data))
    with pytest.raises(DriveLMFormatError, match=rf"train_sample.json.*{kf_token}.*image_paths\[CAM_FRONT\].*missing.jpg"):
        load_records(tmp_path)
    records, report = load_records(tmp_path, strict=False)
    assert len(records) == 8 and len(report["skipped"]) == 1
    args = argparse.Namespace(source="drivelm", input=str(tmp_path), out=str(tmp_path / "out"), strict=True)
    assert build(args) == 1 and not (tmp_path / "out").exists()
