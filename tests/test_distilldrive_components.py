"""DistillDrive components: rescoring, conditional VAE, KD terms, teacher cache, vocabularies, losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_distilldrive import synthetic_samples, tiny_teacher
from shapely.geometry import Polygon

from dsdrive.distilldrive.cvae import ConditionalVAE
from dsdrive.distilldrive.kd import PlanningKD
from dsdrive.distilldrive.losses import best_mode, classification_loss
from dsdrive.distilldrive.motion_vocabulary import MotionVocabulary
from dsdrive.distilldrive.rescoring import box_corners, boxes_overlap, collision_rescore
from dsdrive.distilldrive.state_optimization import DQNStateLoss
from dsdrive.distilldrive.teacher_cache import (
    TeacherCache,
    build_teacher_cache,
    teacher_outputs,
)
from dsdrive.data.types import AGENT_TYPES


def test_rescoring_demotes_the_colliding_mode():
    t = torch.arange(1, 7, dtype=torch.float32) * 2.0
    straight = torch.stack([t, torch.zeros(6)], -1)  # through the parked car
    swerve = torch.stack([t, torch.clamp(t - 2.0, min=0.0) * 0.8], -1)  # bends left around it
    ego = torch.stack([straight, swerve])[None]  # (1, 2, 6, 2)
    scores = torch.tensor([[2.0, 1.0]])
    agent_pos, agent_yaw = torch.tensor([[[8.0, 0.0]]]), torch.zeros(1, 1)
    size, still = torch.tensor([[[4.5, 1.9]]]), torch.zeros(1, 1, 12, 2)
    rescored, collides = collision_rescore(scores, ego, agent_pos, agent_yaw, size, still, torch.ones(1, 1, dtype=torch.bool))
    assert collides.tolist() == [[True, False]]
    assert int(rescored.argmax(-1)) == 1
    # the same car masked out -> nothing collides, the original order stays
    rescored, collides = collision_rescore(scores, ego, agent_pos, agent_yaw, size, still, torch.zeros(1, 1, dtype=torch.bool))
    assert not collides.any() and int(rescored.argmax(-1)) == 0


def test_boxes_overlap_matches_shapely():
    g = torch.Generator().manual_seed(0)
    n = 400
    centers = torch.rand(n, 2, 2, generator=g) * 8.0
    sizes = torch.rand(n, 2, 2, generator=g) * 4.0 + 0.3
    yaws = (torch.rand(n, 2, generator=g) - 0.5) * 6.28
    corners = box_corners(centers, sizes, yaws)
    ours = boxes_overlap(corners[:, 0], corners[:, 1])
    ref = [Polygon(c[0].tolist()).intersects(Polygon(c[1].tolist())) for c in corners]
    assert ours.tolist() == ref
    assert 0 < sum(ref) < n  # both outcomes exercised


def test_cvae_is_deterministic_under_seed_and_uses_prior_at_inference():
    torch.manual_seed(0)
    vae = ConditionalVAE(16, latent_dim=4, hidden_dim=8, num_layers=2, seed=7)
    feats, fut = torch.randn(2, 5, 16), torch.randn(2, 5, 6, 2).cumsum(-2)
    vae.eval()
    a, b = vae(feats)["features"], vae(feats, fut)["features"]
    torch.testing.assert_close(a, b)  # prior at inference: the future is ignored, the noise is seeded
    other = ConditionalVAE(16, latent_dim=4, hidden_dim=8, num_layers=2, seed=8)
    other.load_state_dict({k: v for k, v in vae.state_dict().items() if k != "inference_noise"}, strict=False)
    assert not torch.allclose(other.eval()(feats)["features"], a)
    vae.train()
    torch.manual_seed(1)
    out1 = vae(feats, fut)
    torch.manual_seed(1)
    out2 = vae(feats, fut + 3.0)
    assert not torch.allclose(out1["features"], out2["features"])  # posterior at train time reads the future
    assert out1["kl"] > 0


def test_cvae_kl_matches_torch_distributions():
    torch.manual_seed(0)
    vae = ConditionalVAE(8, latent_dim=3, hidden_dim=4, num_layers=1).train()
    feats, fut = torch.randn(1, 4, 8), torch.randn(1, 4, 6, 2)
    valid = torch.tensor([[True, False, True, True]])
    kl = vae(feats, fut, valid)["kl"]
    mu_p, ls_p = vae._split(vae.prior(feats))
    from dsdrive.distilldrive.losses import cumulative_to_offsets

    mu_q, ls_q = vae._split(vae.posterior(cumulative_to_offsets(fut).flatten(-2)))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu_q, ls_q.exp()), torch.distributions.Normal(mu_p, ls_p.exp())).sum(-1)
    torch.testing.assert_close(kl, ref[valid].mean())


def test_cached_teacher_outputs_equal_online(tmp_path):
    samples = synthetic_samples(7)
    model = tiny_teacher(samples, use_cvae=True).eval()
    cache = build_teacher_cache(model, samples, tmp_path / "cache", batch_size=3, shard_size=4)
    assert len(cache) == 7 and json.loads((tmp_path / "cache" / "index.json").read_text())["num_samples"] == 7
    order = [samples[i].sample_id for i in (6, 0, 3)]
    cached = TeacherCache(tmp_path / "cache").get(order)
    online = teacher_outputs(model, [samples[i] for i in (6, 0, 3)])
    for key in online:
        torch.testing.assert_close(cached[key], online[key], atol=1e-5, rtol=1e-5)
    mtime = (tmp_path / "cache" / "shard_00000.safetensors").stat().st_mtime_ns
    build_teacher_cache(model, samples, tmp_path / "cache", batch_size=3, shard_size=4)  # resume: nothing rewritten
    assert (tmp_path / "cache" / "shard_00000.safetensors").stat().st_mtime_ns == mtime
    other = tiny_teacher(samples)
    with pytest.raises(ValueError, match="another teacher"):
        build_teacher_cache(other, samples, tmp_path / "cache", shard_size=4)
    with pytest.raises(KeyError, match="not-a-sample"):
        cache.get(["not-a-sample"])


def test_planning_kd_terms():
    torch.manual_seed(0)
    kd = PlanningKD(student_dim=8, teacher_dim=12, feature_weight=0.5, mode_kl_weight=1.0, regression_weight=1.0)
    sq, tq = torch.randn(3, 18, 8), torch.randn(3, 18, 12)
    logits = torch.randn(3, 18)
    wp = torch.randn(3, 18, 6, 2)
    out = kd(sq, tq, logits, logits.clone(), wp, wp.clone())
    assert out["mode_kl"].abs() < 1e-6 and out["regression"] == 0 and out["feature"] > 0
    torch.testing.assert_close(out["total"], out["feature"] + out["mode_kl"] + out["regression"])
    out = kd(sq, tq, logits, torch.randn(3, 18), wp, wp + 1.0)
    assert out["mode_kl"] > 0 and torch.isclose(out["regression"], torch.tensor(1.0))
    feature_only = PlanningKD(student_dim=8, teacher_dim=12)
    opt = torch.optim.Adam(feature_only.parameters(), lr=0.05)
    first = None
    for _ in range(50):
        loss = feature_only(sq, tq)["feature"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad(); loss.backward(); opt.step()
    assert float(loss.detach()) < first
    with pytest.raises(ValueError, match="student_logits"):
        kd(sq, tq)
    assert PlanningKD(8, 12)(sq, tq)["mode_kl"] == 0  # published default: KL off


def test_motion_vocabulary_shape_frame_and_seed(tmp_path):
    samples = synthetic_samples(20)
    voc = MotionVocabulary.fit(samples, seed=0)
    assert voc.anchors.shape == (len(AGENT_TYPES), 6, 12, 2)
    np.testing.assert_array_equal(voc.anchors, MotionVocabulary.fit(samples, seed=0).anchors)
    vehicle = voc.anchors[AGENT_TYPES.index("VEHICLE")]
    assert vehicle[:, -1, 0].max() > 5.0  # agent frame: motion along the agent's own +x
    assert np.abs(voc.anchors[AGENT_TYPES.index("TRAFFIC_CONE")]).max() == 0  # absent class: static
    np.testing.assert_array_equal(MotionVocabulary.load(voc.save(tmp_path)).anchors, voc.anchors)


def test_best_mode_and_soft_target():
    gt = torch.stack([torch.arange(1, 7.0), torch.zeros(6)], -1)[None]
    modes = torch.stack([gt[0] + 3.0, gt[0] + 0.1, gt[0] + 1.0, gt[0] + 2.0])[None]
    best, dist = best_mode(modes, gt, torch.ones(1, 6, dtype=torch.bool))
    assert int(best) == 1 and torch.allclose(dist[0, 1], torch.tensor(0.1 * 2 ** 0.5))
    # the soft target puts 0.9 / 0.05 / 0.05 on modes 1, 2, 3: logits proportional to log target -> KL ~ 0
    logits = torch.log(torch.tensor([[1e-6, 0.9, 0.05, 0.05]]))
    kl = classification_loss(logits, dist, best, torch.ones(1, dtype=torch.bool), "distribution")
    assert kl < 1e-4
    with pytest.raises(ValueError, match="variant"):
        classification_loss(logits, dist, best, torch.ones(1, dtype=torch.bool), "nope")


def test_dqn_loss_masks_samples_without_can_bus():
    dqn = DQNStateLoss()
    b = 4
    status, mask = torch.randn(b, 10), torch.zeros(b, 10, dtype=torch.bool)
    plan, gt = torch.randn(b, 6, 2), torch.randn(b, 6, 2)
    cmd, gmask = torch.tensor([0, 1, 2, 2]), torch.ones(b, 6, dtype=torch.bool)
    assert dqn(status, status, mask, cmd, plan, gt, gmask)["dqn"] == 0
    mask[:, 6] = True
    out = dqn(status.requires_grad_(), status.detach(), mask, cmd, plan, gt, gmask)
    out["dqn"].backward()
    assert out["dqn"] > 0 and status.grad.abs().sum() > 0 and dqn.reward_weights.grad is not None
    assert dqn.q_target[0].weight.grad is not None


def test_dqn_loss_decreases_when_optimising_the_state():
    torch.manual_seed(0)
    dqn = DQNStateLoss()
    b = 16
    gt_status = torch.randn(b, 10)
    pred_status = (gt_status + torch.randn(b, 10)).requires_grad_()
    mask = torch.ones(b, 10, dtype=torch.bool)
    plan, gt = torch.randn(b, 6, 2), torch.randn(b, 6, 2)
    cmd, gmask = torch.randint(0, 3, (b,)), torch.ones(b, 6, dtype=torch.bool)
    opt = torch.optim.Adam([*dqn.parameters(), pred_status], lr=1e-2)
    losses = []
    for _ in range(150):
        loss = dqn(pred_status, gt_status, mask, cmd, plan, gt, gmask)["dqn"]
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
