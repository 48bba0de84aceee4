"""Planning vocabulary (DistillDrive k-means anchors) and the `dsdrive vocab` command."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_annotate import make_dataset, make_sample, straight_future

from dsdrive.cli import main as cli_main
from dsdrive.distilldrive.kmeans_anchors import kmeans_anchors
from dsdrive.distilldrive.motion_vocabulary import MotionVocabulary
from dsdrive.distilldrive.planning_vocabulary import PlanningVocabulary
from dsdrive.data.types import COMMANDS


def test_kmeans_anchors_recovers_clusters_sorted_by_distance():
    rng = np.random.default_rng(0)
    slow, fast = straight_future(2.0)[:, :2], straight_future(10.0)[:, :2]
    data = np.concatenate([fast + rng.normal(0, 0.01, (20, 6, 2)), slow + rng.normal(0, 0.01, (20, 6, 2))])
    anchors = kmeans_anchors(data, modes=2, seed=0)
    assert anchors.shape == (2, 6, 2) and anchors.dtype == np.float32
    np.testing.assert_allclose(anchors[0], slow, atol=0.02)  # sorted by final x
    np.testing.assert_allclose(anchors[1], fast, atol=0.02)


def test_kmeans_anchors_repeats_when_fewer_distinct_trajectories():
    one = np.repeat(straight_future(5.0)[None, :, :2], 3, axis=0)
    anchors = kmeans_anchors(one, modes=6)
    assert anchors.shape == (6, 6, 2)
    np.testing.assert_allclose(anchors, np.repeat(one[:1], 6, axis=0), atol=1e-5)


def test_kmeans_anchors_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(0, 6, 2\)"):
        kmeans_anchors(np.zeros((0, 6, 2)), modes=6)
    with pytest.raises(ValueError, match="modes=0"):
        kmeans_anchors(np.zeros((3, 6, 2)), modes=0)


def test_fit_fills_absent_commands_with_turning_arcs():
    samples = [make_sample(f"s{i}", speed=2.0 + i) for i in range(8)]  # all STRAIGHT
    vocab = PlanningVocabulary.fit(samples, modes=6, seed=0)
    assert vocab.anchors.shape == (3, 6, 6, 2)
    left, right = vocab.anchors[COMMANDS.index("LEFT")], vocab.anchors[COMMANDS.index("RIGHT")]
    assert (left[:, -1, 1] > 2.0).all() and (right[:, -1, 1] < -2.0).all()


def test_vocab_command_writes_both_vocabularies(tmp_path, capsys):
    make_dataset(tmp_path / "data", n=12)
    assert cli_main(["vocab", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "vocab"), "--val-scenes", ""]) == 0
    plan = PlanningVocabulary.load(tmp_path / "vocab")
    motion = MotionVocabulary.load(tmp_path / "vocab")
    assert plan.anchors.shape == (3, 6, 6, 2) and motion.anchors.shape[1:] == (6, 12, 2)
    assert "fitted on" in capsys.readouterr().out


def test_vocab_command_missing_dataset(tmp_path, capsys):
    assert cli_main(["vocab", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "v")]) == 2
    assert "nope" in capsys.readouterr().err


def test_load_rejects_bad_shape(tmp_path):
    (tmp_path / "planning_vocabulary.json").write_text('{"anchors": [[1.0, 2.0]]}')
    with pytest.raises(ValueError, match="anchors"):
        PlanningVocabulary.load(tmp_path)
