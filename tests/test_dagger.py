"""On-policy distillation (``dsdrive dagger``, :mod:`dsdrive.training.dagger`): the DART perturbation,
the settings, DAgger's expert mixing (beta), and the loop on two real scenes with tiny settings (one
trained on, one held out): every artefact of two iterations, the aggregated data (logged + on-policy
states labelled by PDM-Closed, never from the log), the label settings (defaults relabel exactly,
cautious ones label slower plans) and the expert driving every step with beta0 = 1, and a resume after a kill in the middle of training that ends
with the same result (these share one ~1 min fixture, so they are ``slow``: ``pytest -m slow
tests/test_dagger.py``), and three iterations with full-length rollouts (``slow``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dsdrive.cli import SUBCOMMANDS
from dsdrive.planners.pdm_closed import PDM_IDM
from dsdrive.training.dagger import ON_POLICY, DartPerturbation, ExpertMixture, expert_planner, label_states, main, repeat_samples
from dsdrive.training.dagger_config import DaggerConfig

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "nuscenes-mini-scenarionet"
SCENES = ("scene-0553", "scene-0655")  # folds 2, fold 0: scene-0553 held out, scene-0655 trained on
TINY = ["--max_steps", "2", "--tiny_hidden_size", "32", "--tiny_layers", "1", "--tiny_heads", "2", "--scene_dim", "16",
        "--tokenizer_vocab_size", "300", "--max_prompt_tokens", "128", "--max_reasoning_tokens", "64"]
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}")


def test_dart_perturbation_is_seeded_bounded_and_windowed():
    def drive(seed):
        p = DartPerturbation(prob=0.5, steer=0.3, steps=10, seed=seed, iteration=1)
        acts = np.array([p("scene-x", k, np.array([0.9, 0.1])) for k in range(200)])
        return p, acts

    p, a = drive(0)
    _, b = drive(0)
    _, c = drive(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert p.windows and all(0.15 <= abs(w["steering_offset"]) <= 0.3 for w in p.windows)
    assert np.all(np.abs(a[:, 0]) <= 1.0) and np.all(a[:, 1] == 0.1)  # steering clipped, throttle untouched
    perturbed = np.flatnonzero(a[:, 0] != 0.9)
    starts = {w["step"] for w in p.windows}
    assert starts <= set(perturbed.tolist()) and len(perturbed) == 10 * len(p.windows)
    assert all(s % 5 == 0 for s in starts)  # windows start at replanning steps
    none = DartPerturbation(prob=0.0, steer=0.3, steps=10, seed=0, iteration=1)
    assert all(none("s", k, np.array([0.2, 0.0]))[0] == 0.2 for k in range(50)) and not none.windows


@pytest.mark.parametrize("field,value", [("fold", 4), ("folds", 1), ("perturb_prob", 1.5), ("traffic", "wild"), ("rollout_max_steps", 0),
                                         ("beta0", 1.5), ("beta_decay", -0.1), ("label_speed", "map"), ("label_speed_margin", -0.1),
                                         ("label_idm_headway", 0.0), ("label_idm_s0", -1.0), ("warm_start_steps", 0), ("warm_start_steps", 150),
                                         ("on_policy_repeat", 0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DaggerConfig(**{field: value})


def test_beta_schedule_and_label_settings_default_to_the_previous_loop():
    off = DaggerConfig()
    assert [off.beta(i) for i in range(4)] == [0.0, 0.0, 0.0, 0.0]  # beta = 0: the student always drives
    on = DaggerConfig(beta0=0.5, beta_decay=0.5)
    assert [on.beta(i) for i in range(4)] == [0.0, 0.5, 0.25, 0.125]  # beta_i = beta0 * decay^(i-1), i >= 1
    default = expert_planner(off)
    assert default.idm == PDM_IDM and default.log_speed_margin is None  # the labels of PDM-Closed as before
    cautious = expert_planner(DaggerConfig(label_speed="log", label_speed_margin=0.2, label_idm_headway=2.0, label_idm_s0=2.5))
    assert (cautious.idm.headway, cautious.idm.s0, cautious.idm.a_max, cautious.log_speed_margin) == (2.0, 2.5, PDM_IDM.a_max, 0.2)


class _Fixed:
    """A planner returning constant waypoints (tells which policy drove a step)."""

    def __init__(self, x: float):
        self.wp, self.worlds = np.tile([[x, 0.0, 0.0]], (6, 1)).astype(np.float32), []

    def compute_trajectory(self, inputs):
        return self.wp

    def plan_in_world(self, inputs, ego_xy, ego_yaw, t_now):
        return self.wp, {"text": "expert"}

    def set_world(self, route, area=None):
        self.worlds.append(route)


def test_expert_mixture_is_seeded_and_follows_beta():
    def drive(beta, seed=0, n=400):
        mix = ExpertMixture(_Fixed(1.0), _Fixed(2.0), beta, seed=seed, iteration=1)
        mix.set_world("route", None)
        out = [float(mix.plan_in_world(None, np.zeros(2), 0.0, 0.1 * k)[0][0, 0]) for k in range(n)]
        return mix, out

    mix, a = drive(0.5)
    assert mix.expert.worlds == ["route"]  # the world goes to the expert
    assert [x == 2.0 for x in a] == mix.decisions and 0.4 < np.mean(mix.decisions) < 0.6
    assert drive(0.5)[1] == a and drive(0.5, seed=1)[1] != a  # seeded
    assert set(drive(0.0)[1]) == {1.0} and set(drive(1.0)[1]) == {2.0}
    assert mix.compute_trajectory(None)[0, 0] == 1.0  # no world: the student
    with pytest.raises(ValueError, match="beta"):
        ExpertMixture(_Fixed(1.0), _Fixed(2.0), 1.5, seed=0, iteration=1)


def test_repeat_samples_copies_with_distinct_ids():
    from helpers_student import make_samples

    samples = make_samples(3)
    assert repeat_samples(samples, 1) == samples
    out = repeat_samples(samples, 3)
    ids = [s.sample_id for s in out]
    assert len(out) == 9 and len(set(ids)) == 9 and ids[3:6] == [f"{s.sample_id}~rep1" for s in samples]
    for s in out[3:]:
        base = samples[int(s.sample_id[1])]
        np.testing.assert_array_equal(s.targets.ego_future, base.targets.ego_future)
        assert s.annotation is None or s.annotation["sample_id"] == s.sample_id
    assert samples[0].sample_id == "s0"  # the originals are untouched


def test_stage_is_registered():
    assert SUBCOMMANDS["dagger"][0] == "dsdrive.training.dagger"


@pytest.fixture(scope="module")
def tiny_loop(tmp_path_factory):
    """Logged data of two real scenes (build + rule annotator), then 2 iterations (0 and 1) of the loop."""
    from data_builders.build import main as build_main
    from dsdrive.annotation.annotate import main as annotate_main, merge_main

    root = tmp_path_factory.mktemp("dagger")
    src = root / "scenarios"
    src.mkdir()
    for s in SCENES:
        (src / f"sd_nuscenes_v1.0-mini_{s}.pkl").symlink_to(DATA / f"sd_nuscenes_v1.0-mini_{s}.pkl")
    assert build_main(["--source", "scenarionet", "--input", str(src), "--out", str(root / "planning"), "--no-progress"]) == 0
    assert annotate_main(["--annotator", "rule", "--data", str(root / "planning"), "--out", str(root / "ann")]) == 0
    assert merge_main(["--data", str(root / "planning"), "--annotations", str(root / "ann"), "--out", str(root / "data")]) == 0
    argv = ["--data", str(root / "data"), "--scenarios", str(src), "--out", str(root / "out"), "--folds", "2", "--fold", "0",
            "--iterations", "1", "--rollout_max_steps", "15", "--perturb_prob", "0.5", *TINY]
    assert main(argv) == 0
    return root, argv


@pytest.mark.slow  # ~45-65 s on the shared 2-core machine (MetaDrive start-ups + 2 tiny trainings)
@needs_data
def test_two_iterations_write_every_artefact(tiny_loop):
    root, _ = tiny_loop
    fold = root / "out" / "fold_0"
    assert json.loads((fold / "fold.json").read_text())["heldout"] == ["scene-0553"]
    for i in (0, 1):
        it = fold / f"iter_{i}"
        for f in ("checkpoint/config.json", "checkpoint/eval_heldout.json", "closed_loop.json", "open_loop.json", "timing.json", "done"):
            assert (it / f).is_file(), f"iter_{i}/{f}"
        cl = json.loads((it / "closed_loop.json").read_text())
        assert cl["scenes"] == ["scene-0553"] and cl["aggregate"]["ran"] == 1 and cl["per_scene"][0]["steps"] == 15
        assert np.isfinite(json.loads((it / "open_loop.json").read_text())["metrics"]["ALL"]["stp3"]["L2"]["avg"])
        t = json.loads((it / "timing.json").read_text())
        assert t["training_s"] > 0 and t["heldout_closed_loop_s"] > 0
        assert t["total_s"] == pytest.approx(t["simulation_s"] + t["labelling_s"] + t["training_s"])
    assert not (fold / "iter_0" / "rollout").exists()  # iteration 0 = plain imitation
    roll = json.loads((fold / "iter_1" / "rollout" / "summary.json").read_text())
    assert roll["states"] == 3 and set(roll["scenes"]) == {"scene-0655"}  # 15 steps -> plans at 0, 5, 10
    assert json.loads((fold / "iter_1" / "timing.json").read_text())["labelling_s"] > 0
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert [r["iteration"] for r in summary["rows"]] == [0, 1] and summary["rows"][1]["samples_added"] == 3
    assert "| 0 | 0553 | 1 |" in (root / "out" / "summary.md").read_text()


@pytest.mark.slow
@needs_data
def test_aggregated_data_holds_logged_and_pdm_closed_labelled_states(tiny_loop):
    from dsdrive.data.dataset import load_samples

    root, _ = tiny_loop
    fold = root / "out" / "fold_0"
    data0 = load_samples(fold / "iter_0" / "train_data")
    data1 = load_samples(fold / "iter_1" / "train_data")
    assert {s.ego_source for s in data0} == {"recorded_ego"} and {s.scene_id for s in data0} == {"scene-0655"}
    on = [s for s in data1 if s.ego_source == ON_POLICY]
    assert len(on) == 3 and len(data1) == len(data0) + 3
    assert {s.scene_id for s in data1} == {"scene-0655"}  # never a held-out scene
    logged_first = next(s for s in data0 if s.timestamp == 0.0 and not s.augmented)
    for s in on:
        assert s.augmented and s.source == "metadrive" and s.sample_id.startswith("scene-0655_it1_cl")
        assert s.annotation["teacher"] == "pdm-closed"
        np.testing.assert_allclose(np.asarray(s.annotation["waypoints"]), s.targets.ego_future[:, :2], atol=2e-3)
        assert s.targets.ego_future_mask.all() and not s.targets.agent_future_masks.any()  # the log's future is not read
    first = next(s for s in on if s.sample_id.endswith("cl0000"))  # the rollout starts at the logged pose
    assert not np.allclose(first.targets.ego_future, logged_first.targets.ego_future, atol=0.05)  # not the log's future
    # but it follows the same road: 3 s ahead within a few metres of where the human went
    assert abs(first.targets.ego_future[-1, 1] - logged_first.targets.ego_future[-1, 1]) < 2.0
    assert abs(first.targets.ego_future[-1, 0] - logged_first.targets.ego_future[-1, 0]) < 10.0


@pytest.mark.slow
@needs_data
def test_resume_after_a_kill_during_training_gives_the_same_result(tiny_loop):
    root, argv = tiny_loop
    fold = root / "out" / "fold_0"
    it = fold / "iter_1"
    before = {f: json.loads((it / f).read_text()) for f in ("closed_loop.json", "open_loop.json")}
    stamps = {p: p.stat().st_mtime_ns for p in (fold / "iter_0" / "done", it / "rollout" / "done", it / "labels" / "done")}
    # the state a kill during iteration 1's training leaves: a half-written checkpoint, no later artefact
    for f in ("done", "timing.json", "open_loop.json", "closed_loop.json", "training.json"):
        (it / f).unlink()
    (it / "checkpoint" / "eval_heldout.json").unlink()
    (it / "checkpoint" / "model.safetensors").write_bytes(b"truncated")
    shutil.rmtree(it / "train_data")
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # iteration 0, rollout and labels were not redone
    after = {f: json.loads((it / f).read_text()) for f in ("closed_loop.json", "open_loop.json")}
    for k in ("route_completion", "pdms", "at_fault_collisions", "ep"):
        assert after["closed_loop.json"]["aggregate"][k] == pytest.approx(before["closed_loop.json"]["aggregate"][k], abs=1e-9)
    l2 = lambda r: r["open_loop.json"]["metrics"]["ALL"]["stp3"]["L2"]["avg"]  # noqa: E731
    assert l2(after) == pytest.approx(l2(before), abs=1e-9)
    assert (it / "done").is_file()


@pytest.mark.slow
@needs_data
def test_three_iterations_on_one_real_training_scene(tmp_path, tiny_loop):
    """Three on-policy iterations (full-length rollouts of one scene, 20 training steps)."""
    root, _ = tiny_loop
    argv = ["--data", str(root / "data"), "--scenarios", str(root / "scenarios"), "--out", str(tmp_path / "out"), "--folds", "2",
            "--fold", "0", "--iterations", "3", *TINY[2:], "--max_steps", "20"]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert all(r["samples_added"] > 20 for r in rows[1:]) and rows[3]["on_policy_total"] == sum(r["samples_added"] for r in rows)


@pytest.mark.slow
@needs_data
def test_label_settings_relabel_and_the_expert_drives_with_beta_one(tmp_path, tiny_loop):
    """Default label settings reproduce the loop's labels exactly; the cautious ones (the logged
    speed band, 2 s / 2 m IDM) label slower plans; with beta0 = 1 PDM-Closed drives every step of
    iteration 1's rollouts (iteration 0 is reused)."""
    from dsdrive.data.dataset import load_samples

    root, _ = tiny_loop
    it1 = root / "out" / "fold_0" / "iter_1"
    before = {s.sample_id: s.targets.ego_future for s in load_samples(it1 / "labels" / "samples")}
    label_states(it1 / "rollout", tmp_path / "same", DaggerConfig())
    same = {s.sample_id: s.targets.ego_future for s in load_samples(tmp_path / "same" / "samples")}
    assert same.keys() == before.keys() and all(np.array_equal(same[k], before[k]) for k in before)
    cautious = DaggerConfig(label_speed="log", label_idm_headway=2.0, label_idm_s0=2.0)
    summary = label_states(it1 / "rollout", tmp_path / "cautious", cautious)
    assert summary["label_settings"] == {"idm_headway_s": 2.0, "idm_s0_m": 2.0, "speed": "log band x 1.1"}
    slow = {s.sample_id: s.targets.ego_future for s in load_samples(tmp_path / "cautious" / "samples")}
    assert slow.keys() == before.keys()
    dist = lambda d: np.mean([np.linalg.norm(d[k][-1, :2]) for k in sorted(d)])  # noqa: E731 - metres in 3 s
    assert dist(slow) < dist(before) - 1.0, (dist(slow), dist(before))  # scene-0655: the human drove ~10 m/s, not 13.9

    out = tmp_path / "mix"
    shutil.copytree(root / "out" / "fold_0" / "iter_0", out / "fold_0" / "iter_0")
    argv = ["--data", str(root / "data"), "--scenarios", str(root / "scenarios"), "--out", str(out), "--folds", "2", "--fold", "0",
            "--iterations", "1", "--rollout_max_steps", "15", "--beta0", "1.0", "--label_speed", "log", *TINY]
    assert main(argv) == 0
    roll = out / "fold_0" / "iter_1" / "rollout"
    s = json.loads((roll / "summary.json").read_text())
    assert s["beta"] == 1.0 and s["states"] == s["expert_driven_states"] == 3
    assert all(w["expert_drove"] for w in json.loads((roll / "world.json").read_text()).values())
    assert json.loads((out / "fold_0" / "fold.json").read_text())["config"]["beta0"] == 1.0


