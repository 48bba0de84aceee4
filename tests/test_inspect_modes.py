"""``eval/inspect_modes.py``: the mode scores, endpoints and prior blend of a saved student."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_student import make_samples, one_thread, tiny_student  # noqa: F401

from dsdrive.data.dataset import save_samples

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
import inspect_modes  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    samples = make_samples(6)
    model, proc = tiny_student(samples, waypoint_prior="kinematic")
    model.save_pretrained(root / "ckpt")
    proc.save_pretrained(root / "ckpt")
    save_samples(samples, root / "data")
    return root, samples


def test_reports_scores_endpoints_blend_and_spread(saved, capsys):
    root, samples = saved
    ids = [s.sample_id for s in samples[:4]]
    assert inspect_modes.main(["--checkpoint", str(root / "ckpt"), "--data", str(root / "data"), "--samples", *ids,
                               "--json", str(root / "out.json")]) == 0
    rep = json.loads((root / "out.json").read_text())
    assert [r["sample_id"] for r in rep["samples"]] == ids
    for r, s in zip(rep["samples"], samples):
        assert r["command"] == s.inputs.command
        assert len(r["mode_scores"]) == 6 and abs(sum(r["mode_scores"]) - 1) < 0.01
        assert np.asarray(r["mode_3s"]).shape == (6, 2)
        assert np.allclose(r["logged_3s"], np.asarray(s.targets.ego_future)[-1, :2], atol=0.01)
    # the untrained kinematic head: a uniform blend, and zero-initialised mode logits score every mode alike
    assert np.allclose(rep["prior_blend"], 1 / 3, atol=1e-3)
    assert all(v is None or v < 1e-3 for v in rep["mode_score_spread"].values())
    assert "mode-score spread" in capsys.readouterr().out


def test_unknown_sample_is_a_one_line_error(saved, capsys):
    root, _ = saved
    assert inspect_modes.main(["--checkpoint", str(root / "ckpt"), "--data", str(root / "data"), "--samples", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no sample 'nope'" in err and str(root / "data") in err
