"""The compact student planner: scene encoder -> causal LM -> {waypoints | reasoning text} + BEV RiskHead.

Methods: DSDrive (arXiv 2505.05360) waypoint-driven dual head (a compact LLM learns a teacher's
chain-of-thought while a waypoint head regresses the plan from its hidden states); DistillDrive
(arXiv 2508.05402) planning vocabulary with 3 commands x 6 modes of planning queries; RSD
(arXiv 2511.14499) RiskHead on BEV features trained on a VLM's per-object risk.

Sequence layout fed to the backbone as ``inputs_embeds`` (causal attention, padding masked,
position ids = cumulative count of real tokens, so padding never shifts a position):

    [scene tokens: ego, N agents, M polylines][prompt tokens][18 planning queries][reasoning tokens]

The 18 planning queries (one per (command, mode), :data:`dsdrive.data.types.COMMANDS` order, each a
learned embedding plus an embedding of its vocabulary anchor) see the scene and the prompt; the
reasoning tokens see the queries too, so the text explains the plan that the queries carry.
The waypoint head also reads the ego's current kinematics (``batch["ego"]``, no future) directly:
each mode is pulled towards the constant-velocity rollout and the mode logits get a CV-consistency
prior (see :class:`dsdrive.student.waypoint_head.WaypointHead`).
:meth:`StudentModel.plan` is ONE forward pass over [scene][prompt][queries] (never generation);
:meth:`StudentModel.explain` continues greedily after the queries with a KV cache.

All coordinates are in the ego frame of the current time (x forward, y left, metres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel
from transformers.utils import ModelOutput

from dsdrive.constants import STEP_SECONDS
from dsdrive.student.bev import BevGrid
from dsdrive.student.configuration_student import StudentConfig
from dsdrive.student.risk_head import RiskHead, risk_l1_loss
from dsdrive.student.scene_encoder import SceneEncoder
from dsdrive.student.waypoint_head import WaypointHead, select_command, waypoint_losses, with_heading

SCENE_KEYS = ("agents", "agent_types", "agents_mask", "map_points", "map_types", "map_mask", "ego", "command")


@dataclass
class StudentOutput(ModelOutput):
    """Output of :meth:`StudentModel.forward`. Loss terms are None when their target is absent.

    waypoints (B, K, M, T, 2) metres ego frame; mode_logits (B, K, M); risk_map (B, H, W) in [0, 1];
    meta_action_logits (B, 36); reasoning_logits (B, R, V) predicting each reasoning token;
    query_states (B, K*M, H) final hidden states of all planning queries (index = command * M + mode,
    the order of ``mode_logits.flatten(1)``), read by planning KD (:mod:`dsdrive.training.planning_kd`).
    """

    loss: torch.Tensor | None = None
    waypoint_l1: torch.Tensor | None = None
    mode_ce: torch.Tensor | None = None
    reasoning_ce: torch.Tensor | None = None
    risk_l1: torch.Tensor | None = None
    meta_action_ce: torch.Tensor | None = None
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

    Submodules: ``backbone`` (any causal LM), ``scene_encoder``, ``scene_proj`` (scene width ->
    LLM hidden), ``planning_queries``, ``waypoint_head``, ``risk_head``, ``meta_action_head``
    (optional; classifies BEHAVIOURS x SPEEDS from the mean hidden state of the command's 6
    query tokens). Buffer ``anchors`` (K, M, T, 2): the planning vocabulary, persistent, so it
    travels with the checkpoint.

    Args:
        config: the student config.
        backbone: an already-loaded causal LM (e.g. pretrained, or quantized for QLoRA); None
            builds a randomly initialised one from ``config.backbone_config``.
    """

    config_class = StudentConfig
    base_model_prefix = "student"
    main_input_name = "prompt_ids"
    _no_split_modules = []

    def __init__(self, config: StudentConfig, backbone: PreTrainedModel | None = None):
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModelForCausalLM.from_config(config.backbone_hf_config())
        hidden = self.backbone.config.get_text_config().hidden_size
        self.grid = BevGrid.from_config(config)
        self.scene_encoder = SceneEncoder(config.scene_dim, config.scene_layers, config.scene_heads, config.num_agent_types,
                                          config.num_map_types, config.num_commands, self.grid, config.position_scale)
        self.scene_proj = nn.Sequential(nn.Linear(config.scene_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.planning_queries = PlanningQueries(config.num_queries, hidden, config.future_steps)
        self.waypoint_head = WaypointHead(hidden, config.num_commands, config.num_modes, config.future_steps,
                                          config.waypoint_offset_scale, config.waypoint_cv_gate_init)
        self.risk_head = RiskHead(config.scene_dim, config.bev_height, config.bev_width, config.risk_layers, config.risk_heads,
                                  config.risk_points, config.risk_query_stride)
        self.meta_action_head = (nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, config.num_meta_actions))
                                 if config.use_meta_action_head else None)
        anchors = torch.from_numpy(default_anchors(config.num_commands, config.num_modes, config.future_steps))
        self.register_buffer("anchors", anchors, persistent=True)
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

    def _prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """[scene][prompt][queries] embeddings (B, L, H), mask (B, L), the BEV map, and the query start index."""
        if not self.config.use_ego_status:  # ego-status ablation: the ego token sees no status / history
            batch = {**batch, "ego": torch.zeros_like(batch["ego"])}
        tokens, tmask, bev = self.scene_encoder(*(batch[k] for k in SCENE_KEYS))
        emb_dtype = self.backbone.get_input_embeddings().weight.dtype
        scene = self.scene_proj(tokens).to(emb_dtype)
        prompt = self._embed(batch["prompt_ids"])
        b = scene.shape[0]
        queries = self.planning_queries(self.anchors).to(emb_dtype)[None].expand(b, -1, -1)
        embeds = torch.cat([scene, prompt, queries], 1)
        mask = torch.cat([tmask, batch["prompt_mask"].bool(), torch.ones(b, queries.shape[1], dtype=torch.bool, device=scene.device)], 1)
        return embeds, mask, bev, embeds.shape[1] - queries.shape[1]

    def _decode(self, embeds, mask, past=None, position_ids=None, use_cache=False):
        if position_ids is None:
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone.get_decoder()(inputs_embeds=embeds, attention_mask=mask.long(), position_ids=position_ids,
                                          past_key_values=past, use_cache=use_cache)
        return out.last_hidden_state, out.past_key_values

    def _heads(self, query_states: torch.Tensor, command: torch.Tensor, ego: torch.Tensor | None = None):
        head_dtype = next(self.waypoint_head.parameters()).dtype
        q = query_states.to(head_dtype)
        use_ego = self.config.waypoint_use_ego and self.config.use_ego_status  # ablation: no kinematics, no CV pull
        waypoints, logits = self.waypoint_head(q, self.anchors, ego if use_ego else None)
        meta = None
        if self.meta_action_head is not None:
            pooled = select_command(q.reshape(q.shape[0], self.config.num_commands, self.config.num_modes, -1), command).mean(1)
            meta = self.meta_action_head(pooled)
        return waypoints, logits, meta

    # ------------------------------------------------------------------ training
    def forward(self, agents, agent_types, agents_mask, map_points, map_types, map_mask, ego, command, prompt_ids, prompt_mask,
                reasoning_ids=None, reasoning_mask=None, ego_future=None, ego_future_mask=None, risk_target=None, risk_valid=None,
                meta_action=None, return_dict: bool = True, **unused) -> StudentOutput:
        """One training/eval forward over [scene][prompt][queries][reasoning].

        Args (B = batch; shapes from :class:`dsdrive.student.processing_student.StudentProcessor`):
            scene features (see :mod:`dsdrive.student.scene_encoder`), prompt_ids/prompt_mask (B, P);
            reasoning_ids/reasoning_mask (B, R) teacher chain-of-thought (ends with eos);
            ego_future (B, 6, 3) + ego_future_mask (B, 6) ground truth; risk_target (B, H, W) +
            risk_valid (B,) bool; meta_action (B,) long, -100 = none.

        Returns:
            :class:`StudentOutput`; ``loss`` is the config-weighted sum of the present terms
            (waypoint L1 and mode CE need ego_future, reasoning CE needs reasoning_ids, risk L1
            needs risk_target, meta-action CE needs meta_action); None when no target is given. A
            term whose batch holds no valid target (no annotated sample: risk_valid all False,
            empty reasoning, meta_action all -100) is 0 and still graph-connected (DDP-safe).
        """
        batch = dict(agents=agents, agent_types=agent_types, agents_mask=agents_mask, map_points=map_points, map_types=map_types,
                     map_mask=map_mask, ego=ego, command=command, prompt_ids=prompt_ids, prompt_mask=prompt_mask)
        embeds, mask, bev, q0 = self._prefix(batch)
        nq = self.config.num_queries
        r = 0
        if reasoning_ids is not None and reasoning_ids.shape[1] > 0:
            r = reasoning_ids.shape[1]
            rmask = reasoning_mask.bool() if reasoning_mask is not None else torch.ones_like(reasoning_ids, dtype=torch.bool)
            embeds = torch.cat([embeds, self._embed(reasoning_ids)], 1)
            mask = torch.cat([mask, rmask], 1)
        hidden, _ = self._decode(embeds, mask)
        waypoints, logits, meta = self._heads(hidden[:, q0 : q0 + nq], command, ego)
        query_states = hidden[:, q0 : q0 + nq]  # all 18 queries, command-major like mode_logits.flatten(1) (planning KD)
        risk_logits = self.risk_head(bev, return_logits=True)
        risk_map = torch.sigmoid(risk_logits)
        out = StudentOutput(waypoints=waypoints, mode_logits=logits, risk_map=risk_map, meta_action_logits=meta, query_states=query_states)
        w = self.config.loss_weights
        terms = {}
        if ego_future is not None:
            fmask = ego_future_mask if ego_future_mask is not None else torch.ones(ego_future.shape[:2], dtype=torch.bool, device=ego_future.device)
            terms["waypoint_l1"], terms["mode_ce"] = waypoint_losses(waypoints, logits, command, ego_future, fmask)
        if r:
            # the state before reasoning token j (the last query for j = 0) predicts token j
            states = hidden[:, q0 + nq - 1 : q0 + nq - 1 + r]
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

    def _plan_from(self, hidden, q0, bev, command, ego=None) -> PlanOutput:
        nq = self.config.num_queries
        waypoints, logits, meta = self._heads(hidden[:, q0 : q0 + nq], command, ego)
        modes, mlog = select_command(waypoints, command), select_command(logits, command)
        best, scores = mlog.argmax(-1), mlog.softmax(-1)
        modes3 = with_heading(modes)
        if self.config.plan_selection == "expected":  # score-weighted mean of the modes
            plan = with_heading((scores[..., None, None] * modes).sum(1))
        else:
            plan = modes3[torch.arange(len(best), device=best.device), best]
        return PlanOutput(waypoints=plan, mode_waypoints=modes3,
                          mode_scores=scores, best_mode=best, risk_map=self.risk_head(bev), meta_action_logits=meta)

    @torch.no_grad()
    def plan(self, batch, processor=None) -> PlanOutput:
        """Plan with ONE forward pass over [scene][prompt][queries]; no generation.

        Args:
            batch: a tensor batch from ``StudentProcessor`` (``processor(inputs)``), or
                PlanningInputs / a list of them together with ``processor``. Only inputs are read.

        Returns:
            :class:`PlanOutput` for each sample's command (waypoints (B, 6, 3) ego frame).
        """
        batch = self._as_batch(batch, processor)
        embeds, mask, bev, q0 = self._prefix(batch)
        hidden, _ = self._decode(embeds, mask)
        return self._plan_from(hidden, q0, bev, batch["command"], batch["ego"])

    @torch.no_grad()
    def generate_reasoning(self, embeds, mask, max_new_tokens: int, eos_token_id: int | None):
        """Greedy decoding after a prefix with a KV cache. Returns (last prefix hidden states (B, L, H), ids (B, <=max_new_tokens))."""
        hidden, past = self._decode(embeds, mask, use_cache=True)
        pos = mask.long().sum(-1, keepdim=True) - 1
        lm_head = self.backbone.get_output_embeddings()
        tok = lm_head(hidden[:, -1]).argmax(-1)
        out, done = [], torch.zeros_like(tok, dtype=torch.bool)
        for _ in range(max_new_tokens):
            out.append(tok)
            if eos_token_id is not None:
                done = done | (tok == eos_token_id)
                if bool(done.all()):
                    break
            pos = pos + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            h, past = self._decode(self._embed(tok[:, None]), mask, past=past, position_ids=pos, use_cache=True)
            tok = lm_head(h[:, -1]).argmax(-1)
        return hidden, torch.stack(out, 1) if out else tok.new_zeros(tok.shape[0], 0)

    @torch.no_grad()
    def plan_and_explain(self, batch, processor=None, max_new_tokens: int = 128, eos_token_id: int | None = None):
        """Plan and explain from one shared prefix: returns (PlanOutput, generated ids (B, R)).

        ``eos_token_id`` defaults to the backbone's; ids after an eos are the decoder's own choice
        and should be cut by the caller (``StudentProcessor.decode_reasoning`` does).
        """
        batch = self._as_batch(batch, processor)
        if eos_token_id is None:
            eos_token_id = self.backbone.config.eos_token_id
            eos_token_id = eos_token_id[0] if isinstance(eos_token_id, (list, tuple)) else eos_token_id
        embeds, mask, bev, q0 = self._prefix(batch)
        hidden, ids = self.generate_reasoning(embeds, mask, max_new_tokens, eos_token_id)
        return self._plan_from(hidden, q0, bev, batch["command"], batch["ego"]), ids

    @torch.no_grad()
    def explain(self, batch, processor=None, max_new_tokens: int = 128, eos_token_id: int | None = None) -> torch.Tensor:
        """Greedy chain-of-thought ids (B, R) after [scene][prompt][queries] (decode with the processor)."""
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
