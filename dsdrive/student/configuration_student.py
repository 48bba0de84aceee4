"""Configuration of the compact student planner (DSDrive dual head + RSD RiskHead + DistillDrive vocabulary).

One :class:`StudentConfig` describes the whole model: the backbone causal LM (its config as a
dict, so a saved student needs no other file), the scene encoder, the BEV grid, the waypoint
head, the RiskHead and the loss weights. The processor (:mod:`dsdrive.student.processing_student`)
reads the same config for its caps and grid, so features and model can never disagree.

BEV grid (ego frame of the current time, x forward, y left, metres): rows index x over
``[bev_x_min, bev_x_max)`` and columns index y over ``[bev_y_min, bev_y_max)``; the default is
x in [-16, 48) m and y in [-32, 32) m on 32 x 32 cells of 2 m, i.e. 48 m ahead, 16 m behind.

Scene inputs (``scene_inputs``): ``objects`` (the default, the object-token student: ego, agent and
map tokens from a scene encoder), ``cameras`` (the camera student: a vision-language backbone reads
the camera images; agents and map are never read, only the ego status / history / command token,
which is not perception), or ``both``.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from dsdrive.annotation.schema import BEHAVIOURS, SPEEDS
from dsdrive.data.types import AGENT_TYPES, CAMERA_NAMES, COMMANDS, FUTURE_STEPS, MAP_TYPES
from dsdrive.student.backbone import tiny_qwen2_config
from dsdrive.student.lane_prior import IDM_MIN_SPEED_MPS
from dsdrive.student.waypoint_head import WAYPOINT_PRIORS

DEFAULT_LOSS_WEIGHTS = {
    "waypoint_l1": 1.0,
    "mode_ce": 0.5,
    "reasoning_ce": 1.0,
    "risk_l1": 1.0,
    "meta_action_ce": 0.2,
    "cvae_kl": 1.0,
}
"""Weights of the loss terms (DSDrive: lambda1 L1(wp) + lambda2 CE(text); DistillDrive: plan
L1 + mode classification; RSD: L_risk; GPT-Driver meta-action as an auxiliary classification;
DistillDrive's conditional-VAE KL(posterior || prior), a term only with ``planning_cvae``)."""


PLAN_SELECTIONS = ("best", "expected")
"""Values of :attr:`StudentConfig.plan_selection`."""

SEQUENCE_ORDERS = ("plan_first", "reasoning_first")
"""Values of :attr:`StudentConfig.sequence_order`."""
SCENE_INPUTS = ("objects", "cameras", "both")
"""Values of :attr:`StudentConfig.scene_inputs`."""
VISION_TOWER_MODES = ("frozen", "lora", "train")
"""Values of :attr:`StudentConfig.vision_tower`: how training treats the VLM's vision tower."""
DEFAULT_LIFT_HEIGHTS = (0.25, 0.75, 1.25, 1.75)
"""Heights (m above the ego origin, which nuScenes puts on the ground) at which BEV cell centres are
projected into the cameras: they span the 0-2 m where most road users are (nuScenes-0061 box
centres: 0.36-2.8 m, median 0.80 m)."""
DEFAULT_MIN_PIXELS = 28 * 28 * 16
DEFAULT_MAX_PIXELS = 28 * 28 * 64
"""Per-image pixel budget of the camera student (one vision token per 28 x 28 pixels): 16-64 tokens
per camera, 300 for six nuScenes cameras (1600 x 900 -> 280 x 140 pixels, 5 x 10 tokens each)."""


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
        waypoint_prior: ``cv_gate`` (default: anchors pulled towards the CV rollout by a learned gate)
            or ``kinematic`` (a zero-initialised residual over a learned blend of constant velocity,
            CTRV and lane following, with the speed trend fed to the head; the processor then adds
            the ``lane_prior`` batch key), see :class:`dsdrive.student.waypoint_head.WaypointHead`; or
            ``kinematic_idm``: the same + a fourth prior, PDM-Closed's IDM along the command's lane
            (batch key ``idm_prior``, :func:`dsdrive.student.lane_prior.lane_idm_prior`); or
            ``idm_modes``: each mode is a lane-IDM proposal at its own target speed (0 … 15 m/s) plus a
            residual (batch key ``idm_prior`` (B, M, 6, 2), :func:`dsdrive.student.lane_prior.lane_idm_proposals`).
        idm_prior_min_speed: lowest target speed (m/s) of that IDM prior (``kinematic_idm`` only).
        planning_cvae: add DistillDrive's conditional VAE op on the planning queries, where its
            student places it (:class:`dsdrive.distilldrive.cvae.ConditionalVAE`, FIERY-style): the
            18 query states the LLM returns get a residual update decoded from a latent z (32),
            z from a prior over the query state, or in training from a posterior over the
            ground-truth ego future (repeated on the 18 rows), with KL(posterior || prior) as the
            loss term ``cvae_kl`` (weight ``loss_weights["cvae_kl"]``, 1.0); the waypoint head,
            the meta-action head and planning KD read the updated states. Inference samples the
            prior with a fixed noise row per query (deterministic). False (default): no op.
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
        scene_inputs: ``objects`` | ``cameras`` | ``both`` (module docstring). With cameras the
            backbone is a vision-language model (``AutoModelForImageTextToText``; the Qwen2-VL family,
            :mod:`dsdrive.student.vision_backbone`) and ``backbone_config`` None means the embedded
            tiny Qwen2.5-VL (:func:`dsdrive.student.tiny_vl.tiny_qwen_vl_config`).
        cameras: camera names read, in this order (default the six nuScenes cameras).
        min_pixels / max_pixels: per-image pixel budget of the image processor (multiples of
            28 x 28 = one vision token); intrinsics are rescaled to the resized image.
        lift_heights: heights (m, ego frame) of the PV -> BEV lift (:mod:`dsdrive.student.pv_bev_lift`).
        allow_missing_cameras: False = a sample without one of ``cameras`` (or its image file) is an
            error naming the sample and camera; True = that camera is masked (no tokens, not lifted).
        vision_tower: ``frozen`` (no gradient), ``lora`` (LoRA adapters on the vision blocks' qkv /
            proj, with ``use_lora``) or ``train`` (trained in full, without LoRA) during distillation.
        sequence_order: ``plan_first`` (default) = [scene][prompt][queries][reasoning]: the plan is
            one forward pass and the reasoning explains the plan; ``reasoning_first`` =
            [scene][prompt][reasoning][queries], as DSDrive intends: the planning queries attend to
            the chain-of-thought, so :meth:`StudentModel.plan` first generates the reasoning
            greedily (KV cache) and then reads the queries (no longer one forward pass).
        max_new_tokens: cap on the reasoning tokens generated by ``plan()`` of a reasoning-first
            student (generation stops earlier at eos); >= 1.

    Raises:
        ValueError: a field out of its range (names the field and value).
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
        waypoint_prior: str = "cv_gate",
        idm_prior_min_speed: float = IDM_MIN_SPEED_MPS,
        use_ego_status: bool = True,
        planning_cvae: bool = False,
        plan_selection: str = "best",
        scene_inputs: str = "objects",
        cameras: list[str] | tuple[str, ...] = CAMERA_NAMES,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        lift_heights: list[float] | tuple[float, ...] = DEFAULT_LIFT_HEIGHTS,
        allow_missing_cameras: bool = False,
        vision_tower: str = "frozen",
        sequence_order: str = "plan_first",
        max_new_tokens: int = 160,
        **kwargs,
    ):
        if scene_inputs not in SCENE_INPUTS:
            raise ValueError(f"StudentConfig: field 'scene_inputs' is {scene_inputs!r}; expected one of {SCENE_INPUTS}")
        if vision_tower not in VISION_TOWER_MODES:
            raise ValueError(f"StudentConfig: field 'vision_tower' is {vision_tower!r}; expected one of {VISION_TOWER_MODES}")
        unknown_cams = [c for c in cameras if c not in CAMERA_NAMES]
        if not cameras or unknown_cams or len(set(cameras)) != len(cameras):
            raise ValueError(f"StudentConfig: field 'cameras' is {list(cameras)}; expected distinct names among {CAMERA_NAMES}")
        if not 0 < int(min_pixels) <= int(max_pixels):
            raise ValueError(f"StudentConfig: pixel budget min_pixels={min_pixels}, max_pixels={max_pixels}; need 0 < min_pixels <= max_pixels")
        if not lift_heights:
            raise ValueError("StudentConfig: field 'lift_heights' is empty; give at least one height (m)")
        self.scene_inputs = scene_inputs
        self.cameras = list(cameras)
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.lift_heights = [float(h) for h in lift_heights]
        self.allow_missing_cameras = bool(allow_missing_cameras)
        self.vision_tower = vision_tower
        if backbone_config is None and scene_inputs != "objects":
            from dsdrive.student.tiny_vl import tiny_qwen_vl_config

            backbone_config = tiny_qwen_vl_config(vocab_size=1024).to_dict()
        elif backbone_config is None:
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
        if waypoint_prior not in WAYPOINT_PRIORS:
            raise ValueError(f"StudentConfig: field 'waypoint_prior' is {waypoint_prior!r}; expected one of {WAYPOINT_PRIORS}")
        self.waypoint_prior = waypoint_prior
        if not float(idm_prior_min_speed) >= 0:
            raise ValueError(f"StudentConfig: field 'idm_prior_min_speed' is {idm_prior_min_speed!r}; expected >= 0 (m/s)")
        self.idm_prior_min_speed = float(idm_prior_min_speed)
        self.use_ego_status = bool(use_ego_status)
        self.planning_cvae = bool(planning_cvae)
        if plan_selection not in PLAN_SELECTIONS:
            raise ValueError(f"StudentConfig: field 'plan_selection' is {plan_selection!r}; expected one of {PLAN_SELECTIONS}")
        self.plan_selection = plan_selection
        if sequence_order not in SEQUENCE_ORDERS:
            raise ValueError(f"StudentConfig: field 'sequence_order' is {sequence_order!r}; expected one of {SEQUENCE_ORDERS}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"StudentConfig: field 'max_new_tokens' is {max_new_tokens!r}; expected an integer >= 1")
        self.sequence_order = sequence_order
        self.max_new_tokens = max_new_tokens
        super().__init__(**kwargs)

    @property
    def reasoning_first(self) -> bool:
        """The planning queries sit after the reasoning (``sequence_order`` reasoning_first)."""
        return self.sequence_order == "reasoning_first"

    @property
    def num_queries(self) -> int:
        """Planning query tokens: num_commands x num_modes (18 by default)."""
        return self.num_commands * self.num_modes

    @property
    def reads_objects(self) -> bool:
        """The student reads agent / map object tokens (``scene_inputs`` objects or both)."""
        return self.scene_inputs in ("objects", "both")

    @property
    def reads_cameras(self) -> bool:
        """The student reads camera images (``scene_inputs`` cameras or both)."""
        return self.scene_inputs in ("cameras", "both")

    @property
    def num_scene_tokens(self) -> int:
        """Upper bound on scene tokens: 1 ego + max_agents + max_map."""
        return 1 + self.max_agents + self.max_map

    def backbone_hf_config(self) -> PretrainedConfig:
        """The backbone config as a transformers config object (``AutoConfig.for_model``)."""
        d = dict(self.backbone_config)
        return AutoConfig.for_model(d.pop("model_type"), **d)
