"""eval/compare_closed_loop.py: per-run counts, per-scene means over seeds, the paired scene-bootstrap
difference (identical sides give exactly [0, 0]), and bad input named with exit 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "eval" / "compare_closed_loop.py"
spec = importlib.util.spec_from_file_location("compare_closed_loop", SCRIPT)
ccl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ccl)


def _report(path: Path, planner: str, rows: dict[str, tuple[float, bool, float]]) -> str:
    """A closed-loop report.json with one row per scene: (RC, at fault, PDMS)."""
    scenarios = [{"scene_id": s, "route_completion": rc, "pdms": pdms,
                  "events": [{"kind": "at-fault overlap", "t": 3.0}] if fault else [{"kind": "hard braking", "t": 1.0}]}
                 for s, (rc, fault, pdms) in rows.items()]
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps({"planners": {planner: {"scenarios": scenarios}}}))
    return str(path)


def test_counts_means_and_paired_interval(tmp_path, capsys):
    good = {"s1": (1.0, False, 1.0), "s2": (0.95, False, 0.9), "s3": (0.5, False, 0.8)}
    bad = {"s1": (1.0, True, 0.0), "s2": (0.95, False, 0.9), "s3": (0.5, False, 0.8)}
    a = [_report(tmp_path / f"a{i}", "checked", good) for i in range(2)]
    b = [_report(tmp_path / "b0", "plain", bad), _report(tmp_path / "b1", "plain", good)]
    assert ccl.main(["--a", "checked=" + ",".join(a), "--b", "plain=" + ",".join(b), "--json", str(tmp_path / "out.json")]) == 0
    res = json.loads((tmp_path / "out.json").read_text())
    assert res["runs_a"][0] == {"rc": pytest.approx(2.45 / 3), "pdms": pytest.approx(2.7 / 3), "at_fault": 0, "goal": 2}
    assert res["runs_b"][0]["at_fault"] == 1 and res["runs_b"][0]["goal"] == 1
    assert res["per_scene_b"]["s1"]["at_fault"] == 0.5  # at fault in one of the two runs
    d = res["difference"]
    assert d["rc"] == {"mean": 0.0, "low": 0.0, "high": 0.0}  # same RC everywhere: exactly [0, 0]
    assert d["at_fault"]["mean"] == pytest.approx(-0.5 / 3) and d["at_fault"]["low"] < 0 <= d["at_fault"]["high"]
    assert "at_fault: -0.1667" in capsys.readouterr().out


def test_bad_input_is_named(tmp_path, capsys):
    run = _report(tmp_path / "r", "student", {"s1": (1.0, False, 1.0)})
    other = _report(tmp_path / "o", "student", {"s2": (1.0, False, 1.0)})
    assert ccl.main(["--a", f"student_checked={run}", "--b", f"student={run}"]) == 2
    assert "no planner 'student_checked'" in capsys.readouterr().err
    assert ccl.main(["--a", f"student={tmp_path / 'missing'}", "--b", f"student={run}"]) == 2
    assert "missing" in capsys.readouterr().err
    assert ccl.main(["--a", f"student={run}", "--b", f"student={other}"]) == 2
    assert "holds scenes ['s2']" in capsys.readouterr().err
    assert ccl.main(["--a", "student", "--b", f"student={run}"]) == 2
    assert "PLANNER=OUT" in capsys.readouterr().err
