"""The DistillDrive planning teacher: ground-truth agents and map in, 18 vocabulary modes out.

DistillDrive (ICCV 2025, arXiv 2508.05402) trains a planner that reads annotations instead of
images (stage 0, "DLP") and distils its 18 multi-mode planning queries into a camera student.
Model, after the public code (facts in ``shared/research/distilldrive.md``):

* :class:`~dsdrive.distilldrive.agent_encoder.AgentEncoder` over each agent's box and GT future
  (privileged), :class:`~dsdrive.distilldrive.map_encoder.MapEncoder` over map polylines;
* 18 ego queries = 3 commands x 6 modes of the planning vocabulary
  (:class:`dsdrive.distilldrive.planning_vocabulary.PlanningVocabulary`, the same anchors the student's
  planning queries use, so teacher and student align mode for mode), each a sine embedding of
  its anchor's per-step offsets through an MLP, plus a learnt ego embedding;
* ``num_layers`` x [self-attention over agents + ego queries ("gnn"), norm, cross-attention to
  the map ("cross_gnn"), norm, FFN, norm] (post-norm ``nn.TransformerDecoderLayer``), then
  optionally the conditional VAE op, then the heads ("refine"):
  plan cls (B, 18), plan reg (B, 18, 6, 2); motion cls (B, N, 6), reg (B, N, 6, 12, 2) from agent
  features plus a motion-vocabulary mode embedding; status (B, 10) from the max-pooled ego queries.
* Inference: the 6 modes of the command, collision rescoring against agents moved along their
  top-1 motion (:mod:`dsdrive.distilldrive.rescoring`), arg-max.

Decisions on the public code: ``temp_gnn`` (attention to the instance queue of the previous 4
frames, projected into the current frame) becomes, with ``use_ego_history`` (default), a
cross-attention of the 18 ego queries to 4 ego-history tokens (the past ego poses in the current
frame, the same information the queue's projected ego anchors carry; see
:mod:`dsdrive.distilldrive.teacher_inputs`); agents have no history in a keyframe, so their
temporal attention is dropped. Without it the teacher has no ego-motion cue at all (statics do
not move in the current frame); ``use_ego_history=False`` gives that variant. Positions are
added to features once before the layers; with
``anchor_residual`` (default) each mode regresses per-step offsets *relative to its anchor's*
(the public code regresses them from zero), which keeps mode i near anchor i for the distillation
that pairs modes 1:1. Beyond the published model, the ego's own kinematics are switchable
(``ego_kinematics``, ``kinematic_prior``, ``plan_selection``; :mod:`dsdrive.distilldrive.kinematic_prior`,
dsdrive issue 10): the defaults reproduce the published teacher. Commands index mode groups in :data:`dsdrive.data.types.COMMANDS` order
(index = command * 6 + mode).

Save / load: a ``transformers`` ``PretrainedConfig`` / ``PreTrainedModel`` pair, so
``save_pretrained(dir)`` / ``PlanningTeacher.from_pretrained(dir)`` round-trip weights and both
vocabularies (registered buffers). Frames: ego frame of the current time (x forward, y left), m.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from dsdrive.distilldrive.agent_encoder import AgentEncoder
from dsdrive.distilldrive.cvae import ConditionalVAE
from dsdrive.distilldrive.layers import mlp
from dsdrive.layers import sine_embedding, trajectory_yaw_tensor
from dsdrive.distilldrive.losses import (
    cumulative_to_offsets,
    motion_loss,
    planning_loss,
    status_loss,
)
from dsdrive.distilldrive.kinematic_prior import KINEMATIC_FEATURES, PRIORS, kinematic_features, kinematic_rollout
from dsdrive.distilldrive.map_encoder import MapEncoder
from dsdrive.distilldrive.rescoring import collision_rescore
from dsdrive.distilldrive.state_optimization import DQNStateLoss
from dsdrive.distilldrive.teacher_inputs import (
    EGO_HISTORY_CHANNELS,
    STATUS_DIM,
    TeacherBatch,
)
from dsdrive.data.types import (
    AGENT_FUTURE_STEPS,
    AGENT_TYPES,
    COMMANDS,
    FUTURE_STEPS,
    HISTORY_STEPS,
    MAP_TYPES,
)

PLAN_SELECTIONS = ("argmax", "expected")
"""How :meth:`PlanningTeacher.select` turns the command's 6 rescored modes into one plan."""
MOVABLE_TYPES = ("VEHICLE", "PEDESTRIAN", "CYCLIST")
"""Agent classes whose GT future feeds the VAE posterior (DistillDrive: 5 movable nuScenes classes)."""


