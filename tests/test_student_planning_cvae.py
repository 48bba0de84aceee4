"""DistillDrive's conditional VAE op placed in the student (``StudentConfig.planning_cvae``, issue 10
goal 7): the KL term is in the loss with its weight; training reads the ground-truth future through
the posterior, inference never does; plans are deterministic, batch-independent and survive a save;
the recipe wires the flag, the weight, LoRA's trained modules and the warm-start check."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers_student import make_samples, one_thread, tiny_student  # noqa: F401
from transformers import AutoModel

from dsdrive.student.lora import FULL_TRAIN_MODULES
from dsdrive.training.distill_config import DistillConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cvae_student():
    return tiny_student(planning_cvae=True, loss_weights={"cvae_kl": 0.7})


def test_kl_term_in_the_loss_with_its_weight(cvae_student):
    model, proc = cvae_student
    model.train()
    torch.manual_seed(0)
    out = model(**proc(make_samples(6)))
    kl = out.cvae_kl
    assert kl is not None and kl.ndim == 0 and math.isfinite(float(kl.detach())) and float(kl.detach()) >= 0
    w = model.config.loss_weights
    assert w["cvae_kl"] == 0.7
    expected = sum(w[k] * getattr(out, k) for k in w if getattr(out, k) is not None)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    grads = [p.grad for n, p in model.planning_cvae.named_parameters() if n.startswith(("prior", "posterior"))]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)  # both encoders learn from the KL
    model.zero_grad()


def test_training_reads_the_future_inference_does_not(cvae_student):
    model, proc = cvae_student
    samples = make_samples(4)
    batch = proc(samples)
    moved = {**batch, "ego_future": batch["ego_future"] + torch.tensor([0.0, 3.0, 0.0])}
    model.train()
    outs = []
    for b in (batch, moved):
        torch.manual_seed(1)  # same posterior noise: only the future differs
        outs.append(model(**b).query_states.detach())
    assert not torch.allclose(outs[0], outs[1])  # the posterior reads the ground-truth future
    model.eval()
    with torch.no_grad():
        a, b = model(**batch), model(**moved)
    torch.testing.assert_close(a.query_states, b.query_states, rtol=0, atol=0)  # the prior only
    assert a.cvae_kl is None
    p1, p2 = model.plan(batch), model.plan(batch)
    torch.testing.assert_close(p1.waypoints, p2.waypoints, rtol=0, atol=0)
    torch.testing.assert_close(a.waypoints, model(**batch).waypoints, rtol=1e-5, atol=1e-5)
    single = model.plan(proc(samples[1:2]))
    torch.testing.assert_close(single.waypoints[0], p1.waypoints[1], rtol=1e-4, atol=1e-4)


def test_op_changes_the_plan_and_survives_a_save(cvae_student, tmp_path):
    model, proc = cvae_student
    model.eval()
    batch = proc(make_samples(3))
    plain, _ = tiny_student()
    plain.eval()
    assert plain.planning_cvae is None and not any(k.startswith("planning_cvae") for k in plain.state_dict())
    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert loaded.config.planning_cvae and loaded.planning_cvae is not None
    torch.testing.assert_close(loaded.plan(batch).waypoints, model.plan(batch).waypoints, rtol=0, atol=0)
    no_op = copy.deepcopy(model)  # the op's residual moves the query states the heads read
    with torch.no_grad():
        no_op.planning_cvae.out[-1].weight.zero_()
        no_op.planning_cvae.out[-1].bias.zero_()
        assert not torch.allclose(model(**batch).query_states, no_op(**batch).query_states)


def test_incomplete_futures_give_no_kl(cvae_student):
    model, proc = cvae_student
    batch = proc(make_samples(3))
    batch["ego_future_mask"][:, -1] = False  # no sample has all 6 steps: prior everywhere, KL 0
    model.train()
    out = model(**batch)
    assert float(out.cvae_kl) == 0.0 and math.isfinite(float(out.loss))


def test_recipe_wires_the_op(tmp_path):
    cfg = DistillConfig(output_dir=str(tmp_path), planning_cvae=True, cvae_kl_weight=0.3)
    kw = cfg.student_config_kwargs()
    assert kw["planning_cvae"] is True and kw["loss_weights"]["cvae_kl"] == 0.3
    assert DistillConfig(output_dir=str(tmp_path)).student_config_kwargs()["planning_cvae"] is False
    with pytest.raises(ValueError, match="cvae_kl_weight"):
        DistillConfig(output_dir=str(tmp_path), planning_cvae=True, cvae_kl_weight=-1.0)
    zero = dict(waypoint_l1_weight=0.0, mode_ce_weight=0.0, reasoning_ce_weight=0.0, risk_l1_weight=0.0, meta_action_ce_weight=0.0)
    with pytest.raises(ValueError, match="sum to 0"):  # the KL alone counts only when the op exists
        DistillConfig(output_dir=str(tmp_path), **zero)
    assert "planning_cvae" in FULL_TRAIN_MODULES
