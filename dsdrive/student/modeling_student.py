"""The compact student planner: scene encoder -> causal LM -> {waypoints | reasoning text} + BEV RiskHead.

Methods: DSDrive (arXiv 2505.05360) waypoint-driven dual head (a compact LLM learns a teacher's
chain-of-thought while a waypoint head regresses the plan from its hidden states); DistillDrive
(arXiv 2508.05402) planning vocabulary with 3 commands x 6 modes of planning queries; RSD
(arXiv 2511.14499) RiskHead on BEV features trained on a VLM's per-object risk.

Sequence layout fed to the backbone as ``inputs_embeds`` (causal attention, padding masked,
position ids = cumulative count of real tokens, so padding never shifts a position):

    [scene tokens: ego, N agents, M polylines][prompt tokens][18 planning queries][reasoning tokens]

(``config.sequence_order`` ``plan_first``, the default) or, with ``reasoning_first`` (DSDrive's
intent: the plan reads the chain-of-thought),

    [scene tokens][prompt tokens][reasoning tokens][18 planning queries]

The camera student (``config.scene_inputs`` ``cameras``; ``both`` keeps the object tokens too) has a
vision-language backbone (Qwen2-VL family, :mod:`dsdrive.student.vision_backbone`) and reads

    [<|vision_start|> camera tokens <|vision_end|> per camera][ego token][prompt][queries][reasoning]

with Qwen2-VL's multimodal RoPE positions; its RiskHead reads the vision tower's patch features
lifted to BEV with each camera's calibration (RSD's PV -> BEV, :mod:`dsdrive.student.pv_bev_lift`).
It builds no agent or map token at all (``cameras``): only the ego status / history / command token,
which is not perception.

The 18 planning queries (one per (command, mode), :data:`dsdrive.data.types.COMMANDS` order, each a
learned embedding plus an embedding of its vocabulary anchor) see the scene and the prompt; the
reasoning tokens see the queries too, so the text explains the plan that the queries carry.
The waypoint head also reads the ego's current kinematics (``batch["ego"]``, no future) directly:
each mode is pulled towards the constant-velocity rollout and the mode logits get a CV-consistency
prior (see :class:`dsdrive.student.waypoint_head.WaypointHead`).
:meth:`StudentModel.plan` is ONE forward pass over [scene][prompt][queries] (never generation);
:meth:`StudentModel.explain` continues greedily after the queries with a KV cache. A reasoning-first
student is no longer planned in one pass: :meth:`StudentModel.plan` first generates the reasoning
greedily (KV cache, at most ``config.max_new_tokens``, stopping at eos), then appends the queries to
the cache and reads their states; ``eval/bench_student.py --sequence-order`` times the cost.
In training (teacher forcing) the reasoning rows are right-padded: pads are masked out of attention
and do not advance the position ids, so the queries after a row's reasoning see the same real
tokens at the same positions whatever the batch's padding.

All coordinates are in the ego frame of the current time (x forward, y left, metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, PreTrainedModel
from transformers.utils import ModelOutput

from dsdrive.constants import STEP_SECONDS
from dsdrive.distilldrive.cvae import ConditionalVAE
from dsdrive.student.bev import BevGrid
from dsdrive.student.configuration_student import StudentConfig
from dsdrive.student.pv_bev_lift import LiftedBev
from dsdrive.student.risk_head import RiskHead, risk_l1_loss
from dsdrive.student.scene_encoder import EgoEncoder, SceneEncoder
from dsdrive.student.vision_backbone import CAMERA_KEYS, check_vision_backbone, image_features, image_sequence
from dsdrive.student.waypoint_head import WaypointHead, select_command, waypoint_losses, with_heading

SCENE_KEYS = ("agents", "agent_types", "agents_mask", "map_points", "map_types", "map_mask", "ego", "command")


@dataclass
class StudentOutput(ModelOutput):
    """Output of :meth:`StudentModel.forward`. Loss terms are None when their target is absent.

    waypoints (B, K, M, T, 2) metres ego frame; mode_logits (B, K, M); risk_map (B, H, W) in [0, 1];
    meta_action_logits (B, 36); reasoning_logits (B, R, V) predicting each reasoning token;
    query_states (B, K*M, H) final hidden states of all planning queries (index = command * M + mode,
    the order of ``mode_logits.flatten(1)``) as the heads read them (after the conditional-VAE op with
    ``config.planning_cvae``), read by planning KD (:mod:`dsdrive.training.planning_kd`); cvae_kl the
    op's KL(posterior || prior) (unweighted; None without the op or without ego_future).
    """

    loss: torch.Tensor | None = None
    waypoint_l1: torch.Tensor | None = None
    mode_ce: torch.Tensor | None = None
    reasoning_ce: torch.Tensor | None = None
    risk_l1: torch.Tensor | None = None
    meta_action_ce: torch.Tensor | None = None
    cvae_kl: torch.Tensor | None = None
    waypoints: torch.Tensor | None = None
    mode_logits: torch.Tensor | None = None
    risk_map: torch.Tensor | None = None
    meta_action_logits: torch.Tensor | None = None
    reasoning_logits: torch.Tensor | None = None
    query_states: torch.Tensor | None = None  # (B, K*M, H) final hidden states of the 18 planning queries (planning KD)


@dataclass
class PlanOutput(ModelOutput):
    """Output of :meth:`StudentModel.plan` for each sample's own command.

    waypoints (B, T, 3): the plan x, y (m) + heading (rad, finite differences), ego frame: the best
    mode, or the score-weighted mean of the modes (``config.plan_selection == "expected"``);
    mode_waypoints (B, M, T, 3); mode_scores (B, M) softmax of the mode logits; best_mode (B,);
    risk_map (B, H, W); meta_action_logits (B, 36) or None.
    """

    waypoints: torch.Tensor | None = None
    mode_waypoints: torch.Tensor | None = None
    mode_scores: torch.Tensor | None = None
    best_mode: torch.Tensor | None = None
    risk_map: torch.Tensor | None = None
    meta_action_logits: torch.Tensor | None = None


def default_anchors(num_commands: int = 3, modes: int = 6, steps: int = 6) -> np.ndarray:
    """Placeholder vocabulary (K, M, T, 2) before :meth:`StudentModel.set_planning_vocabulary`:
    constant speeds 0 ... 15 m/s, LEFT/RIGHT bending 4 m sideways at +3 s (COMMANDS order)."""
    t = np.arange(1, steps + 1, dtype=np.float32) * STEP_SECONDS
    out = np.zeros((num_commands, modes, steps, 2), np.float32)
    for k, sign in enumerate((1.0, -1.0, 0.0)[:num_commands]):
        for m, v in enumerate(np.linspace(0.0, 15.0, modes)):
            out[k, m, :, 0] = v * t
            out[k, m, :, 1] = sign * 4.0 * (t / t[-1]) ** 2 * (v > 0)
    return out


def last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool mask -> (B,) long index of each row's last True (0 for a row without any)."""
    return (mask.shape[1] - 1 - mask.flip(1).long().argmax(1)).clamp(min=0)


