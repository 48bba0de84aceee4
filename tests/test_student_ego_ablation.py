"""The ego-status ablation switch of the student (``StudentConfig.use_ego_status``; AD-MLP, Zhai et al.
2023; Li et al., CVPR 2024): on, the student is what it was before the switch existed (outputs
compared with a reference written by the pre-switch code); off, the plan does not depend on the ego
status or history at all (features, model and prompt).

The reference ``artifacts/student_ego_reference.safetensors`` was written by running this file as a script
(``python tests/test_student_ego_ablation.py``) against a copy of the package without the switch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from helpers_student import make_inputs, one_thread, tiny_student  # noqa: F401

from dsdrive.student import StudentConfig, StudentModel
from dsdrive.student.backbone import tiny_qwen2_config

REFERENCE = Path(__file__).parent / "artifacts" / "student_ego_reference.safetensors"
OUTPUT_KEYS = ("waypoints", "mode_logits", "risk_map", "meta_action_logits", "query_states")


def reference_case(**config_kw) -> tuple[StudentModel, dict]:
    """A seeded tiny student (no tokenizer: vocabulary of 64 ids) and a seeded batch of 2 samples
    (ego frame, metres; shapes of :mod:`dsdrive.student.processing_student`)."""
    bb = tiny_qwen2_config(64, hidden_size=32, layers=2, heads=4, kv_heads=2, pad_token_id=0, eos_token_id=1)
    cfg = StudentConfig(backbone_config=bb.to_dict(), scene_dim=16, scene_layers=1, scene_heads=2, max_agents=4, max_map=3,
                        bev_height=16, bev_width=16, risk_heads=2, risk_points=2, waypoint_cv_gate_init=0.5, **config_kw)
    torch.manual_seed(0)
    model = StudentModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    b, n, m, p = 2, 4, 3, 7
    agents = torch.cat([torch.rand(b, n, 2, generator=g) * 40 - 10, torch.rand(b, n, 1, generator=g),
                        torch.rand(b, n, 3, generator=g) * 4 + 0.5, torch.rand(b, n, 1, generator=g) * 6 - 3,
                        torch.rand(b, n, 2, generator=g) * 10 - 5], -1)
    ego = torch.cat([torch.tensor([[6.0, 0.2, 0.5, 0.0, 0.05, 0.0], [11.0, -0.1, -1.0, 0.1, -0.02, 0.0]]), torch.ones(b, 5), torch.zeros(b, 1),
                     torch.tensor([[-12.0, 0, 0, -9, 0, 0, -6, 0, 0, -3, 0, 0], [-22, 0.5, 0.05, -16.5, 0.3, 0.04, -11, 0.2, 0.02, -5.5, 0.1, 0.01]]),
                     torch.ones(b, 4)], 1)
    batch = {"agents": agents, "agent_types": torch.randint(0, cfg.num_agent_types, (b, n), generator=g),
             "agents_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool),
             "map_points": torch.rand(b, m, 20, 2, generator=g) * 60 - 20, "map_types": torch.randint(0, cfg.num_map_types, (b, m), generator=g),
             "map_mask": torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool), "ego": ego, "command": torch.tensor([2, 0]),
             "prompt_ids": torch.randint(2, 64, (b, p), generator=g), "prompt_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2], dtype=torch.bool)}
    return model, batch


def outputs(model: StudentModel, batch: dict) -> dict[str, torch.Tensor]:
    """Training-forward outputs and the plan (waypoints (B, 6, 3), mode scores) of one batch."""
    with torch.no_grad():
        out = model(**batch)
        plan = model.plan(batch)
    res = {k: getattr(out, k) for k in OUTPUT_KEYS}
    res["plan_waypoints"], res["plan_mode_scores"] = plan.waypoints, plan.mode_scores
    return res


def test_switch_on_matches_the_pre_switch_reference(one_thread):  # noqa: F811
    """Default and explicit ``use_ego_status=True`` reproduce what the student computed before the
    switch existed: exactly on the CPU kernel set the reference was written with, else to 1e-5."""
    from safetensors import safe_open

    with safe_open(str(REFERENCE), "pt") as f:
        meta, expected = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    exact = meta["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and meta["torch"] == str(torch.__version__)
    for kw in ({}, {"use_ego_status": True}):
        model, batch = reference_case(**kw)
        got = outputs(model, batch)
        for k, v in got.items():
            torch.testing.assert_close(v, expected[k], rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5, msg=lambda m, k=k: f"{k}: {m}")


def _with_other_ego(batch: dict) -> dict:
    ego = batch["ego"].clone()
    ego[:, :6] = torch.tensor([[0.0, 0.0, -2.0, 0.0, 0.0, 0.0], [25.0, 1.0, 2.0, 0.5, 0.3, 0.1]])  # status
    ego[:, 12:24] = torch.linspace(-30, 3, 12)  # history
    ego[0, 6:12] = 0.0  # and its masks
    return {**batch, "ego": ego}


def test_switch_off_plan_ignores_ego_status_and_history_at_the_model(one_thread):  # noqa: F811
    """Tensor level: another ego vector (status, history, masks) changes nothing with the switch off,
    and does change the plan with it on (so this check can fail)."""
    model, batch = reference_case(use_ego_status=False)
    a, b = outputs(model, batch), outputs(model, _with_other_ego(batch))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    on, batch_on = reference_case()
    assert not torch.equal(outputs(on, batch_on)["plan_waypoints"], outputs(on, _with_other_ego(batch_on))["plan_waypoints"])


def test_switch_off_processor_masks_ego_in_features_and_prompt(one_thread):  # noqa: F811
    """Through the processor (features + prompt text) and the model, two inputs differing only in
    ego status and history give the same plan; the prompt states neither speed nor history."""
    model, proc = tiny_student(use_ego_status=False)
    slow = make_inputs("a", speed=3.0)
    fast = dataclasses.replace(slow, ego_status=np.array([14.0, 0.5, 1.5, 0.2, 0.1, 0.0], np.float32),
                               ego_history=make_inputs("a", speed=14.0).ego_history, ego_history_mask=np.array([0, 1, 1, 1], bool))
    assert not np.array_equal(slow.ego_status, fast.ego_status) and not np.array_equal(slow.ego_history, fast.ego_history)
    b1, b2 = proc([slow]), proc([fast])
    for k in b1:
        assert torch.equal(b1[k], b2[k]), k
    assert not b1["ego"].any(), "the ego vector must be all zero (values and masks) under the ablation"
    prompt = proc.prompt_fn(__import__("dsdrive.student.processing_student", fromlist=["x"]).without_ego_status(fast))
    assert "speed unknown" in prompt and "14" not in prompt and "n/a" in prompt
    model.eval()
    assert torch.equal(model.plan(b1).waypoints, model.plan(b2).waypoints)
    on_model, on_proc = tiny_student()
    assert not torch.equal(on_proc([slow])["ego"], on_proc([fast])["ego"])
    assert not torch.equal(on_model.eval().plan(on_proc([slow])).waypoints, on_model.plan(on_proc([fast])).waypoints)


def test_switch_reaches_the_student_from_the_distill_command_line(tmp_path):
    """``--use_ego_status false`` (trl parser, as ``dsdrive distill`` reads it) sets the student
    config, and the value survives save / load (an old config.json without it loads as True)."""
    import json

    from dsdrive.training.distill import parse_args

    _, args = parse_args(["--output_dir", str(tmp_path / "o"), "--use_ego_status", "false", "--use_cpu", "true", "--report_to", "none"])
    assert args.use_ego_status is False and args.student_config_kwargs()["use_ego_status"] is False
    _, default = parse_args(["--output_dir", str(tmp_path / "o"), "--use_cpu", "true", "--report_to", "none"])
    assert default.student_config_kwargs()["use_ego_status"] is True
    cfg = StudentConfig(**args.student_config_kwargs())
    cfg.save_pretrained(tmp_path / "c")
    assert StudentConfig.from_pretrained(tmp_path / "c").use_ego_status is False
    raw = json.loads((tmp_path / "c" / "config.json").read_text())
    raw.pop("use_ego_status")
    (tmp_path / "c" / "config.json").write_text(json.dumps(raw))
    assert StudentConfig.from_pretrained(tmp_path / "c").use_ego_status is True


if __name__ == "__main__":  # write the reference (run against the package WITHOUT the switch)
    torch.set_num_threads(1)
    model, batch = reference_case()
    REFERENCE.parent.mkdir(exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in outputs(model, batch).items()}, str(REFERENCE),
              metadata={"torch": str(torch.__version__), "cpu_capability": torch.backends.cpu.get_cpu_capability()})
    print(f"wrote {REFERENCE}")