@pytest.mark.slow
@needs_data
def test_warm_start_fine_tunes_the_previous_iteration_and_repeats_on_policy_states(tmp_path, tiny_loop):
    """--warm_start: iteration 1 starts from iteration 0's checkpoint (its tokenizer and vocabulary)
    for warm_start_steps steps; --on_policy_repeat 2 puts each labelled state in twice."""
    from dsdrive.data.dataset import load_samples

    root, _ = tiny_loop
    out = tmp_path / "warm"
    shutil.copytree(root / "out" / "fold_0" / "iter_0", out / "fold_0" / "iter_0")
    argv = ["--data", str(root / "data"), "--scenarios", str(root / "scenarios"), "--out", str(out), "--folds", "2", "--fold", "0",
            "--iterations", "1", "--rollout_max_steps", "15", "--perturb_prob", "0.5", "--warm_start", "true",
            "--warm_start_steps", "1", "--on_policy_repeat", "2", *TINY]
    assert main(argv) == 0
    it0, it1 = out / "fold_0" / "iter_0", out / "fold_0" / "iter_1"
    training = json.loads((it1 / "training.json").read_text())
    assert training["init_from"] == str(it0 / "checkpoint") and training["on_policy_repeat"] == 2
    data = load_samples(it1 / "train_data")
    on = [s for s in data if s.ego_source == ON_POLICY]
    assert len(on) == 2 * training["on_policy_samples"] == 6 and len({s.sample_id for s in on}) == 6
    assert (it1 / "checkpoint" / "tokenizer.json").read_bytes() == (it0 / "checkpoint" / "tokenizer.json").read_bytes()
    from safetensors.torch import load_file

    anchors = lambda d: load_file(d / "checkpoint" / "model.safetensors")["anchors"]  # noqa: E731
    assert bool((anchors(it1) == anchors(it0)).all())  # the planning vocabulary came with the warm start
