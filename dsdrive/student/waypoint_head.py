"""Waypoint head of the student: planning-query hidden states -> multi-mode waypoints on a vocabulary.

DSDrive (arXiv 2505.05360) regresses waypoints from the LLM's hidden states (f_wp, L1) beside the
reasoning text head; DistillDrive (arXiv 2508.05402) anchors 3 commands x 6 modes of planning
queries on a k-means planning vocabulary (3, 6, 6, 2), selects the 6 modes of the ground-truth
command, regresses the best mode (min mean L2 to the ground truth) and classifies it. This head
does both: each of the 18 query tokens gives 6 (x, y) offsets added to its anchor and one mode
logit. Waypoints are cumulative positions in the ego frame of the current time (x forward,
y left, metres) at +0.5 ... +3.0 s.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dsdrive.constants import FUTURE_STEPS, STEP_SECONDS
from dsdrive.layers import ctrv_arc, trajectory_yaw_tensor

EGO_KINEMATIC_FEATURES = 10
"""Ego kinematics fed straight to the waypoint head (:func:`ego_kinematics`): vx, vy (m/s / 10),
ax, ay (m/s^2 / 3), yaw rate (rad/s / 0.5), steering (rad), and the 4 masks of vx, vy, ax, ay."""
STATUS_SCALE = (10.0, 10.0, 3.0, 3.0, 0.5, 1.0)
"""Divisors of :data:`dsdrive.data.types.EGO_STATUS_FIELDS` bringing each to O(1)."""


def constant_velocity_rollout(ego: torch.Tensor, future_steps: int = FUTURE_STEPS, dt: float = STEP_SECONDS) -> torch.Tensor:
    """Constant-velocity rollout of the ego's CURRENT velocity (no future input): (B, 28) ego vector
    (:data:`dsdrive.student.scene_encoder.EGO_FEATURES` layout, vx, vy first, their masks at 6, 7)
    -> (B, T, 2) cumulative x, y (metres, ego frame) at +dt ... +T*dt s; 0 where vx/vy is missing.
    The standard open-loop CV baseline (AD-MLP, arXiv 2305.10430)."""
    v = ego[:, :2] * ego[:, 6:8]
    t = torch.arange(1, future_steps + 1, device=ego.device, dtype=ego.dtype) * dt
    return v[:, None, :] * t[None, :, None]


WAYPOINT_PRIORS = ("cv_gate", "kinematic", "kinematic_idm", "idm_modes")
"""Values of ``StudentConfig.waypoint_prior`` (see :class:`WaypointHead`)."""
BLENDED_PRIORS = {"kinematic": 3, "kinematic_idm": 4}
"""Priors blended per ``waypoint_prior`` value: constant velocity, CTRV, lane following (``kinematic_idm``:
+ the lane IDM, :func:`dsdrive.student.lane_prior.lane_idm_prior`)."""
KINEMATIC_PRIORS = tuple(BLENDED_PRIORS)
"""The ``waypoint_prior`` values that blend kinematic priors (a residual over them)."""
PROPOSAL_SCALE_M = 10.0
"""Divisor (m) of the lane-IDM proposals read by the ``idm_modes`` mode classifier."""
EGO_TREND_FEATURES = 12
"""Speed trend of the ``kinematic`` head (:func:`ego_trend`): the 4 finite-difference velocities
between consecutive history poses and the origin (vx, vy m/s / 10, ego frame) and their 4 masks."""


def ctrv_rollout(ego: torch.Tensor, future_steps: int = FUTURE_STEPS, dt: float = STEP_SECONDS) -> torch.Tensor:
    """Constant turn rate and velocity rollout of the ego's CURRENT state: (B, 28) ego vector -> (B, T, 2)
    cumulative x, y (m, ego frame) at +dt ... +T*dt s.

    Speed |v| from the measured vx, vy (0 where masked out) held on the circular arc of
    :class:`dsdrive.planners.constant_velocity.ConstantTurnRatePlanner`, starting along the direction
    of travel; the yaw rate is the measured one (status slot 4, mask slot 10), else the last history
    heading change ``-heading(-0.5 s) / 0.5 s`` (history slot 23, mask 27), else 0 (= constant velocity).
    """
    v = ego[:, :2] * ego[:, 6:8]
    t = torch.arange(1, future_steps + 1, device=ego.device, dtype=ego.dtype) * dt
    zero = torch.zeros_like(v[:, 0])
    w = torch.where(ego[:, 10] > 0.5, ego[:, 4], torch.where(ego[:, 27] > 0.5, -ego[:, 23] / dt, zero))
    return ctrv_arc(v, w, t)


def ego_trend(ego: torch.Tensor, dt: float = STEP_SECONDS) -> torch.Tensor:
    """(B, 28) ego vector -> (B, :data:`EGO_TREND_FEATURES`) speed trend from the history poses
    (-2.0 ... -0.5 s, ego frame) and the origin: velocity over each 0.5 s interval (m/s / 10; 0 where
    an end pose is missing) and its validity."""
    hist, hmask = ego[:, 12:24].reshape(-1, 4, 3)[..., :2], ego[:, 24:28]
    pts = torch.cat([hist, hist.new_zeros(hist.shape[0], 1, 2)], 1)
    ok = torch.cat([hmask, hmask.new_ones(hmask.shape[0], 1)], 1)
    valid = ok[:, 1:] * ok[:, :-1]
    vel = (pts[:, 1:] - pts[:, :-1]) / dt * valid[..., None] / 10.0
    return torch.cat([vel.flatten(1), valid], -1)


def ego_kinematics(ego: torch.Tensor) -> torch.Tensor:
    """(B, 28) ego vector -> (B, 10) normalised kinematics (:data:`EGO_KINEMATIC_FEATURES`)."""
    status = ego[:, :6] * ego[:, 6:12] / ego.new_tensor(STATUS_SCALE)
    return torch.cat([status, ego[:, 6:10]], -1)


class WaypointHead(nn.Module):
    """(B, K*M, H) query hidden states (+ ego kinematics) -> waypoints (B, K, M, T, 2), logits (B, K, M).

    Each mode's plan is its anchor pulled towards the ego's constant-velocity rollout and then
    refined: ``w = a + g * (cv - a) + s * reg(h)`` with a per-(mode, step, axis) gate
    ``g = sigmoid(gate)`` (learned, initialised at ``gate_init``) and offsets scaled by
    ``offset_scale`` metres, so the current velocity, the strongest open-loop cue (AD-MLP,
    arXiv 2305.10430), is expressible from step 0 while the k-means anchors (DistillDrive) keep the
    modes apart. The mode logits see the query state, the ego kinematics and the anchor's L2 to
    the CV rollout (a learned-temperature prior favouring the mode consistent with the current
    speed). Without ``ego`` the gate and the kinematic terms are off (plain anchor + offset).

    ``prior="kinematic"`` replaces the anchor/gate base by a residual over kinematic priors:
    ``w = sum_p softmax_p(blend[k])[p] * prior_p + s * reg(h)``, priors p = constant velocity, CTRV
    (:func:`ctrv_rollout`) and lane following (``lane_prior``, :mod:`dsdrive.student.lane_prior`;
    the CTRV rollout where none is given), the blend a learned (K, 3, T, 2) table starting uniform,
    ``reg`` and the mode classifier zero-initialised: the untrained head plans the mean of the three
    priors for every mode, and training adds only what the data supports (AD-MLP's "prior + learned
    correction", Zhai et al., arXiv 2305.10430). The ego projection also reads the speed trend
    (:func:`ego_trend`). Without ``ego`` (the ego-status ablation) it is anchor + offset, as above.
    ``prior="kinematic_idm"`` blends a fourth prior, PDM-Closed's IDM along the command's lane
    (``idm_prior``, :func:`dsdrive.student.lane_prior.lane_idm_prior`: it brakes for leaders and
    bends and pulls away from a stop; the lane prior where none is given), so the blend starts at
    a quarter each.

    ``prior="idm_modes"`` makes the modes PDM-Closed's speed proposals built from the planning inputs
    (Dauner et al., CoRL 2023; :func:`dsdrive.student.lane_prior.lane_idm_proposals`): mode m is the
    lane IDM towards target speed m (batch key ``idm_prior`` of shape (B, M, T, 2); 0 = the stop
    proposal) plus a zero-initialised residual, ``w[k, m] = idm[m] + s * reg(h[k, m])``, and each
    mode's query also reads its own proposal (``proposal_proj``), so the classifier scores
    proposals that differ in speed, braking for leaders and bends by construction: the learned
    scorer over a proposal set of PDM-Hybrid / Hydra-MDP, with a proposal set that reads the scene.
    The lateral path is the command's lane at every mode; the learning is the choice of speed and
    a small correction. Without ``ego`` it is anchor + offset.

    Args:
        hidden_size: H, the backbone hidden size.
        num_commands, num_modes, future_steps: K, M, T (3, 6, 6).
        offset_scale: metres per unit of the regression output.
        gate_init: initial gate in (0, 1); 0 disables the CV pull (parameters still exist).
        prior: one of :data:`WAYPOINT_PRIORS`; ``cv_gate`` (default) is the head described first.

    Raises:
        ValueError: an unknown ``prior``.
    """

    def __init__(self, hidden_size: int, num_commands: int, num_modes: int, future_steps: int, offset_scale: float = 1.0,
                 gate_init: float = 0.5, prior: str = "cv_gate"):
        super().__init__()
        if prior not in WAYPOINT_PRIORS:
            raise ValueError(f"WaypointHead: prior {prior!r}, expected one of {WAYPOINT_PRIORS}")
        self.k, self.m, self.t = num_commands, num_modes, future_steps
        self.prior = prior
        self.offset_scale = float(offset_scale)
        self.norm = nn.LayerNorm(hidden_size)
        kinematic = prior in KINEMATIC_PRIORS
        residual = kinematic or prior == "idm_modes"  # a zero-initialised residual over a base read from the inputs
        self.ego_proj = nn.Linear(EGO_KINEMATIC_FEATURES + (EGO_TREND_FEATURES if residual else 0), hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU())
        self.reg = nn.Linear(hidden_size, future_steps * 2)
        self.cls = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.reg.weight, std=0.01)  # start near the anchors
        nn.init.zeros_(self.reg.bias)
        g = min(max(float(gate_init), 1e-4), 1 - 1e-4)
        self.gate = nn.Parameter(torch.full((num_commands * num_modes, future_steps, 2), math.log(g / (1 - g))))
        self.gate_enabled = gate_init > 0
        self.prior_temp = nn.Parameter(torch.tensor(0.0))  # logit bias = -exp(temp) * mean L2(anchor, cv)
        if residual:  # untrained head = its base (the uniform blend of the priors, or the proposals), modes scored alike
            nn.init.zeros_(self.reg.weight)
            nn.init.zeros_(self.cls.weight)
            nn.init.zeros_(self.cls.bias)
        if kinematic:
            self.prior_blend = nn.Parameter(torch.zeros(num_commands, BLENDED_PRIORS[prior], future_steps, 2))
        if prior == "idm_modes":
            self.proposal_proj = nn.Linear(future_steps * 2, hidden_size)

    @torch.no_grad()
    def fit_prior_blend(self, ego: torch.Tensor, command: torch.Tensor, future: torch.Tensor, future_mask: torch.Tensor,
                        lane_prior: torch.Tensor | None = None, steps: int = 300, lr: float = 0.05,
                        idm_prior: torch.Tensor | None = None) -> dict:
        """Fit the ``kinematic`` head's blend table to training samples before training, as the planning
        vocabulary is fitted (DistillDrive's k-means): full-batch Adam on the mean L2 (m) of the blended
        prior against the ground-truth future over valid steps, from a uniform blend; deterministic.

        Args:
            ego (N, 28) ego vectors; command (N,) long; future (N, T, 2+) metres ego frame; future_mask
            (N, T) bool; lane_prior, idm_prior (N, T, 2) or None; steps, lr: the optimisation.

        Returns:
            ``{"l2_uniform": m, "l2_fitted": m, "weights": (K, P) mean weight per command and prior}``.

        Raises:
            ValueError: the head is not a kinematic one (:data:`KINEMATIC_PRIORS`), or no sample has a valid step.
        """
        if self.prior not in KINEMATIC_PRIORS:
            raise ValueError(f"WaypointHead.fit_prior_blend: prior is {self.prior!r}, not one of {KINEMATIC_PRIORS}")
        w = future_mask.to(ego.dtype)
        if float(w.sum()) == 0:
            raise ValueError("WaypointHead.fit_prior_blend: no training sample has a valid future step")
        priors = self._priors(ego, lane_prior, idm_prior)
        gt = future[..., :2].to(ego.dtype)
        logits = torch.zeros_like(self.prior_blend, dtype=ego.dtype)
        def loss_of(lg):
            base = (torch.softmax(lg, 1)[command] * priors).sum(1)  # (N, T, 2)
            return ((base - gt).norm(dim=-1) * w).sum() / w.sum()
        uniform = float(loss_of(logits))
        with torch.enable_grad():
            logits.requires_grad_(True)
            opt = torch.optim.Adam([logits], lr=lr)
            for _ in range(steps):
                opt.zero_grad()
                loss = loss_of(logits)
                loss.backward()
                opt.step()
        self.prior_blend.copy_(logits.detach().to(self.prior_blend.dtype))
        return {"l2_uniform": round(uniform, 4), "l2_fitted": round(float(loss_of(logits.detach())), 4),
                "weights": torch.softmax(logits.detach(), 1).mean((2, 3)).round(decimals=3).tolist()}

    def _priors(self, ego: torch.Tensor, lane_prior: torch.Tensor | None, idm_prior: torch.Tensor | None) -> torch.Tensor:
        """(B, P, T, 2) the blended priors: CV, CTRV, lane (CTRV where None) [, lane IDM (the lane prior where None)]."""
        ctrv = ctrv_rollout(ego, self.t)
        lane = ctrv if lane_prior is None else lane_prior.to(ctrv.dtype)
        priors = [constant_velocity_rollout(ego, self.t), ctrv, lane]
        if self.prior == "kinematic_idm":
            priors.append(lane if idm_prior is None else idm_prior.to(ctrv.dtype))
        return torch.stack(priors, 1)

    def kinematic_base(self, ego: torch.Tensor, lane_prior: torch.Tensor | None = None,
                       idm_prior: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 28) ego vector, optional (B, T, 2) lane and lane-IDM priors -> (B, K, T, 2) blended kinematic
        prior (metres, ego frame)."""
        priors = self._priors(ego, lane_prior, idm_prior)  # (B, P, T, 2)
        w = torch.softmax(self.prior_blend, dim=1).to(priors.dtype)  # (K, P, T, 2)
        return (w[None] * priors[:, None]).sum(2)

    def forward(self, query_states: torch.Tensor, anchors: torch.Tensor, ego: torch.Tensor | None = None,
                lane_prior: torch.Tensor | None = None, idm_prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: query_states (B, K*M, H); anchors (K, M, T, 2) metres; ego (B, 28) ego vector or None;
        lane_prior (B, T, 2) metres ego frame or None (read by the kinematic priors only); idm_prior
        (B, T, 2) metres ego frame or None (read by ``prior="kinematic_idm"`` only), or (B, M, T, 2) the
        proposal of each mode (``prior="idm_modes"``, required with ``ego``).

        Returns:
            waypoints (B, K, M, T, 2) metres ego frame, logits (B, K, M).

        Raises:
            ValueError: ``prior="idm_modes"`` with ``ego`` but no (B, M, T, 2) ``idm_prior`` (names the shape).
        """
        b = query_states.shape[0]
        x = self.norm(query_states)
        kinematic = self.prior in KINEMATIC_PRIORS
        proposals = self.prior == "idm_modes" and ego is not None
        if proposals:
            shape = None if idm_prior is None else tuple(idm_prior.shape)
            if shape != (b, self.m, self.t, 2):
                raise ValueError(f"WaypointHead(prior='idm_modes'): batch key idm_prior has shape {shape}, "
                                 f"expected {(b, self.m, self.t, 2)} (one lane-IDM proposal per mode)")
            idm_prior = idm_prior.to(x.dtype)
            per_mode = self.proposal_proj(idm_prior.flatten(2) / PROPOSAL_SCALE_M)  # (B, M, H)
            x = x + per_mode[:, None].expand(b, self.k, self.m, -1).reshape(b, self.k * self.m, -1)
        if ego is not None:
            feats = ego_kinematics(ego.to(x.dtype))
            if kinematic or proposals:
                feats = torch.cat([feats, ego_trend(ego.to(x.dtype))], -1)
            x = x + self.ego_proj(feats)[:, None]
        h = self.mlp(x)
        offsets = self.reg(h).reshape(b, self.k, self.m, self.t, 2) * self.offset_scale
        logits = self.cls(h).reshape(b, self.k, self.m)
        a = anchors[None].to(offsets.dtype)
        if ego is None:
            return a + offsets, logits
        if kinematic:
            return self.kinematic_base(ego.to(offsets.dtype), lane_prior, idm_prior)[:, :, None] + offsets, logits
        if proposals:
            return idm_prior.to(offsets.dtype)[:, None] + offsets, logits
        cv = constant_velocity_rollout(ego.to(offsets.dtype), self.t)[:, None, None]  # (B, 1, 1, T, 2)
        logits = logits - self.prior_temp.exp() * (a - cv).norm(dim=-1).mean(-1)
        base = a + torch.sigmoid(self.gate).reshape(1, self.k, self.m, self.t, 2) * (cv - a) if self.gate_enabled else a
        return base + offsets, logits


def select_command(x: torch.Tensor, command: torch.Tensor) -> torch.Tensor:
    """Pick each sample's command group: (B, K, ...) and (B,) long -> (B, ...)."""
    return x[torch.arange(x.shape[0], device=x.device), command]


def best_mode(modes: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """Index of the mode closest to the ground truth (DistillDrive): min over modes of the mean L2
    over valid steps. modes (B, M, T, 2), gt (B, T, 2), gt_mask (B, T) bool -> (B,) long."""
    w = gt_mask.to(modes.dtype)
    dist = (modes - gt[:, None]).norm(dim=-1)  # (B, M, T)
    return ((dist * w[:, None]).sum(-1) / w.sum(-1, keepdim=True).clamp(min=1.0)).argmin(-1)


def waypoint_losses(waypoints: torch.Tensor, logits: torch.Tensor, command: torch.Tensor, gt: torch.Tensor, gt_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DistillDrive-style planning losses on the ground-truth command's modes.

    L1 = mean over samples with a valid future, valid steps and x, y of |best-mode waypoints - GT|
    (cumulative positions, metres); CE = cross-entropy of the command's mode logits against the
    best-mode index (one-hot, DistillDrive's ``stage0_label``).

    Args:
        waypoints (B, K, M, T, 2), logits (B, K, M), command (B,) long, gt (B, T, 2+) ego frame,
        gt_mask (B, T) bool.

    Returns:
        (waypoint_l1, mode_ce), scalars; 0 (graph-connected) when no sample has a valid step.
    """
    modes = select_command(waypoints, command)
    mlog = select_command(logits, command)
    gt = gt[..., :2].to(modes.dtype)
    gt_mask = gt_mask.bool()
    valid = gt_mask.any(-1)
    if not bool(valid.any()):
        zero = waypoints.sum() * 0.0 + logits.sum() * 0.0
        return zero, zero
    modes, mlog, gt, gt_mask = modes[valid], mlog[valid], gt[valid], gt_mask[valid]
    best = best_mode(modes.detach(), gt, gt_mask)
    pred = modes[torch.arange(len(best), device=best.device), best]
    w = gt_mask[..., None].to(pred.dtype).expand_as(pred)
    l1 = ((pred - gt).abs() * w).sum() / w.sum()
    ce = nn.functional.cross_entropy(mlog, best)
    return l1, ce


def with_heading(xy: torch.Tensor) -> torch.Tensor:
    """(..., T, 2) ego-frame waypoints (m) -> (..., T, 3) with the heading (rad) of
    :func:`dsdrive.geometry.trajectory_yaw` (start yaw 0; no gradient through the heading)."""
    return torch.cat([xy, trajectory_yaw_tensor(xy)[..., None]], -1)


def fit_prior_blend_on_items(head: WaypointHead, items: list[dict]) -> dict:
    """:meth:`WaypointHead.fit_prior_blend` on a StudentProcessor's encoded training items (keys ``ego``,
    ``command``, ``ego_future``, ``ego_future_mask``, and ``lane_prior`` / ``idm_prior`` when every item has one)."""
    ego = torch.from_numpy(np.stack([x["ego"] for x in items])).float()
    command = torch.tensor([int(x["command"]) for x in items])
    future = torch.from_numpy(np.stack([x["ego_future"] for x in items])).float()
    mask = torch.from_numpy(np.stack([x["ego_future_mask"] for x in items])).bool()

    def stacked(key: str) -> torch.Tensor | None:
        return torch.from_numpy(np.stack([x[key] for x in items])).float() if all(key in x for x in items) else None

    return head.fit_prior_blend(ego, command, future, mask, stacked("lane_prior"), idm_prior=stacked("idm_prior"))