def until_first_eos(ids: torch.Tensor, eos_token_id: int | None) -> torch.Tensor:
    """(B, R) generated ids -> (B, R) bool, True up to and including each row's first eos (all True
    without eos): the tokens a reasoning-first student's queries read."""
    if eos_token_id is None:
        return torch.ones_like(ids, dtype=torch.bool)
    is_eos = (ids == eos_token_id).long()
    return (is_eos.cumsum(1) - is_eos) == 0


class PlanningQueries(nn.Module):
    """Learned planning query embeddings (K*M, H) + MLP of the flattened anchors (metres / 50)."""

    def __init__(self, num_queries: int, hidden_size: int, future_steps: int):
        super().__init__()
        self.embed = nn.Parameter(torch.randn(num_queries, hidden_size) * 0.02)
        self.anchor_mlp = nn.Sequential(nn.Linear(future_steps * 2, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, anchors: torch.Tensor) -> torch.Tensor:
        """anchors (K, M, T, 2) -> (K*M, H)."""
        return self.embed + self.anchor_mlp(anchors.reshape(self.embed.shape[0], -1).to(self.embed.dtype) / 50.0)


class StudentModel(PreTrainedModel):
    """DSDrive-style student with a DistillDrive planning head and an RSD RiskHead.

    Submodules: ``backbone`` (any causal LM; a Qwen2-VL-family ``AutoModelForImageTextToText`` for
    a camera student), ``scene_encoder`` (object inputs) or ``ego_encoder`` (cameras only),
    ``scene_proj`` (scene width -> LLM hidden), ``planning_queries``, ``waypoint_head``,
    ``risk_head``, ``meta_action_head`` (optional; classifies BEHAVIOURS x SPEEDS from the mean
    hidden state of the command's 6 query tokens); with cameras also ``camera_embed`` (N, hidden),
    a learned embedding per camera added to its vision tokens (zero at start, so a pretrained VLM
    first sees its own tokens), and ``bev_lift`` (:class:`dsdrive.student.pv_bev_lift.LiftedBev`).
    Buffer ``anchors`` (K, M, T, 2): the planning vocabulary, persistent, so it travels with the
    checkpoint.

    Args:
        config: the student config.
        backbone: an already-loaded causal LM / VLM (e.g. pretrained, or quantized for QLoRA);
            None builds a randomly initialised one from ``config.backbone_config``.

    Raises:
        ValueError: a camera student whose backbone is not a supported VLM.
    """

    config_class = StudentConfig
    base_model_prefix = "student"
    main_input_name = "prompt_ids"
    _no_split_modules = []

    def __init__(self, config: StudentConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        auto = AutoModelForImageTextToText if config.reads_cameras else AutoModelForCausalLM
        self.backbone = backbone if backbone is not None else auto.from_config(config.backbone_hf_config())
        if config.reads_cameras:
            check_vision_backbone(self.backbone)
        hidden = self.backbone.config.get_text_config().hidden_size
        self.grid = BevGrid.from_config(config)
        if config.reads_objects:
            self.scene_encoder = SceneEncoder(config.scene_dim, config.scene_layers, config.scene_heads, config.num_agent_types,
                                              config.num_map_types, config.num_commands, self.grid, config.position_scale)
        else:  # camera student: ego status / history / command only, no object token is built
            self.ego_encoder = EgoEncoder(config.scene_dim, config.num_commands, config.position_scale)
        self.scene_proj = nn.Sequential(nn.Linear(config.scene_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.planning_queries = PlanningQueries(config.num_queries, hidden, config.future_steps)
        # DistillDrive's student places its conditional VAE op on the planning queries (research note
        # "Generative model"); the KL weight lives in config.loss_weights, so the op's own is 1
        self.planning_cvae = (ConditionalVAE(hidden, config.future_steps, seed=0, kl_weight=1.0, noise_rows=config.num_queries)
                              if getattr(config, "planning_cvae", False) else None)
        self.waypoint_head = WaypointHead(hidden, config.num_commands, config.num_modes, config.future_steps,
                                          config.waypoint_offset_scale, config.waypoint_cv_gate_init,
                                          prior=getattr(config, "waypoint_prior", "cv_gate"))
        self.risk_head = RiskHead(config.scene_dim, config.bev_height, config.bev_width, config.risk_layers, config.risk_heads,
                                  config.risk_points, config.risk_query_stride)
        self.meta_action_head = (nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.num_meta_actions))
                                 if config.use_meta_action_head else None)
        anchors = torch.from_numpy(default_anchors(config.num_commands, config.num_modes, config.future_steps))
        self.register_buffer("anchors", anchors, persistent=True)
        if config.reads_cameras:
            self.camera_embed = nn.Embedding(len(config.cameras), hidden)
            nn.init.zeros_(self.camera_embed.weight)
            self.bev_lift = LiftedBev(self.backbone.config.vision_config.out_hidden_size, config.scene_dim, len(config.lift_heights))
        self.post_init()

    def _init_weights(self, module):
        """Every non-backbone module initialises itself in its constructor (the backbone uses its own
        ``_init_weights``), so nothing is overwritten here."""

    @classmethod
    def from_backbone(cls, backbone: PreTrainedModel, vocabulary=None, backbone_name_or_path: str | None = None, **config_kw) -> "StudentModel":
        """Wrap a loaded causal LM (its config is copied into the student config) and set the vocabulary."""
        config = StudentConfig(backbone_config=backbone.config.to_dict(), backbone_name_or_path=backbone_name_or_path, **config_kw)
        model = cls(config, backbone=backbone)
        if vocabulary is not None:
            model.set_planning_vocabulary(vocabulary)
        return model

    def set_planning_vocabulary(self, vocabulary) -> None:
        """Copy anchors (a :class:`dsdrive.distilldrive.planning_vocabulary.PlanningVocabulary` or an array shaped
        (K, M, T, 2), metres, ego frame) into the ``anchors`` buffer.

        Raises:
            ValueError: shape differs from the config's (K, M, T, 2).
        """
        a = torch.as_tensor(np.asarray(getattr(vocabulary, "anchors", vocabulary), np.float32))
        if tuple(a.shape) != tuple(self.anchors.shape):
            raise ValueError(f"set_planning_vocabulary: anchors shape {tuple(a.shape)}, model expects {tuple(self.anchors.shape)}")
        with torch.no_grad():
            self.anchors.copy_(a.to(self.anchors.device))

    # ------------------------------------------------------------------ sequence assembly
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)

    def _prefix(self, batch: dict, with_bev: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, tuple | None]:
        """[images][scene][prompt][queries] embeddings (B, L, H), mask (B, L), the BEV map (None with
        ``with_bev`` False: only the RiskHead reads it), the query start index, and the position
        layout for :meth:`_position_ids` (None without cameras)."""
        if not self.config.use_ego_status:  # ego-status ablation: the ego token sees no status / history
            batch = {**batch, "ego": torch.zeros_like(batch["ego"])}
        if self.config.reads_cameras:
            return self._camera_prefix(batch, with_bev)
        tokens, tmask, bev = self.scene_encoder(*(batch[k] for k in SCENE_KEYS), with_bev=with_bev)
        emb_dtype = self.backbone.get_input_embeddings().weight.dtype
        scene = self.scene_proj(tokens).to(emb_dtype)
        prompt = self._embed(batch["prompt_ids"])
        b = scene.shape[0]
        queries = self.planning_queries(self.anchors).to(emb_dtype)[None].expand(b, -1, -1)
        embeds = torch.cat([scene, prompt, queries], 1)
        mask = torch.cat([tmask, batch["prompt_mask"].bool(), torch.ones(b, queries.shape[1], dtype=torch.bool, device=scene.device)], 1)
        return embeds, mask, bev, embeds.shape[1] - queries.shape[1], None

    def _camera_prefix(self, batch: dict, with_bev: bool = True):
        """The camera student's prefix (see the module docstring); BEV = lifted patch features
        (+ the object BEV with ``scene_inputs`` both); None with ``with_bev`` False."""
        missing = [k for k in CAMERA_KEYS if batch.get(k) is None]
        if missing:
            raise ValueError(f"StudentModel: scene_inputs={self.config.scene_inputs!r} needs the camera inputs {missing} "
                             "(batch them with a StudentProcessor given the VLM's image processor)")
        emb = self.backbone.get_input_embeddings()
        emb_dtype = emb.weight.dtype
        if self.config.reads_objects:
            tokens, tmask, obj_bev = self.scene_encoder(*(batch[k] for k in SCENE_KEYS), with_bev=with_bev)
        else:
            tokens = self.ego_encoder(batch["ego"], batch["command"])
            tmask, obj_bev = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device), None
        feats = image_features(self.backbone, batch["pixel_values"], batch["image_grid_thw"])
        ids = torch.tensor([self.backbone.config.vision_start_token_id, self.backbone.config.vision_end_token_id], device=tokens.device)
        start, end = emb(ids)
        cams = self.camera_embed(torch.arange(batch["camera_mask"].shape[1], device=tokens.device))  # a call, not .weight: peft wraps it
        img = image_sequence(feats, batch["camera_mask"].bool(), cams, start, end)
        bev = None
        if with_bev:
            lift_dtype = next(self.bev_lift.parameters()).dtype
            heights = torch.tensor(self.config.lift_heights, device=tokens.device)
            bev = self.bev_lift(img.features.to(lift_dtype), img.feature_size, batch["camera_intrinsics"], batch["camera_cam2ego"],
                                batch["camera_image_size"], batch["camera_mask"].bool() & batch["camera_calibrated"].bool(), self.grid, heights)
            if obj_bev is not None:
                bev = bev + obj_bev
        scene = self.scene_proj(tokens).to(emb_dtype)
        prompt = self._embed(batch["prompt_ids"])
        b = scene.shape[0]
        queries = self.planning_queries(self.anchors).to(emb_dtype)[None].expand(b, -1, -1)
        embeds = torch.cat([img.embeds, scene, prompt, queries], 1)
        mask = torch.cat([img.mask, tmask, batch["prompt_mask"].bool(), torch.ones(b, queries.shape[1], dtype=torch.bool, device=scene.device)], 1)
        return embeds, mask, bev, embeds.shape[1] - queries.shape[1], (img.positions, img.text_start)

    @staticmethod
    def _position_ids(mask: torch.Tensor, layout: tuple | None) -> torch.Tensor | None:
        """None without images (the decoder then numbers real tokens 0, 1, ...); with images (3, B, L):
        the image section's multimodal positions, then text positions counting real tokens on from
        the first position after the images."""
        if layout is None:
            return None
        image_pos, text_start = layout
        li = image_pos.shape[-1]
        text = text_start[:, None] + mask[:, li:].long().cumsum(-1) - 1
        return torch.cat([image_pos, text.clamp(min=0)[None].expand(3, -1, -1)], -1)

    def _decode(self, embeds, mask, past=None, position_ids=None, use_cache=False):
        if position_ids is None:
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone.get_decoder()(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids,
                                          past_key_values=past, use_cache=use_cache)
        return out.last_hidden_state, out.past_key_values

    def _query_features(self, query_states: torch.Tensor, ego_future: torch.Tensor | None = None,
                        ego_future_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The planning-query states the heads read: (B, K*M, H) LLM states -> (B, K*M, H) in the heads'
        dtype, through the conditional-VAE op with ``config.planning_cvae`` (DistillDrive: its
        posterior reads the ground-truth ego future (B, T, 2+) m, ego frame, repeated on the K*M rows,
        in training and only for samples whose T steps are all valid per ``ego_future_mask`` (B, T),
        given with ``ego_future``; the prior otherwise), and the op's KL (scalar; None without the op
        or outside training with a future)."""
        head_dtype = next(self.waypoint_head.parameters()).dtype
        q = query_states.to(head_dtype)
        if self.planning_cvae is None:
            return q, None
        b, r, _ = q.shape
        future = valid = None
        if self.training and ego_future is not None:
            future = ego_future[..., :2].to(head_dtype)[:, None].expand(b, r, -1, -1)
            valid = ego_future_mask.bool().all(-1)[:, None].expand(b, r)
        out = self.planning_cvae(q, future, valid)
        return out["features"], (out["kl"] if future is not None else None)

    def _heads(self, query_states: torch.Tensor, command: torch.Tensor, ego: torch.Tensor | None = None,
               lane_prior: torch.Tensor | None = None, idm_prior: torch.Tensor | None = None):
        """Waypoint / mode / meta-action heads on the (B, K*M, H) query features of :meth:`_query_features`
        (already in the heads' dtype)."""
        q = query_states
        use_ego = self.config.waypoint_use_ego and self.config.use_ego_status  # ablation: no kinematics, no CV pull
        waypoints, logits = self.waypoint_head(q, self.anchors, ego if use_ego else None, lane_prior=lane_prior, idm_prior=idm_prior)
        meta = None
        if self.meta_action_head is not None:
            pooled = select_command(q.reshape(q.shape[0], self.config.num_commands, self.config.num_modes, -1), command).mean(1)
            meta = self.meta_action_head(pooled)
        return waypoints, logits, meta

    # ------------------------------------------------------------------ training
    def forward(self, agents=None, agent_types=None, agents_mask=None, map_points=None, map_types=None, map_mask=None, ego=None,
                command=None, prompt_ids=None, prompt_mask=None,
                reasoning_ids=None, reasoning_mask=None, ego_future=None, ego_future_mask=None, risk_target=None, risk_valid=None,
                meta_action=None, return_dict: bool = True, pixel_values=None, image_grid_thw=None, camera_intrinsics=None,
                camera_cam2ego=None, camera_image_size=None, camera_mask=None, camera_calibrated=None, lane_prior=None,
                idm_prior=None, **unused) -> StudentOutput:
        """One training/eval forward over [scene][prompt][queries][reasoning] ([images] first with cameras),
        or [scene][prompt][reasoning][queries] for ``config.sequence_order`` reasoning_first (teacher
        forcing: the queries read the given reasoning; reasoning token j is predicted from the state
        before it, the last real prompt token for j = 0; pads masked, positions count real tokens).

        Args (B = batch; shapes from :class:`dsdrive.student.processing_student.StudentProcessor`):
            scene features (see :mod:`dsdrive.student.scene_encoder`; agents / map only with object
            inputs), camera inputs (:func:`dsdrive.student.vision_backbone.encode_cameras`; only
            with camera inputs), ego (B, 28), command (B,), prompt_ids/prompt_mask (B, P);
            reasoning_ids/reasoning_mask (B, R) teacher chain-of-thought (ends with eos);
            ego_future (B, 6, 3) + ego_future_mask (B, 6) ground truth; risk_target (B, H, W) +
            risk_valid (B,) bool; meta_action (B,) long, -100 = none; lane_prior (B, 6, 2) metres ego
            frame (read by ``config.waypoint_prior`` kinematic / kinematic_idm only; None = the CTRV rollout
            instead); idm_prior (B, 6, 2) metres ego frame (``kinematic_idm`` only; None = the lane prior), or
            (B, M, 6, 2) one proposal per mode (``idm_modes``; required).

        Returns:
            :class:`StudentOutput`; ``loss`` is the config-weighted sum of the present terms
            (waypoint L1 and mode CE need ego_future, reasoning CE needs reasoning_ids, risk L1
            needs risk_target, meta-action CE needs meta_action); None when no target is given. A
            term whose batch holds no valid target (no annotated sample: risk_valid all False,
            empty reasoning, meta_action all -100) is 0 and still graph-connected (DDP-safe).
        """
        batch = dict(agents=agents, agent_types=agent_types, agents_mask=agents_mask, map_points=map_points, map_types=map_types,
                     map_mask=map_mask, ego=ego, command=command, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                     pixel_values=pixel_values, image_grid_thw=image_grid_thw, camera_intrinsics=camera_intrinsics,
                     camera_cam2ego=camera_cam2ego, camera_image_size=camera_image_size, camera_mask=camera_mask,
                     camera_calibrated=camera_calibrated)
        embeds, mask, bev, q0, layout = self._prefix(batch)
        nq = self.config.num_queries
        r = 0
        r0 = q0 + nq  # index of the first reasoning token
        if reasoning_ids is not None and reasoning_ids.shape[1] > 0:
            r = reasoning_ids.shape[1]
            rmask = reasoning_mask.bool() if reasoning_mask is not None else torch.ones_like(reasoning_ids, dtype=torch.bool)
            if self.config.reasoning_first:  # [context][reasoning][queries]
                r0, q0 = q0, q0 + r
                embeds = torch.cat([embeds[:, :r0], self._embed(reasoning_ids), embeds[:, r0:]], 1)
                mask = torch.cat([mask[:, :r0], rmask, mask[:, r0:]], 1)
            else:
                embeds = torch.cat([embeds, self._embed(reasoning_ids)], 1)
                mask = torch.cat([mask, rmask], 1)
        hidden, _ = self._decode(embeds, mask, position_ids=self._position_ids(mask, layout))
        fmask = None
        if ego_future is not None:
            fmask = ego_future_mask if ego_future_mask is not None else torch.ones(ego_future.shape[:2], dtype=torch.bool, device=ego_future.device)
        # all 18 queries, command-major like mode_logits.flatten(1) (planning KD reads them as the heads do)
        query_states, cvae_kl = self._query_features(hidden[:, q0 : q0 + nq], ego_future, fmask)
        waypoints, logits, meta = self._heads(query_states, command, ego, lane_prior, idm_prior)
        risk_logits = self.risk_head(bev, return_logits=True)
        risk_map = torch.sigmoid(risk_logits)
        out = StudentOutput(waypoints=waypoints, mode_logits=logits, risk_map=risk_map, meta_action_logits=meta, query_states=query_states)
        w = self.config.loss_weights
        terms = {}
        if ego_future is not None:
            terms["waypoint_l1"], terms["mode_ce"] = waypoint_losses(waypoints, logits, command, ego_future, fmask)
        if cvae_kl is not None:
            terms["cvae_kl"] = cvae_kl
        if r:
            # the state before reasoning token j (the last query for j = 0; reasoning-first: the
            # last real context token, as the prompt is right-padded) predicts token j
            if self.config.reasoning_first:
                last = last_real_index(mask[:, :r0])
                first = hidden[torch.arange(hidden.shape[0], device=hidden.device), last][:, None]
                states = torch.cat([first, hidden[:, r0 : r0 + r - 1]], 1)
            else:
                states = hidden[:, r0 - 1 : r0 - 1 + r]
            rlogits = self.backbone.get_output_embeddings()(states).float()
            labels = reasoning_ids.masked_fill(~rmask, -100)
            terms["reasoning_ce"] = nn.functional.cross_entropy(rlogits.reshape(-1, rlogits.shape[-1]), labels.reshape(-1), ignore_index=-100) if bool(rmask.any()) else rlogits.sum() * 0.0
            out.reasoning_logits = rlogits
        if risk_target is not None:
            terms["risk_l1"] = risk_l1_loss(risk_map, risk_target.to(risk_map.dtype), risk_valid, self.config.risk_footprint_weight,
                                             logits=risk_logits)
        if meta_action is not None and meta is not None:
            ok = meta_action >= 0
            terms["meta_action_ce"] = nn.functional.cross_entropy(meta[ok].float(), meta_action[ok]) if bool(ok.any()) else meta.sum() * 0.0
        for k, v in terms.items():
            setattr(out, k, v)
        if terms:
            out.loss = sum(w[k] * v for k, v in terms.items())
        return out if return_dict else out.to_tuple()

    # ------------------------------------------------------------------ inference
    def _as_batch(self, batch, processor):
        if isinstance(batch, dict):
            return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if processor is None:
            raise TypeError("StudentModel: pass a tensor batch (dict) or PlanningInputs together with processor=StudentProcessor")
        inputs = batch if isinstance(batch, (list, tuple)) else [batch]
        return self._as_batch(processor(inputs), None)

    def _plan_from(self, hidden, q0, bev, command, ego=None, lane_prior=None, idm_prior=None) -> PlanOutput:
        nq = self.config.num_queries
        query_states, _ = self._query_features(hidden[:, q0 : q0 + nq])
        waypoints, logits, meta = self._heads(query_states, command, ego, lane_prior, idm_prior)
        modes, mlog = select_command(waypoints, command), select_command(logits, command)
        best, scores = mlog.argmax(-1), mlog.softmax(-1)
        modes3 = with_heading(modes)
        if self.config.plan_selection == "expected":  # score-weighted mean of the modes
            plan = with_heading((scores[..., None, None] * modes).sum(1))
        else:
            plan = modes3[torch.arange(len(best), device=best.device), best]
        return PlanOutput(waypoints=plan, mode_waypoints=modes3, mode_scores=scores, best_mode=best,
                          risk_map=self.risk_head(bev) if bev is not None else None, meta_action_logits=meta)

    @torch.no_grad()
    def plan(self, batch, processor=None, risk_map: bool = True) -> PlanOutput:
        """Plan with ONE forward pass over [scene][prompt][queries]; no generation (plan_first).

        A reasoning-first student (``config.sequence_order``) is NOT planned in one pass: the
        reasoning is generated greedily first (KV cache, at most ``config.max_new_tokens`` tokens,
        stopping at the backbone's eos), then the queries are appended and read
        (:meth:`plan_and_explain`, whose ids are dropped here); its latency grows with the
        reasoning length (``eval/bench_student.py --sequence-order reasoning_first``).

        Args:
            batch: a tensor batch from ``StudentProcessor`` (``processor(inputs)``), or
                PlanningInputs / a list of them together with ``processor``. Only inputs are read.
            risk_map: False skips what only the risk map needs (the scene's BEV splat and
                convolutions, or a camera student's PV -> BEV lift, and the RiskHead):
                ``PlanOutput.risk_map`` is None, every other field is unchanged (what
                :meth:`dsdrive.planners.student.StudentPlanner.compute_trajectories` uses).

        Returns:
            :class:`PlanOutput` for each sample's command (waypoints (B, 6, 3) ego frame).
        """
        if self.config.reasoning_first:
            return self.plan_and_explain(batch, processor, risk_map=risk_map)[0]
        batch = self._as_batch(batch, processor)
        embeds, mask, bev, q0, layout = self._prefix(batch, with_bev=risk_map)
        hidden, _ = self._decode(embeds, mask, position_ids=self._position_ids(mask, layout))
        return self._plan_from(hidden, q0, bev, batch["command"], batch["ego"], batch.get("lane_prior"), batch.get("idm_prior"))

    @torch.no_grad()
    def generate_reasoning(self, embeds, mask, max_new_tokens: int, eos_token_id: int | None, layout: tuple | None = None,
                           return_scores: bool = False):
        """Greedy decoding after a prefix with a KV cache. Returns (last prefix hidden states (B, L, H), ids (B, <=max_new_tokens)),
        plus the logits of every generated token (B, R, V) with ``return_scores``.
        ``layout``: the prefix's position layout (:meth:`_prefix`; None without images)."""
        hidden, ids, scores, _, _ = self._greedy(embeds, mask, max_new_tokens, eos_token_id, layout)
        if return_scores:
            return hidden, ids, scores
        return hidden, ids

    def _greedy(self, embeds, mask, max_new_tokens: int, eos_token_id: int | None, layout: tuple | None):
        """Greedy decoding after a prefix: (prefix hidden (B, L, H), ids (B, R), scores (B, R, V),
        the KV cache, and how many of ``ids`` the cache holds: all but the last when every row
        stopped at eos, else all). The first token is read at each row's last real prefix token."""
        position_ids = self._position_ids(mask, layout)
        hidden, past = self._decode(embeds, mask, position_ids=position_ids, use_cache=True)
        pos = mask.long().sum(-1, keepdim=True) - 1 if position_ids is None else position_ids.amax(dim=(0, 2))[:, None]
        lm_head = self.backbone.get_output_embeddings()
        logits = lm_head(hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real_index(mask)])
        tok = logits.argmax(-1)
        out, scores, done, fed = [], [], torch.zeros_like(tok, dtype=torch.bool), 0
        for _ in range(max_new_tokens):
            out.append(tok)
            scores.append(logits)
            if eos_token_id is not None:
                done = done | (tok == eos_token_id)
                if bool(done.all()):
                    break
            pos = pos + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            step = pos if position_ids is None else pos[None].expand(3, -1, -1)
            h, past = self._decode(self._embed(tok[:, None]), mask, past=past, position_ids=step, use_cache=True)
            fed += 1
            logits = lm_head(h[:, -1])
            tok = logits.argmax(-1)
        ids = torch.stack(out, 1) if out else tok.new_zeros(tok.shape[0], 0)
        scores = torch.stack(scores, 1) if scores else logits.new_zeros(logits.shape[0], 0, logits.shape[-1])
        return hidden, ids, scores, past, fed

    def _reason_then_plan(self, batch: dict, max_new_tokens: int, eos_token_id: int | None,
                          risk_map: bool = True) -> tuple[PlanOutput, torch.Tensor]:
        """Reasoning-first inference: greedy reasoning after [scene][prompt], then the queries appended
        to the KV cache read the reasoning up to each row's first eos (later ids masked)."""
        embeds, mask, bev, q0, layout = self._prefix(batch, with_bev=risk_map)
        nq = self.config.num_queries
        ctx, cmask, queries = embeds[:, :q0], mask[:, :q0], embeds[:, q0:]
        _, ids, _, past, fed = self._greedy(ctx, cmask, max_new_tokens, eos_token_id, layout)
        rmask = until_first_eos(ids, eos_token_id)
        new = torch.cat([self._embed(ids[:, fed:]), queries], 1)  # the generated id not yet in the cache, then the queries
        full = torch.cat([cmask, rmask, mask[:, q0:]], 1)
        n_new = new.shape[1]
        position_ids = self._position_ids(full, layout)
        step = (full.long().cumsum(-1) - 1).clamp(min=0)[:, -n_new:] if position_ids is None else position_ids[..., -n_new:]
        h, _ = self._decode(new, full, past=past, position_ids=step, use_cache=True)
        return self._plan_from(h, n_new - nq, bev, batch["command"], batch["ego"], batch.get("lane_prior"), batch.get("idm_prior")), ids

    @torch.no_grad()
    def plan_and_explain(self, batch, processor=None, max_new_tokens: int | None = None, eos_token_id: int | None = None,
                         risk_map: bool = True):
        """Plan and explain from one shared prefix: returns (PlanOutput, generated ids (B, R)).

        plan_first: the plan is read at the queries of [scene][prompt][queries] and the reasoning is
        generated after them. reasoning_first: one pass that generates the reasoning and then plans
        from it (see :meth:`plan`); the plan equals :meth:`plan`'s when ``max_new_tokens`` and
        ``eos_token_id`` are the defaults.

        ``max_new_tokens`` defaults to ``config.max_new_tokens``; ``eos_token_id`` to the backbone's.
        Ids after an eos are the decoder's own choice and should be cut by the caller
        (``StudentProcessor.decode_reasoning`` does); a reasoning-first plan never reads them.
        ``risk_map`` False: no risk map (None), as in :meth:`plan`.
        """
        batch = self._as_batch(batch, processor)
        if max_new_tokens is None:
            max_new_tokens = self.config.max_new_tokens
        if eos_token_id is None:
            eos_token_id = self.backbone.config.get_text_config().eos_token_id
            eos_token_id = eos_token_id[0] if isinstance(eos_token_id, (list, tuple)) else eos_token_id
        if self.config.reasoning_first:
            return self._reason_then_plan(batch, max_new_tokens, eos_token_id, risk_map)
        embeds, mask, bev, q0, layout = self._prefix(batch, with_bev=risk_map)
        hidden, ids = self.generate_reasoning(embeds, mask, max_new_tokens, eos_token_id, layout)
        return self._plan_from(hidden, q0, bev, batch["command"], batch["ego"], batch.get("lane_prior"), batch.get("idm_prior")), ids

    @torch.no_grad()
    def explain(self, batch, processor=None, max_new_tokens: int | None = None, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy chain-of-thought ids (B, R) after [scene][prompt][queries] (after [scene][prompt]
        for reasoning_first); decode with the processor."""
        return self.plan_and_explain(batch, processor, max_new_tokens, eos_token_id)[1]


def register_auto() -> None:
    """Register ``dsdrive_student`` with AutoConfig / AutoModel (idempotent)."""
    try:
        AutoConfig.register(StudentConfig.model_type, StudentConfig)
    except ValueError:
        pass
    try:
        AutoModel.register(StudentConfig, StudentModel)
    except ValueError:
        pass
