"""Open-loop HTML report: real samples, real planners (constant velocity, ego MLP, a tiny student),
the numbers it shows, its figures, bad input, and the page in headless chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers_open_loop import make_sample, straight_line
from helpers_scenarionet import REAL_DIR, needs_real_data
from helpers_student import one_thread, tiny_student  # noqa: F401  (one_thread is a fixture)

from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.evaluation.open_loop_report import (
    bev_figure,
    build_open_loop_report,
    collect_report_inputs,
    stp3_l2_avg,
    write_open_loop_report,
)
from dsdrive.planners.constant_velocity import ConstantVelocityPlanner

SCENES = ("scene-0655", "scene-1077")


@pytest.fixture(scope="module")
def real_planners(tmp_path_factory, one_thread):  # noqa: F811
    """Samples of two real scenes; constant velocity, an ego MLP trained on a third scene, a tiny
    (untrained) student saved and loaded as a StudentPlanner."""
    if not REAL_DIR.is_dir():
        pytest.skip(f"real ScenarioNet data not found at {REAL_DIR}")
    from data_builders.scenarionet import build_scene, load_scenario
    from dsdrive.planners.ego_mlp import EgoMLPConfig
    from dsdrive.training.ego_mlp import train_ego_mlp
    from dsdrive.planners.student import StudentPlanner

    def scene(name):
        path = REAL_DIR / f"sd_nuscenes_v1.0-mini_{name}.pkl"
        return build_scene(load_scenario(path), path)

    samples = [s for name in SCENES for s in scene(name)[::2]]
    ego = train_ego_mlp(scene("scene-0061"), EgoMLPConfig(hidden_dim=32, epochs=20), progress=False)
    model, processor = tiny_student(samples)
    ckpt = tmp_path_factory.mktemp("student")
    model.save_pretrained(ckpt)
    processor.save_pretrained(ckpt)
    student = StudentPlanner(ckpt, max_new_tokens=24)
    return samples, {"constant_velocity": ConstantVelocityPlanner(), "ego_mlp": ego, "student": student}


@pytest.fixture(scope="module")
def report_inputs(real_planners):
    samples, planners = real_planners
    return collect_report_inputs(planners, samples, worst_n=3)


@needs_real_data
def test_worst_samples_are_ranked_against_the_best_baseline(real_planners, report_inputs):
    ri = report_inputs
    complete = [s for s in real_planners[0] if s.targets.ego_future_mask.all()]
    assert [s.sample_id for s in ri.samples] == [s.sample_id for s in complete] and ri.student == "student"
    assert ri.num_skipped == len(real_planners[0]) - len(complete)
    means = {n: float(stp3_l2_avg(ri.metrics[n].l2).mean()) for n in ("constant_velocity", "ego_mlp")}
    assert ri.best_baseline == min(means, key=means.get)
    delta = stp3_l2_avg(ri.metrics["student"].l2) - stp3_l2_avg(ri.metrics[ri.best_baseline].l2)
    assert [w.index for w in ri.worst] == list(np.argsort(-delta, kind="stable")[:3])
    assert [w.delta_l2 for w in ri.worst] == pytest.approx(sorted(delta, reverse=True)[:3])
    for w in ri.worst:
        x, s = w.explanation, ri.samples[w.index]
        assert len(x["mode_scores"]) == 6 and sum(x["mode_scores"]) == pytest.approx(1.0, abs=1e-3)
        wp = ri.predictions["student"][w.index]
        assert x["implied_meta_action"] == str(meta_action_from_trajectory(wp[:, :2], s.inputs.speed))
        assert x["explain_waypoint_gap_m"] < 1e-3  # the explaining pass plans what was evaluated


@needs_real_data
def test_report_numbers_match_the_per_sample_metrics(tmp_path, report_inputs):
    cv = {"method": "95 % bootstrap over scenes (test)", "intervals": {"student": {"ALL": {"stp3": {"L2": {"avg": [0.5, 0.9]}}}}}}
    html = write_open_loop_report(tmp_path / "r", report_inputs, config={"data": "real"}, cv_summary=cv)
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    by_cmd = doc["metrics_by_command"]
    hist = doc["histogram"]
    assert hist["baseline"] == "constant_velocity" and hist["n"] == len(report_inputs.samples)
    # the histogram's mean is the difference of the ST-P3 L2 avg table rows
    assert hist["mean"] == pytest.approx(by_cmd["student"]["ALL"]["stp3"]["L2"]["avg"] - by_cmd["constant_velocity"]["ALL"]["stp3"]["L2"]["avg"])
    for name in report_inputs.metrics:
        assert sum(doc["metrics_by_scene"][name][sc]["num_samples"] for sc in SCENES) == by_cmd[name]["ALL"]["num_samples"]
    assert [w["sample_id"] for w in doc["worst"]] == [report_inputs.samples[w.index].sample_id for w in report_inputs.worst]
    assert all((tmp_path / "r" / w["png"]).stat().st_size > 10_000 for w in doc["worst"])
    text = html.read_text()
    assert "[0.5, 0.9]" in text and text.count("<td>—</td>") > 10  # the given interval; "—" where none is given


def test_bev_figure_axes_title_legend_and_collision_boxes(tmp_path):
    """A parked car 12 m ahead that the logged ego stops short of: constant velocity drives into it."""
    from dsdrive.evaluation.open_loop_report import WorstSample

    gt = np.stack([np.minimum(straight_line(8.0)[:, 0], 6.0), np.zeros(6), np.zeros(6)], 1)
    sample = make_sample(gt, agents=[{"x": 12.0, "y": 0.0, "yaw": 0.0, "length": 4.5, "width": 1.9}], sample_id="s-park", scene_id="scene-x",
                         ego_status=np.array([8.0, 0, 0, 0, 0, 0], np.float32))
    ri = collect_report_inputs({"constant_velocity": ConstantVelocityPlanner()}, [sample], student="none")
    assert ri.metrics["constant_velocity"].collision[0].any() and ri.worst == []  # no student: nothing ranked
    fig = bev_figure(ri, WorstSample(0, 0.0))
    ax = fig.axes[0]
    assert all(k in ax.get_title() for k in ("scene-x", "s-park", "command STRAIGHT"))
    assert "m, ego frame, forward" in ax.get_xlabel() and "m, ego frame, left" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "logged ego future" in labels and any(lb.startswith("constant_velocity: L2") and "coll." in lb for lb in labels)
    red = [ln for ln in ax.lines if ln.get_color() == "red"]
    assert len(red) == int(ri.metrics["constant_velocity"].collision[0].sum())  # one hit agent box per collision step


def test_bad_input_is_named(tmp_path):
    samples = [make_sample(straight_line(5.0), sample_id="a")]
    planners = {"constant_velocity": ConstantVelocityPlanner()}
    with pytest.raises(ValueError, match="worst_n"):
        collect_report_inputs(planners, samples, worst_n=-1)
    with pytest.raises(ValueError, match=r"predictions\['constant_velocity'\]: shape \(2, 6, 3\)"):
        collect_report_inputs(planners, samples, predictions={"constant_velocity": np.zeros((2, 6, 3))})
    with pytest.raises(ValueError, match="complete 6-step"):
        collect_report_inputs(planners, [make_sample(straight_line(5.0), future_mask=np.arange(6) < 3)])
    ri = collect_report_inputs(planners, samples)
    with pytest.raises(ValueError, match=r"cv_summary.intervals.cv.ALL.stp3.L2.avg: expected \[lo, hi\]"):
        write_open_loop_report(tmp_path, ri, cv_summary={"intervals": {"cv": {"ALL": {"stp3": {"L2": {"avg": [2.0, 1.0]}}}}}})


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@needs_real_data
def test_report_opens_in_headless_chromium(tmp_path, real_planners):
    samples, planners = real_planners
    html = build_open_loop_report(tmp_path / "report", planners, samples, worst_n=2, config={"data": str(REAL_DIR)})
    assert html.name == "index.html" and len(list((tmp_path / "report" / "img").glob("*.png"))) == 3
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install -y chromium; .ci/run does it)")
    # a copy of the page with a script that records, once loaded, each image's decoded width
    probe = html.with_name("probe.html")
    probe.write_text(html.read_text().replace("</body>", "<script>window.addEventListener('load', () => document.body.setAttribute("
                                              "'data-widths', Array.from(document.images).map(i => i.naturalWidth).join(',')));</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'chrome'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=120).stdout
    for section in ('id="metrics"', 'id="per-scene"', 'id="histogram"', 'id="worst"'):
        assert section in dom
    assert dom.count('class="scenario worst-sample"') == 2 and dom.count('class="reasoning explanation"') == 2
    assert "ST-P3 protocol" in dom and "UniAD protocol" in dom and all(sc in dom for sc in SCENES)
    widths = [int(w) for w in re.search(r'data-widths="([\d,]*)"', dom).group(1).split(",")]
    assert len(widths) == 3 and min(widths) > 300  # the histogram and 2 BEV plots decoded
    shot = tmp_path / "report.png"
    subprocess.run([chromium, *flags, "--window-size=1400,2000", f"--screenshot={shot}", html.resolve().as_uri()], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
