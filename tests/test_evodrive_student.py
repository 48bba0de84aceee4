"""EvoDriveVLA's hidden-state KD on the dual-head student's planning queries (dsdrive.training.query_hidden_kd):
weight 0 is the baseline loss exactly and loads nothing; the term is SmoothL1 between the student's and a
frozen same-shape teacher's query states, zero against a copy of itself; bad settings name the field."""

from __future__ import annotations

import pytest
import torch
from helpers_student import make_samples, one_thread, tiny_student  # noqa: F401

from dsdrive.training.distill_config import DistillConfig
from dsdrive.training.distill_trainer import DistillTrainer
from dsdrive.training.query_hidden_kd import query_hidden_kd

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(proc, n=3):
    samples = [s for s in make_samples(6) if s.annotation][:n]
    return proc.collate([proc.encode_sample(s) for s in samples])


def test_query_hidden_kd_is_off_at_weight_zero_and_smooth_l1_against_a_teacher(tmp_path):
    model, proc = tiny_student()
    batch = _batch(proc)
    model.eval()
    base = model(**batch).loss.item()
    common = dict(output_dir=str(tmp_path / "run"), report_to=[], use_cpu=True, max_steps=1)
    t0 = DistillTrainer(model=model, args=DistillConfig(**common), data_collator=proc.collate)
    assert DistillTrainer.compute_loss(t0, model, dict(batch)).item() == base
    assert getattr(t0, "_query_kd_teacher", None) is None  # nothing loaded at weight 0
    # a copy of the student as teacher: the term is 0 and the loss the baseline's
    model.save_pretrained(tmp_path / "same")
    t1 = DistillTrainer(model=model, args=DistillConfig(**common, query_hidden_kd_weight=0.2, query_hidden_kd_teacher=str(tmp_path / "same")),
                        data_collator=proc.collate)
    assert DistillTrainer.compute_loss(t1, model, dict(batch)).item() == pytest.approx(base, abs=1e-6)
    assert t1._terms["eval"]["query_hidden_kd"] == [pytest.approx(0.0, abs=1e-10)]
    # another teacher (other weights, same shape): + 0.2 * SmoothL1 of the query states
    other, _ = tiny_student()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    other.save_pretrained(tmp_path / "other")
    t2 = DistillTrainer(model=model, args=DistillConfig(**common, query_hidden_kd_weight=0.2, query_hidden_kd_teacher=str(tmp_path / "other")),
                        data_collator=proc.collate)
    loss = DistillTrainer.compute_loss(t2, model, dict(batch))
    with torch.no_grad():
        ref = torch.nn.functional.smooth_l1_loss(model(**batch).query_states, t2._query_kd_teacher(**batch).query_states)
    assert float(ref) > 0 and loss.item() == pytest.approx(base + 0.2 * float(ref), rel=1e-5)
    model.zero_grad()
    model.train()
    DistillTrainer.compute_loss(t2, model, dict(batch)).backward()
    assert model.planning_queries.embed.grad.abs().sum() > 0
    assert all(p.grad is None for p in t2._query_kd_teacher.parameters())  # the teacher is frozen


def test_query_hidden_kd_shapes_and_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"student query_states \(1, 18, 32\) vs teacher \(1, 18, 16\)"):
        query_hidden_kd(torch.zeros(1, 18, 32), torch.zeros(1, 18, 16))
    common = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=1)
    with pytest.raises(ValueError, match="DistillConfig: query_hidden_kd_weight=-0.2"):
        DistillConfig(**common, query_hidden_kd_weight=-0.2)
    with pytest.raises(ValueError, match="DistillConfig: query_hidden_kd_teacher=None must be a student checkpoint folder"):
        DistillConfig(**common, query_hidden_kd_weight=0.2)
