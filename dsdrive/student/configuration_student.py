"""Configuration of the compact student planner (DSDrive dual head + RSD RiskHead + DistillDrive vocabulary).

One :class:`StudentConfig` describes the whole model: the backbone causal LM (its config as a
dict, so a saved student needs no other file), the scene encoder, the BEV grid, the waypoint
head, the RiskHead and the loss weights. The processor (:mod:`dsdrive.student.processing_student`)
reads the same config for its caps and grid, so features and model can never disagree.

BEV grid (ego frame of the current time, x forward, y left, metres): rows index x over
``[bev_x_min, bev_x_max)`` and columns index y over ``[bev_y_min, bev_y_max)``; the default is
x in [-16, 48) m and y in [-32, 32) m on 32 x 32 cells of 2 m, i.e. 48 m ahead, 16 m behind.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from dsdrive.annotation.schema import BEHAVIOURS, SPEEDS
from dsdrive.data.types import AGENT_TYPES, COMMANDS, FUTURE_STEPS, MAP_TYPES
from dsdrive.student.backbone import tiny_qwen2_config

DEFAULT_LOSS_WEIGHTS = {
    "waypoint_l1": 1.0,
    "mode_ce": 0.5,
    "reasoning_ce": 1.0,
    "risk_l1": 1.0,
    "meta_action_ce": 0.2,
}
"""Weights of the loss terms (DSDrive: lambda1 L1(wp) + lambda2 CE(text); DistillDrive: plan
L1 + mode classification; RSD: L_risk; GPT-Driver meta-action as an auxiliary classification)."""


PLAN_SELECTIONS = ("best", "expected")
"""Values of :attr:`StudentConfig.plan_selection`."""


class StudentConfig(PretrainedConfig):
    """Config of :class:`dsdrive.student.modeling_student.StudentModel` (model_type ``dsdrive_student``).

    Args:
        backbone_config: the causal LM's config as a dict (``PretrainedConfig.to_dict()``, with
            ``model_type``); the backbone is rebuilt from it, its weights come from the student's
            safetensors, so ``from_pretrained`` of a saved student needs no other file. None ->
            the embedded tiny Qwen2 of :func:`dsdrive.student.backbone.tiny_qwen2_config`.
        backbone_name_or_path: where the backbone weights were first taken from (provenance only).
        scene_dim: width of the scene encoder and of the BEV features.
        scene_layers / scene_heads: transformer encoder over [ego, agents, map] tokens.
        max_agents / max_map: caps N, M (nearest to the ego kept).
        num_commands / num_modes / future_steps: planning vocabulary (3, 6, 6, 2) -> 18 queries,
            one per (command, mode), in :data:`dsdrive.data.types.COMMANDS` order.
        bev_*: BEV grid extent (metres, ego frame) and size (cells).
        risk_*: RiskHead (deformable attention; queries at ``risk_query_stride``).
        risk_footprint_weight: weight of the L1 term restricted to agent footprints (see
            :func:`dsdrive.student.risk_head.risk_l1_loss`).
        use_meta_action_head: add a classifier over BEHAVIOURS x SPEEDS (36 classes).
        loss_weights: dict over :data:`DEFAULT_LOSS_WEIGHTS` keys; missing keys take the default.
        position_scale: metres dividing positions before the encoder MLPs.
        waypoint_offset_scale: metres per unit of the waypoint head's regression output.
        waypoint_cv_gate_init: initial pull of each mode towards the ego's constant-velocity
            rollout (0 = anchors + offsets only), see :class:`dsdrive.student.waypoint_head.WaypointHead`.
        waypoint_use_ego: feed the ego kinematics straight to the waypoint head (and the CV prior).
        use_ego_status: False = the ego-status ablation (AD-MLP, Zhai et al. 2023, arXiv 2305.10430;
            Li et al., CVPR 2024, "Is Ego Status All You Need for Open-Loop End-to-End Autonomous
            Driving?"): the student reads neither the ego status (speed, acceleration, yaw rate,
            steering) nor the ego history anywhere. The processor masks both in the inputs (the
            prompt then says "unknown" / "n/a"), the model zeroes the (B, 28) ego vector before the
            scene encoder's ego token and gives the waypoint head no ego kinematics (no
            constant-velocity pull or prior: anchors + offsets), so the plan comes from the agents,
            the map, the command and the LLM only. True (default) changes nothing.
        plan_selection: how :meth:`StudentModel.plan` turns the command's modes into one plan:
            ``"best"`` = the highest-scoring mode (DistillDrive), ``"expected"`` = the mode-score
            weighted mean of the modes (the minimiser of the expected squared L2 under the
            predicted mode distribution).
    """

    model_type = "dsdrive_student"

    def __init__(
        self,
        backbone_config: dict | None = None,
        backbone_name_or_path: str | None = None,
        scene_dim: int = 64,
        scene_layers: int = 2,
        scene_heads: int = 4,
        max_agents: int = 32,
        max_map: int = 48,
        num_commands: int = len(COMMANDS),
        num_modes: int = 6,
        future_steps: int = FUTURE_STEPS,
        num_agent_types: int = len(AGENT_TYPES),
        num_map_types: int = len(MAP_TYPES),
        bev_x_min: float = -16.0,
        bev_x_max: float = 48.0,
        bev_y_min: float = -32.0,
        bev_y_max: float = 32.0,
        bev_height: int = 32,
        bev_width: int = 32,
        risk_layers: int = 1,
        risk_heads: int = 4,
        risk_points: int = 4,
        risk_query_stride: int = 2,
        risk_footprint_weight: float = 1.0,
        use_meta_action_head: bool = True,
        num_meta_actions: int = len(BEHAVIOURS) * len(SPEEDS),
        loss_weights: dict | None = None,
        position_scale: float = 50.0,
        waypoint_offset_scale: float = 2.0,
        waypoint_cv_gate_init: float = 0.5,
        waypoint_use_ego: bool = True,
        use_ego_status: bool = True,
        plan_selection: str = "best",
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = tiny_qwen2_config(vocab_size=1024).to_dict()
        elif isinstance(backbone_config, PretrainedConfig):
            backbone_config = backbone_config.to_dict()
        if "model_type" not in backbone_config:
            raise ValueError(f"StudentConfig: field 'backbone_config' has no 'model_type' (keys {sorted(backbone_config)[:8]}...)")
        self.backbone_config = dict(backbone_config)
        self.backbone_name_or_path = backbone_name_or_path
        self.scene_dim = scene_dim
        self.scene_layers = scene_layers
        self.scene_heads = scene_heads
        self.max_agents = max_agents
        self.max_map = max_map
        self.num_commands = num_commands
        self.num_modes = num_modes
        self.future_steps = future_steps
        self.num_agent_types = num_agent_types
        self.num_map_types = num_map_types
        self.bev_x_min, self.bev_x_max = float(bev_x_min), float(bev_x_max)
        self.bev_y_min, self.bev_y_max = float(bev_y_min), float(bev_y_max)
        self.bev_height, self.bev_width = int(bev_height), int(bev_width)
        if self.bev_x_max <= self.bev_x_min or self.bev_y_max <= self.bev_y_min:
            raise ValueError(f"StudentConfig: empty BEV extent x [{bev_x_min}, {bev_x_max}) y [{bev_y_min}, {bev_y_max})")
        if bev_height % risk_query_stride or bev_width % risk_query_stride:
            raise ValueError(f"StudentConfig: risk_query_stride={risk_query_stride} must divide the BEV size {bev_height}x{bev_width}")
        self.risk_layers = risk_layers
        self.risk_heads = risk_heads
        self.risk_points = risk_points
        self.risk_query_stride = risk_query_stride
        self.risk_footprint_weight = risk_footprint_weight
        self.use_meta_action_head = use_meta_action_head
        self.num_meta_actions = num_meta_actions
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"StudentConfig: field 'loss_weights' has unknown keys {sorted(unknown)}; known {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.position_scale = position_scale
        self.waypoint_offset_scale = float(waypoint_offset_scale)
        self.waypoint_cv_gate_init = float(waypoint_cv_gate_init)
        self.waypoint_use_ego = bool(waypoint_use_ego)
        self.use_ego_status = bool(use_ego_status)
        if plan_selection not in PLAN_SELECTIONS:
            raise ValueError(f"StudentConfig: field 'plan_selection' is {plan_selection!r}; expected one of {PLAN_SELECTIONS}")
        self.plan_selection = plan_selection
        super().__init__(**kwargs)

    @property
    def num_queries(self) -> int:
        """Planning query tokens: num_commands x num_modes (18 by default)."""
        return self.num_commands * self.num_modes

    @property
    def num_scene_tokens(self) -> int:
        """Upper bound on scene tokens: 1 ego + max_agents + max_map."""
        return 1 + self.max_agents + self.max_map

    def backbone_hf_config(self) -> PretrainedConfig:
        """The backbone config as a transformers config object (``AutoConfig.for_model``)."""
        d = dict(self.backbone_config)
        return AutoConfig.for_model(d.pop("model_type"), **d)
