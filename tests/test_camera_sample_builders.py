"""The library builders of the real camera samples (data_builders/nuscenes_sample.py, data_builders/drivelm.py)
that recipes and tests share: the scene-0061 keyframe and the DriveLM keyframes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from data_builders.drivelm import DRIVELM_SAMPLE, keyframe_planning_sample
from data_builders.nuscenes_sample import NUSCENES_INFO, info_sample, load_info, nuscenes_sample_0061
from dsdrive.data.types import CAMERA_NAMES

pytestmark = pytest.mark.skipif(not (NUSCENES_INFO.is_file() and DRIVELM_SAMPLE.is_dir()), reason="real camera samples not found")


def test_nuscenes_0061_keyframe():
    s = nuscenes_sample_0061()
    inp = s.inputs
    assert (s.source, s.map_name, inp.scene_id) == ("nuscenes", "singapore-onenorth", "scene-0061")
    assert sorted(c.name for c in inp.cameras) == sorted(CAMERA_NAMES) and all(Path(c.image_path).is_file() for c in inp.cameras)
    assert len(inp.agents) == 69 and inp.agents.types.count("OTHER") == 1  # bbox_label_3d -1: none of the ten classes
    assert bool(np.all(s.targets.ego_future_mask)) and 20 < float(s.targets.ego_future[-1, 0]) < 30  # about 4.7 m/s for 3 s
    assert inp.command == "STRAIGHT" and bool(np.all(inp.ego_status_mask[:2])) and not bool(np.any(inp.ego_history_mask))
    front = next(c for c in inp.cameras if c.name == "CAM_FRONT")
    assert front.cam2ego[0, 3] > 1.0 and front.intrinsics[0, 0] > 1000  # forward-mounted, ~1266 px focal length
    no_motion = info_sample(NUSCENES_INFO, 0, None)
    assert not bool(np.any(no_motion.targets.ego_future_mask)) and len(no_motion.inputs.agents) == 69


def test_bad_info_index_or_path_is_named(tmp_path):
    with pytest.raises(ValueError, match=re.escape(f"{NUSCENES_INFO}: field 'data_list' has 1 entries; index 3")):
        load_info(NUSCENES_INFO, 3)
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        load_info(tmp_path / "nope.pkl")


def test_drivelm_keyframes_are_image_only():
    frames = [keyframe_planning_sample(i) for i in range(9)]
    assert len({f.sample_id for f in frames}) == 9
    for f in frames:
        assert f.source == "drivelm" and len(f.inputs.cameras) == 6 and all(Path(c.image_path).is_file() for c in f.inputs.cameras)
        assert np.array_equal(f.inputs.cameras[0].intrinsics, np.eye(3)) and not bool(np.any(f.targets.ego_future_mask))
    with pytest.raises(IndexError, match="outside the 9 keyframes"):
        keyframe_planning_sample(9)