class PlanningTeacherConfig(PretrainedConfig):
    """Configuration of :class:`PlanningTeacher`.

    Model: ``hidden_dim`` (256), ``agent_layers`` (4), ``num_heads`` (8), ``ffn_dim`` (1024),
    ``dropout`` (0.1), ``pos_feats`` (sine features per coordinate, 64), ``num_layers`` (2
    interaction layers), ``plan_modes`` / ``motion_modes`` (6), ``anchor_residual`` (True).
    Inputs: ``map_classes`` (default all of MAP_TYPES), ``max_agents`` (150), ``agent_radius`` (55 m),
    ``max_polylines`` (50), ``map_roi`` ((30, 15) m half-extents x, y).
    Losses: ``cls_variant`` ("label" | "distribution"), ``plan_cls_weight`` (0.5),
    ``plan_reg_weight`` (2.0), ``motion_cls_weight`` / ``motion_reg_weight`` (0.2),
    ``status_weight`` (2.0), ``dqn_weight`` (0 = no DQN module at all), ``dqn_gamma`` (0.95).
    VAE: ``use_cvae`` (False in stage 0), ``cvae_latent`` (32), ``cvae_hidden`` (64),
    ``cvae_layers`` (4), ``cvae_kl_weight`` (1.0), ``seed`` (0).
    Temporal: ``use_ego_history`` (True: ego queries attend to the past ego poses, ``temp_gnn``).
    Inference: ``rescore`` (True).
    Kinematics (:mod:`dsdrive.distilldrive.kinematic_prior`; every default reproduces the
    published teacher): ``ego_kinematics`` (False: the ego queries also receive an MLP embedding of
    the current ego status, vx, vy, ax, ay, yaw rate, and of the 4 ego-history tokens),
    ``kinematic_prior`` ("none" | "cv" | "ctrv": each mode's waypoints start from
    ``anchor + prior_gate * (rollout - anchor)`` and the regression head, zero-initialised, adds a
    per-step residual, so the untrained teacher with ``prior_gate`` 1 plans the rollout),
    ``prior_gate`` (1.0), ``plan_selection`` ("argmax" | "expected": the rescored-softmax weighted
    mean of the command's 6 modes), ``status_weight`` (above).
    """

    model_type = "dsdrive_planning_teacher"

    def __init__(
        self, hidden_dim: int = 256, agent_layers: int = 4, num_heads: int = 8, ffn_dim: int = 1024, dropout: float = 0.1,
        pos_feats: int = 64, num_layers: int = 2, plan_modes: int = 6, motion_modes: int = 6, anchor_residual: bool = True,
        map_classes: list[str] | None = None, max_agents: int = 150, agent_radius: float = 55.0, max_polylines: int = 50,
        map_roi: list[float] | None = None, cls_variant: str = "label", plan_cls_weight: float = 0.5,
        plan_reg_weight: float = 2.0, motion_cls_weight: float = 0.2, motion_reg_weight: float = 0.2,
        status_weight: float = 2.0, dqn_weight: float = 0.0, dqn_gamma: float = 0.95, use_cvae: bool = False,
        cvae_latent: int = 32, cvae_hidden: int = 64, cvae_layers: int = 4, cvae_kl_weight: float = 1.0, seed: int = 0,
        rescore: bool = True, use_ego_history: bool = True, ego_kinematics: bool = False, kinematic_prior: str = "none",
        prior_gate: float = 1.0, plan_selection: str = "argmax", **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim, self.agent_layers, self.num_heads, self.ffn_dim, self.dropout = hidden_dim, agent_layers, num_heads, ffn_dim, dropout
        self.pos_feats, self.num_layers, self.plan_modes, self.motion_modes = pos_feats, num_layers, plan_modes, motion_modes
        self.anchor_residual = anchor_residual
        self.map_classes = list(map_classes) if map_classes is not None else list(MAP_TYPES)
        bad = [c for c in self.map_classes if c not in MAP_TYPES]
        if bad:
            raise ValueError(f"PlanningTeacherConfig: map_classes has {bad}, expected a subset of {MAP_TYPES}")
        if cls_variant not in ("label", "distribution"):
            raise ValueError(f"PlanningTeacherConfig: cls_variant {cls_variant!r}, expected 'label' or 'distribution'")
        self.max_agents, self.agent_radius, self.max_polylines = max_agents, agent_radius, max_polylines
        self.map_roi = list(map_roi) if map_roi is not None else [30.0, 15.0]
        self.cls_variant, self.plan_cls_weight, self.plan_reg_weight = cls_variant, plan_cls_weight, plan_reg_weight
        self.motion_cls_weight, self.motion_reg_weight, self.status_weight = motion_cls_weight, motion_reg_weight, status_weight
        self.dqn_weight, self.dqn_gamma = dqn_weight, dqn_gamma
        self.use_cvae, self.cvae_latent, self.cvae_hidden, self.cvae_layers = use_cvae, cvae_latent, cvae_hidden, cvae_layers
        self.cvae_kl_weight, self.seed, self.rescore = cvae_kl_weight, seed, rescore
        self.use_ego_history = use_ego_history
        if kinematic_prior not in PRIORS:
            raise ValueError(f"PlanningTeacherConfig: kinematic_prior {kinematic_prior!r}, expected one of {PRIORS}")
        if not 0.0 <= float(prior_gate) <= 1.0:
            raise ValueError(f"PlanningTeacherConfig: prior_gate {prior_gate!r}, expected a number in [0, 1]")
        if plan_selection not in PLAN_SELECTIONS:
            raise ValueError(f"PlanningTeacherConfig: plan_selection {plan_selection!r}, expected one of {PLAN_SELECTIONS}")
        self.ego_kinematics, self.kinematic_prior, self.prior_gate = bool(ego_kinematics), kinematic_prior, float(prior_gate)
        self.plan_selection = plan_selection

    def batch_kwargs(self) -> dict:
        """Keyword arguments of :func:`dsdrive.distilldrive.teacher_inputs.build_teacher_batch`."""
        return {"map_classes": tuple(self.map_classes), "max_agents": self.max_agents, "agent_radius": self.agent_radius,
                    "max_polylines": self.max_polylines, "map_roi": tuple(self.map_roi), "use_ego_history": self.use_ego_history}


class PlanningTeacher(PreTrainedModel):
    """DistillDrive planning teacher (see the module docstring)."""

    config_class = PlanningTeacherConfig
    base_model_prefix = "planning_teacher"
    main_input_name = "batch"

    def __init__(self, config: PlanningTeacherConfig):
        super().__init__(config)
        c, d = config, config.hidden_dim
        self.agent_encoder = AgentEncoder(d, c.agent_layers, c.num_heads, c.ffn_dim, c.dropout, c.pos_feats)
        self.map_encoder = MapEncoder(d, len(c.map_classes), c.pos_feats)
        self.register_buffer("plan_anchors", torch.zeros(len(COMMANDS), c.plan_modes, FUTURE_STEPS, 2))
        self.register_buffer("motion_anchors", torch.zeros(len(AGENT_TYPES), c.motion_modes, AGENT_FUTURE_STEPS, 2))
        self.plan_anchor_mlp = mlp(FUTURE_STEPS * 2 * c.pos_feats, d, d, layers=2)
        self.motion_anchor_mlp = mlp(AGENT_FUTURE_STEPS * 2 * c.pos_feats, d, d, layers=2)
        self.ego_embed = nn.Parameter(torch.zeros(d))
        self.map_null = nn.Parameter(torch.zeros(1, 1, d))
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(d, c.num_heads, c.ffn_dim, c.dropout, batch_first=True, norm_first=False) for _ in range(c.num_layers)
        )
        if c.use_ego_history:
            self.history_mlp = mlp(EGO_HISTORY_CHANNELS + 1, d, d, layers=2)
            self.history_pos = mlp(2 * c.pos_feats, d, d, layers=2)
            self.history_null = nn.Parameter(torch.zeros(1, 1, d))
            self.temp_attn = nn.ModuleList(nn.MultiheadAttention(d, c.num_heads, c.dropout, batch_first=True) for _ in range(c.num_layers))
        self.cvae = (ConditionalVAE(d, FUTURE_STEPS, c.cvae_latent, c.cvae_hidden, c.cvae_layers, c.seed, True, c.cvae_kl_weight,
                                    noise_rows=c.max_agents + len(COMMANDS) * c.plan_modes) if c.use_cvae else None)
        self.plan_cls = mlp(d, d, 1, layers=2)
        self.plan_reg = mlp(d, d, FUTURE_STEPS * 2, layers=2)
        self.motion_cls = mlp(d, d, 1, layers=2)
        self.motion_reg = mlp(d, d, AGENT_FUTURE_STEPS * 2, layers=2)
        self.status_head = mlp(d, d, STATUS_DIM, layers=2)
        if c.ego_kinematics:  # the ego's own kinematics (current status + 4 history tokens) -> every ego query
            self.kinematics_mlp = mlp(KINEMATIC_FEATURES + EGO_HISTORY_CHANNELS * HISTORY_STEPS, d, d, layers=2)
        self.dqn = DQNStateLoss(gamma=c.dqn_gamma, weight=c.dqn_weight) if c.dqn_weight > 0 else None
        for head in (self.plan_cls, self.motion_cls):  # SparseDrive: cls bias from prior probability 0.01
            nn.init.constant_(head[-1].bias, -math.log((1 - 0.01) / 0.01))
        self.post_init()
        if c.kinematic_prior != "none":  # zero residual at init: the untrained teacher plans the prior (gate 1)
            nn.init.zeros_(self.plan_reg[-1].weight)
            nn.init.zeros_(self.plan_reg[-1].bias)

    def _init_weights(self, module: nn.Module) -> None:
        """Keep PyTorch's default initialisation (no transformer-specific re-init)."""

    def set_vocabularies(self, plan_anchors: np.ndarray, motion_anchors: np.ndarray) -> None:
        """Install the planning (3, 6, 6, 2) and motion (len(AGENT_TYPES), 6, 12, 2) anchors (m).

        Raises:
            ValueError: a shape differs from the config's.
        """
        for name, arr in (("plan_anchors", plan_anchors), ("motion_anchors", motion_anchors)):
            buf = getattr(self, name)
            t = torch.as_tensor(np.asarray(arr), dtype=buf.dtype)
            if t.shape != buf.shape:
                raise ValueError(f"PlanningTeacher.set_vocabularies: {name} has shape {tuple(t.shape)}, expected {tuple(buf.shape)}")
            buf.copy_(t)

    def _anchor_embed(self, anchors: torch.Tensor, head: nn.Module) -> torch.Tensor:
        return head(sine_embedding(cumulative_to_offsets(anchors).flatten(-2), self.config.pos_feats))

    def forward(self, batch: TeacherBatch) -> dict[str, torch.Tensor]:
        """Run the teacher.

        Args:
            batch: a :class:`TeacherBatch` (see :func:`build_teacher_batch`).

        Returns:
            ``plan_queries`` (B, 18, D), ``plan_logits`` (B, 18), ``plan_waypoints`` (B, 18, 6, 2)
            cumulative ego-frame (m), ``motion_logits`` (B, N, 6), ``motion_waypoints``
            (B, N, 6, 12, 2) displacement from each agent's centre (ego frame, m), ``status``
            (B, 10), ``kl`` (scalar, 0 without the VAE or in eval).
        """
        c = self.config
        b, n = batch.agent_mask.shape
        agent_feat, agent_pos = self.agent_encoder(batch.agent_steps, batch.agent_pos, batch.agent_class)
        map_feat, map_pos = self.map_encoder(batch.map_segments, batch.map_mid, batch.map_class)
        plan_embed = self._anchor_embed(self.plan_anchors, self.plan_anchor_mlp).reshape(1, -1, c.hidden_dim)  # (1, 18, D)
        ego = (plan_embed + self.ego_embed).expand(b, -1, -1)
        if c.ego_kinematics:
            kin = torch.cat([kinematic_features(batch.status, batch.status_mask), batch.ego_history.flatten(1)], dim=-1)
            ego = ego + self.kinematics_mlp(kin)[:, None]
        q = ego.shape[1]
        tokens = torch.cat([agent_feat + agent_pos, ego], dim=1)
        pad = torch.cat([~batch.agent_mask, torch.zeros(b, q, dtype=torch.bool, device=ego.device)], dim=1)
        memory = torch.cat([self.map_null.expand(b, -1, -1), map_feat + map_pos], dim=1)
        mem_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=ego.device), ~batch.map_mask], dim=1)
        if c.use_ego_history:
            h = batch.ego_history
            t_idx = torch.linspace(-1.0, -0.25, h.shape[1], device=h.device).expand(b, -1)[..., None]
            hist = self.history_mlp(torch.cat([h, t_idx], dim=-1)) + self.history_pos(sine_embedding(h[..., :2], c.pos_feats))
            hist = torch.cat([self.history_null.expand(b, -1, -1), hist], dim=1)  # a null token keeps rows with no history finite
            hist_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=h.device), h[..., 4] < 0.5], dim=1)
        for i, layer in enumerate(self.layers):
            if c.use_ego_history:  # temp_gnn: ego queries attend to the ego's past poses
                ego_tok = tokens[:, n:]
                upd = self.temp_attn[i](ego_tok, hist, hist, key_padding_mask=hist_pad, need_weights=False)[0]
                tokens = torch.cat([tokens[:, :n], ego_tok + upd], dim=1)
            tokens = layer(tokens, memory, tgt_key_padding_mask=pad, memory_key_padding_mask=mem_pad)
        kl = tokens.new_zeros(())
        if self.cvae is not None:
            fut = torch.cat([batch.agent_future[:, :, :FUTURE_STEPS], batch.ego_future[:, None].expand(-1, q, -1, -1)], dim=1)
            movable = torch.zeros_like(batch.agent_mask)
            for name in MOVABLE_TYPES:
                movable |= batch.agent_class == AGENT_TYPES.index(name)
            valid = torch.cat([batch.agent_future_mask[:, :, :FUTURE_STEPS].all(-1) & batch.agent_mask & movable,
                               batch.ego_future_mask.all(-1, keepdim=True).expand(-1, q)], dim=1)
            rows = torch.cat([torch.arange(n), c.max_agents + torch.arange(q)]).to(tokens.device).expand(b, -1)
            vae = self.cvae(tokens, fut, valid, row_index=rows)
            tokens, kl = vae["features"], vae["kl"]
        agents, plan_q = tokens[:, :n], tokens[:, n:]
        # planning
        reg = self.plan_reg(plan_q).reshape(b, q, FUTURE_STEPS, 2)
        if c.kinematic_prior != "none":
            prior = kinematic_rollout(c.kinematic_prior, batch.status, batch.status_mask, batch.ego_history)[:, None]  # (B, 1, 6, 2)
            anchors = self.plan_anchors.reshape(1, q, FUTURE_STEPS, 2)
            reg = reg + cumulative_to_offsets(anchors + c.prior_gate * (prior - anchors))
        elif c.anchor_residual:
            reg = reg + cumulative_to_offsets(self.plan_anchors).reshape(1, q, FUTURE_STEPS, 2)
        plan_wp = reg.cumsum(dim=-2)
        # motion: per-agent mode queries from the class's motion anchors (agent frame)
        motion_embed = self._anchor_embed(self.motion_anchors, self.motion_anchor_mlp)  # (C, K, D)
        mq = agents[:, :, None] + motion_embed[batch.agent_class]
        k = mq.shape[2]
        local = self.motion_reg(mq).reshape(b, n, k, AGENT_FUTURE_STEPS, 2)
        if c.anchor_residual:
            local = local + cumulative_to_offsets(self.motion_anchors)[batch.agent_class]
        local = local.cumsum(dim=-2)
        cy, sy = batch.agent_yaw.cos()[:, :, None, None], batch.agent_yaw.sin()[:, :, None, None]
        motion_wp = torch.stack([cy * local[..., 0] - sy * local[..., 1], sy * local[..., 0] + cy * local[..., 1]], dim=-1)
        return {
            "plan_queries": plan_q, "plan_logits": self.plan_cls(plan_q).squeeze(-1), "plan_waypoints": plan_wp,
            "motion_logits": self.motion_cls(mq).squeeze(-1), "motion_waypoints": motion_wp,
            "status": self.status_head(plan_q.max(dim=1).values), "kl": kl,
        }

    def compute_loss(self, batch: TeacherBatch, out: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total training loss and its terms (floats) for logging; runs :meth:`forward` if ``out`` is None."""
        c = self.config
        out = self.forward(batch) if out is None else out
        plan = planning_loss(out["plan_logits"], out["plan_waypoints"], batch.command, batch.ego_future, batch.ego_future_mask,
                             c.cls_variant, c.plan_cls_weight, c.plan_reg_weight)
        terms = {"plan_cls": plan["plan_cls"], "plan_reg": plan["plan_reg"]}
        terms.update(motion_loss(out["motion_logits"], out["motion_waypoints"], batch.agent_future, batch.agent_future_mask,
                                 batch.agent_mask, c.motion_cls_weight, c.motion_reg_weight))
        terms["status"] = status_loss(out["status"], batch.status, batch.status_mask, c.status_weight)
        if self.cvae is not None:
            terms["kl"] = out["kl"]
        logs = {}
        if self.dqn is not None:
            dqn = self.dqn(out["status"], batch.status, batch.status_mask, batch.command, plan["best_traj"], batch.ego_future, batch.ego_future_mask)
            terms["dqn"] = dqn["dqn"]
            logs["dqn_reward"] = float(dqn["dqn_reward"])
        loss = sum(terms.values())
        logs.update({k: float(v.detach()) for k, v in terms.items()})
        logs["loss"] = float(loss.detach())
        return loss, logs

    @torch.no_grad()
    def select(self, batch: TeacherBatch, out: dict[str, torch.Tensor] | None = None, rescore: bool | None = None) -> dict[str, torch.Tensor]:
        """Pick one trajectory per sample: the command's modes, optional collision rescoring, arg-max.

        Returns:
            ``waypoints`` (B, 6, 3) ego-frame ``x, y, heading`` (heading:
            :func:`dsdrive.geometry.trajectory_yaw` of the positions),
            ``mode`` (B,) index within the command, ``scores`` (B, 6) rescored logits,
            ``collides`` (B, 6) bool.
        """
        out = self.forward(batch) if out is None else out
        rescore = self.config.rescore if rescore is None else rescore
        b, k = len(batch.command), self.config.plan_modes
        rows = torch.arange(b, device=batch.command.device)
        scores = out["plan_logits"].view(b, len(COMMANDS), k)[rows, batch.command]
        trajs = out["plan_waypoints"].view(b, len(COMMANDS), k, FUTURE_STEPS, 2)[rows, batch.command]
        collides = torch.zeros_like(scores, dtype=torch.bool)
        if rescore:
            top1 = out["motion_logits"].argmax(-1)
            mw = out["motion_waypoints"]
            agent_traj = torch.gather(mw, 2, top1[..., None, None, None].expand(-1, -1, 1, *mw.shape[-2:])).squeeze(2)
            scores, collides = collision_rescore(scores, trajs, batch.agent_pos, batch.agent_yaw, batch.agent_size, agent_traj, batch.agent_mask)
        mode = scores.argmax(-1)
        xy = trajs[rows, mode]
        if self.config.plan_selection == "expected":  # colliding modes (logit - 1e4) get ~0 weight unless all collide
            xy = (scores.softmax(-1)[..., None, None] * trajs).sum(1)
        heading = trajectory_yaw_tensor(xy)
        return {"waypoints": torch.cat([xy, heading[..., None]], dim=-1), "mode": mode, "scores": scores, "collides": collides}
