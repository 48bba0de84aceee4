"""Processor of the student: PlanningInputs/PlanningSample -> padded tensor batches.

* :class:`SceneFeaturizer` reads :class:`dsdrive.data.types.PlanningInputs` ONLY (a dataset row, a
  simulator state or a detector's output) and returns numpy scene features in the ego frame.
* :class:`StudentProcessor` adds the text prompt (:func:`dsdrive.annotation.reasoning.render_student_prompt`,
  inputs only) and, for training samples, targets read only from ``PlanningSample.targets`` and
  the annotation: ego_future (6, 3) + mask, reasoning ids (teacher chain-of-thought via
  :func:`dsdrive.annotation.reasoning.render_reasoning`, then eos), the BEV risk target
  (:func:`dsdrive.student.bev.rasterize_risk` of ``Annotation.risks``) and the meta-action class.
* :meth:`StudentProcessor.collate` (also :class:`StudentDataCollator`) pads to the batch maximum.
* A camera student (``config.scene_inputs`` ``cameras`` / ``both``) also needs the VLM's image
  processor: each sample's camera images, patches and calibration come from
  :func:`dsdrive.student.vision_backbone.encode_cameras`; with ``cameras`` no agent or map feature
  is built (the batch has no agents / map keys), only the ego vector and the command.

Batch keys and shapes (B samples, N agents, M polylines, P prompt, R reasoning tokens, at least 1
each so no tensor is empty): agents (B, N, 9) float, agent_types (B, N) long, agents_mask (B, N)
bool, map_points (B, M, 20, 2), map_types (B, M), map_mask (B, M), ego (B, 28), command (B,),
prompt_ids (B, P), prompt_mask (B, P), lane_prior (B, 6, 2) (only with ``config.waypoint_prior`` kinematic or
kinematic_idm: :func:`dsdrive.student.lane_prior.lane_following_prior`, ego frame, metres), idm_prior (B, 6, 2)
(only with kinematic_idm: :func:`dsdrive.student.lane_prior.lane_idm_prior`, ego frame, metres; with idm_modes
(B, M, 6, 2): :func:`dsdrive.student.lane_prior.lane_idm_proposals` at :func:`~dsdrive.student.lane_prior.idm_mode_targets`); targets: ego_future (B, 6, 3), ego_future_mask (B, 6),
reasoning_ids (B, R), reasoning_mask (B, R), risk_target (B, H, W), risk_valid (B,), meta_action (B,) (-100 = none).
Camera keys (N = ``len(config.cameras)``): pixel_values (patches of the B*N images, D), image_grid_thw
(B*N, 3), camera_intrinsics (B, N, 3, 3), camera_cam2ego (B, N, 4, 4), camera_image_size (B, N, 2),
camera_mask (B, N), camera_calibrated (B, N).

Token-level KD (:mod:`dsdrive.training.token_kd`): ``encode_sample(sample, teacher_tokens=...)``
takes an annotator's cached :class:`dsdrive.annotation.logprobs.TokenLogprobs`; the reasoning
target is then exactly the annotator's generated token ids (one tokenizer on both sides, checked
by fingerprint when the cache is loaded), plus this tokenizer's eos when they do not end with it,
and the batch carries the cached top-k aligned with the reasoning tokens:
teacher_topk_ids (B, R, k) long, teacher_topk_logprobs (B, R, k) float (-inf pads) and
teacher_token_mask (B, R) bool (False on padding and on an appended eos). With
``teacher_tokens_cross_tokenizer`` (ULD) the target is this tokenizer's encoding of the annotator's
text instead, and the cached top-k stays in the annotator's positions (paired by index).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoTokenizer

from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.annotation.reasoning import render_reasoning, render_student_prompt
from dsdrive.annotation.schema import Annotation
from dsdrive.student.bev import BevGrid, rasterize_risk
from dsdrive.student.configuration_student import StudentConfig
from dsdrive.student.lane_prior import IDM_MIN_SPEED_MPS, idm_mode_targets, lane_following_prior, lane_idm_prior, lane_idm_proposals
from dsdrive.student.waypoint_head import KINEMATIC_PRIORS
from dsdrive.data.types import AGENT_TYPES, COMMANDS, MAP_POINTS, MAP_TYPES, PlanningInputs, PlanningSample
from dsdrive.student.vision_backbone import collate_cameras, encode_cameras, set_pixel_budget

PROCESSOR_FILE = "processor_config.json"
TARGET_KEYS = ("ego_future", "ego_future_mask", "reasoning_ids", "reasoning_mask", "risk_target", "risk_valid", "meta_action")
TOKEN_KD_KEYS = ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_token_mask")
"""Batch keys of the cached annotator top-k (token-level KD); absent when no item carries them."""


def without_ego_status(inputs: PlanningInputs) -> PlanningInputs:
    """A copy of ``inputs`` whose ego status (6,) and ego history (4, 3) are zero and masked out
    (masks all False): what the student reads under the ego-status ablation
    (``StudentConfig.use_ego_status = False``). Agents, map, command and cameras are kept."""
    return dataclasses.replace(
        inputs,
        ego_status=np.zeros_like(np.asarray(inputs.ego_status, np.float32)),
        ego_status_mask=np.zeros(np.shape(inputs.ego_status_mask), bool),
        ego_history=np.zeros_like(np.asarray(inputs.ego_history, np.float32)),
        ego_history_mask=np.zeros(np.shape(inputs.ego_history_mask), bool),
    )


class SceneFeaturizer:
    """PlanningInputs -> numpy scene features (ego frame, metres); caps and grid from a StudentConfig.

    Keeps the ``max_agents`` agents nearest to the ego (centre distance) and the ``max_map``
    polylines nearest to it (closest point); agent types outside :data:`AGENT_TYPES` count as OTHER.
    """

    def __init__(self, config: StudentConfig):
        self.max_agents, self.max_map = config.max_agents, config.max_map
        self.grid = BevGrid.from_config(config)

    def __call__(self, inputs: PlanningInputs) -> dict:
        """Features of one PlanningInputs: agents (n, 9), agent_types (n,), map_points (m, 20, 2),
        map_types (m,), ego (28,), command () — see :mod:`dsdrive.student.scene_encoder`.

        Raises:
            TypeError: not PlanningInputs (e.g. a whole PlanningSample, which carries the future).
            ValueError: unknown command or map type, naming the sample id and value.
        """
        if not isinstance(inputs, PlanningInputs):
            raise TypeError(f"SceneFeaturizer takes PlanningInputs (no future), got {type(inputs).__name__}")
        sid = inputs.sample_id
        if inputs.command not in COMMANDS:
            raise ValueError(f"sample {sid}: field 'command' = {inputs.command!r}, expected one of {COMMANDS}")
        boxes = np.asarray(inputs.agents.boxes, np.float32).reshape(-1, 7)
        vel = np.asarray(inputs.agents.velocities, np.float32).reshape(-1, 2)
        keep = np.argsort(np.hypot(boxes[:, 0], boxes[:, 1]), kind="stable")[: self.max_agents]
        agents = np.nan_to_num(np.concatenate([boxes, vel], 1)[keep])
        atypes = np.array([AGENT_TYPES.index(t) if t in AGENT_TYPES else AGENT_TYPES.index("OTHER") for t in inputs.agents.types], np.int64)[keep]
        pts = np.asarray(inputs.map.points, np.float32).reshape(-1, MAP_POINTS, 2)
        bad = [t for t in inputs.map.types if t not in MAP_TYPES]
        if bad:
            raise ValueError(f"sample {sid}: field 'map_types' has {bad[0]!r}, expected one of {MAP_TYPES}")
        mkeep = np.argsort(np.hypot(pts[..., 0], pts[..., 1]).min(-1), kind="stable")[: self.max_map] if len(pts) else np.zeros(0, np.int64)
        mtypes = np.array([MAP_TYPES.index(t) for t in inputs.map.types], np.int64)[mkeep]
        return {"agents": agents, "agent_types": atypes, "map_points": pts[mkeep], "map_types": mtypes, **self.ego_features(inputs)}

    @staticmethod
    def ego_features(inputs: PlanningInputs) -> dict:
        """The ego vector (28,) (status, its mask, history, its mask; masked entries 0) and the
        command index: all a camera-only student reads besides the images.

        Raises:
            TypeError: not PlanningInputs; ValueError: unknown command (naming sample and value).
        """
        if not isinstance(inputs, PlanningInputs):
            raise TypeError(f"SceneFeaturizer takes PlanningInputs (no future), got {type(inputs).__name__}")
        if inputs.command not in COMMANDS:
            raise ValueError(f"sample {inputs.sample_id}: field 'command' = {inputs.command!r}, expected one of {COMMANDS}")
        smask = np.asarray(inputs.ego_status_mask, bool)
        status = np.where(smask, np.nan_to_num(np.asarray(inputs.ego_status, np.float32)), 0.0)
        hmask = np.asarray(inputs.ego_history_mask, bool)
        hist = np.where(hmask[:, None], np.nan_to_num(np.asarray(inputs.ego_history, np.float32)), 0.0)
        ego = np.concatenate([status, smask, hist.reshape(-1), hmask]).astype(np.float32)
        return {"ego": ego, "command": np.int64(COMMANDS.index(inputs.command))}


class StudentProcessor:
    """Tokenizer + scene featurizer of the student (see the module docstring for batch keys).

    Args:
        tokenizer: a fast tokenizer with pad and eos tokens.
        config: the StudentConfig (caps, BEV grid).
        max_prompt_tokens / max_reasoning_tokens: truncation lengths (the prompt keeps its start;
            reasoning truncated drops its eos).
        prompt_fn / reasoning_fn: text renderers; default :mod:`dsdrive.annotation.reasoning`'s.
        meta_action_from_future: without an annotation, label the meta-action from the
            ground-truth future (:func:`dsdrive.annotation.meta_action.meta_action_from_trajectory`).
        image_processor: the VLM's image processor (Qwen2VLImageProcessor), required for a camera
            student; its pixel budget is set to the config's ``min_pixels`` / ``max_pixels``.

    Raises:
        ValueError: tokenizer without pad / eos, or a camera student without an image processor.
    """

    def __init__(self, tokenizer, config: StudentConfig, max_prompt_tokens: int = 256, max_reasoning_tokens: int = 256,
                 prompt_fn: Callable[[PlanningInputs], str] | None = None, reasoning_fn: Callable[[dict], str] | None = None,
                 meta_action_from_future: bool = True, image_processor=None):
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ValueError("StudentProcessor: tokenizer needs pad_token and eos_token")
        reads_cameras = getattr(config, "reads_cameras", False)
        if reads_cameras and image_processor is None:
            raise ValueError(f"StudentProcessor: scene_inputs={config.scene_inputs!r} reads cameras and needs the VLM's image_processor")
        self.image_processor = image_processor if reads_cameras else None
        if self.image_processor is not None:
            set_pixel_budget(self.image_processor, config.min_pixels, config.max_pixels)
        self.tokenizer, self.config = tokenizer, config
        self.featurizer = SceneFeaturizer(config)
        self.grid = self.featurizer.grid
        self.max_prompt_tokens, self.max_reasoning_tokens = max_prompt_tokens, max_reasoning_tokens
        self.prompt_fn = prompt_fn or render_student_prompt
        self.reasoning_fn = reasoning_fn or render_reasoning
        self.meta_action_from_future = meta_action_from_future

    # ---------------------------------------------------------------- per item
    def encode_inputs(self, inputs: PlanningInputs) -> dict:
        """Scene features + prompt ids of one PlanningInputs (what :meth:`StudentModel.plan` needs).
        Under the ego-status ablation (``config.use_ego_status`` False) the ego status and history
        are masked first (:func:`without_ego_status`), so neither the features nor the prompt hold them."""
        if not getattr(self.config, "use_ego_status", True):
            inputs = without_ego_status(inputs)
        if getattr(self.config, "reads_objects", True):
            feats = self.featurizer(inputs)
            prior = getattr(self.config, "waypoint_prior", "cv_gate")
            if getattr(self.config, "use_ego_status", True):  # the head's map-reading priors (never under the ablation)
                if prior in KINEMATIC_PRIORS:  # the lane-following prior (map + speed)
                    feats["lane_prior"] = lane_following_prior(inputs, self.config.future_steps)
                if prior == "kinematic_idm":  # + PDM-Closed's IDM along that lane (map + speed + agents)
                    feats["idm_prior"] = lane_idm_prior(inputs, self.config.future_steps,
                                                        min_speed=getattr(self.config, "idm_prior_min_speed", IDM_MIN_SPEED_MPS))
                elif prior == "idm_modes":  # one lane-IDM proposal per mode
                    feats["idm_prior"] = lane_idm_proposals(inputs, idm_mode_targets(self.config.num_modes), self.config.future_steps)
        else:  # camera student: never reads the agents or the map
            feats = self.featurizer.ego_features(inputs)
        if self.image_processor is not None:
            feats.update(encode_cameras(inputs, self.config, self.image_processor))
        ids = self.tokenizer(self.prompt_fn(inputs), add_special_tokens=False)["input_ids"][: self.max_prompt_tokens]
        feats["prompt_ids"] = np.asarray(ids, np.int64)
        return feats

    def encode_sample(self, sample: PlanningSample, teacher_tokens=None, teacher_tokens_cross_tokenizer: bool = False) -> dict:
        """Inputs features plus targets of one training sample (targets from ``sample.targets`` and
        ``sample.annotation`` only).

        Args:
            sample: the training sample.
            teacher_tokens: optional :class:`dsdrive.annotation.logprobs.TokenLogprobs` of the sample's
                annotator answer (token-level KD; see the module docstring). Needs an annotation.
            teacher_tokens_cross_tokenizer: the annotator's tokenizer differs (ULD): re-tokenize its text.

        Raises:
            pydantic.ValidationError: the annotation does not match :class:`Annotation`, with the sample id.
            ValueError: ``teacher_tokens`` for a sample without annotation.
        """
        feats = self.encode_inputs(sample.inputs)
        t = sample.targets
        feats["ego_future"] = np.nan_to_num(np.asarray(t.ego_future, np.float32))
        feats["ego_future_mask"] = np.asarray(t.ego_future_mask, bool)
        feats["meta_action"] = np.int64(-100)
        feats["risk_target"] = np.zeros((self.grid.height, self.grid.width), np.float32)
        feats["risk_valid"] = False
        feats["reasoning_ids"] = np.zeros(0, np.int64)
        if sample.annotation:
            ann = Annotation.model_validate(sample.annotation)
            text = self.reasoning_fn(sample.annotation)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            feats["reasoning_ids"] = np.asarray(ids[: self.max_reasoning_tokens], np.int64)
            if teacher_tokens is not None:
                self._teacher_targets(feats, teacher_tokens, teacher_tokens_cross_tokenizer)
            risks = {r.agent_id: r.risk for r in ann.risks if r.agent_id is not None}
            feats["risk_target"] = rasterize_risk(sample.inputs.agents, risks, self.grid)
            feats["risk_valid"] = True
            feats["meta_action"] = np.int64(ann.meta_action.index)
        elif teacher_tokens is not None:
            raise ValueError(f"sample {sample.sample_id}: teacher token log-probs given but the sample has no annotation")
        elif self.meta_action_from_future and bool(np.all(t.ego_future_mask)):
            inp = sample.inputs
            speed = inp.speed if bool(np.all(inp.ego_status_mask[:2])) else None
            history = inp.ego_history if bool(inp.ego_history_mask[-1]) else None  # as the rule teacher does
            feats["meta_action"] = np.int64(meta_action_from_trajectory(t.ego_future, speed, history).index)
        return feats

    def _teacher_targets(self, feats: dict, rec, cross_tokenizer: bool) -> None:
        """Reasoning ids and cached top-k from an annotator's :class:`TokenLogprobs` (module docstring)."""
        eos, cap = self.tokenizer.eos_token_id, self.max_reasoning_tokens
        k = rec.top_k
        if cross_tokenizer:  # ULD: own tokens of the annotator's text; the top-k stays in the annotator's positions
            ids = self.tokenizer(rec.text, add_special_tokens=False)["input_ids"] + [eos]
            n = min(len(rec), cap)
            feats["reasoning_ids"] = np.asarray(ids[:cap], np.int64)
            feats["teacher_topk_ids"] = rec.topk_ids[:n].astype(np.int64)
            feats["teacher_topk_logprobs"] = rec.topk_logprobs[:n].astype(np.float32)
            feats["teacher_token_mask"] = np.ones(n, bool)
            return
        ids = rec.token_ids.astype(np.int64).tolist()
        mask = [True] * len(ids)
        if not ids or ids[-1] != eos:
            ids.append(eos)
            mask.append(False)
        n = min(len(ids), cap)
        top_ids = np.zeros((n, k), np.int64)
        top_lp = np.full((n, k), -np.inf, np.float32)
        m = min(len(rec), n)
        top_ids[:m], top_lp[:m] = rec.topk_ids[:m], rec.topk_logprobs[:m]
        feats["reasoning_ids"] = np.asarray(ids[:n], np.int64)
        feats["teacher_topk_ids"], feats["teacher_topk_logprobs"] = top_ids, top_lp
        feats["teacher_token_mask"] = np.asarray(mask[:n], bool)

    # ---------------------------------------------------------------- batching
    def collate(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Pad per-item feature dicts into a batch (targets included when every item has them;
        object keys when the items have agents, camera keys when they have images)."""
        b = len(items)
        p = max(1, max(len(x["prompt_ids"]) for x in items))
        out = {}
        if all("agents" in x for x in items):
            n = max(1, max(len(x["agents"]) for x in items))
            m = max(1, max(len(x["map_points"]) for x in items))
            out = {"agents": torch.zeros(b, n, 9), "agent_types": torch.zeros(b, n, dtype=torch.long), "agents_mask": torch.zeros(b, n, dtype=torch.bool),
                   "map_points": torch.zeros(b, m, MAP_POINTS, 2), "map_types": torch.zeros(b, m, dtype=torch.long), "map_mask": torch.zeros(b, m, dtype=torch.bool)}
            for i, x in enumerate(items):
                k, j = len(x["agents"]), len(x["map_points"])
                out["agents"][i, :k] = torch.from_numpy(x["agents"])
                out["agent_types"][i, :k] = torch.from_numpy(x["agent_types"])
                out["agents_mask"][i, :k] = True
                out["map_points"][i, :j] = torch.from_numpy(x["map_points"])
                out["map_types"][i, :j] = torch.from_numpy(x["map_types"])
                out["map_mask"][i, :j] = True
        out.update({
            "ego": torch.from_numpy(np.stack([x["ego"] for x in items])), "command": torch.tensor([int(x["command"]) for x in items]),
            "prompt_ids": torch.full((b, p), self.tokenizer.pad_token_id, dtype=torch.long), "prompt_mask": torch.zeros(b, p, dtype=torch.bool),
        })
        for i, x in enumerate(items):
            q = len(x["prompt_ids"])
            out["prompt_ids"][i, :q] = torch.from_numpy(x["prompt_ids"])
            out["prompt_mask"][i, :q] = True
        for key in ("lane_prior", "idm_prior"):
            if all(key in x for x in items):
                out[key] = torch.from_numpy(np.stack([x[key] for x in items]))
        if self.image_processor is not None and all("camera_images" in x for x in items):
            out.update(collate_cameras(items, self.image_processor))
        if all("ego_future" in x for x in items):
            r = max(1, max(len(x["reasoning_ids"]) for x in items))
            out["reasoning_ids"] = torch.full((b, r), self.tokenizer.pad_token_id, dtype=torch.long)
            out["reasoning_mask"] = torch.zeros(b, r, dtype=torch.bool)
            for i, x in enumerate(items):
                out["reasoning_ids"][i, : len(x["reasoning_ids"])] = torch.from_numpy(x["reasoning_ids"])
                out["reasoning_mask"][i, : len(x["reasoning_ids"])] = True
            out["ego_future"] = torch.from_numpy(np.stack([x["ego_future"] for x in items]))
            out["ego_future_mask"] = torch.from_numpy(np.stack([x["ego_future_mask"] for x in items]))
            out["risk_target"] = torch.from_numpy(np.stack([x["risk_target"] for x in items]))
            out["risk_valid"] = torch.tensor([bool(x["risk_valid"]) for x in items])
            out["meta_action"] = torch.tensor([int(x["meta_action"]) for x in items])
        if any("teacher_topk_ids" in x for x in items):  # token-level KD: cached annotator top-k per reasoning position
            have = [x for x in items if "teacher_topk_ids" in x]
            r = max(1, max(len(x["teacher_token_mask"]) for x in have))
            k = max(x["teacher_topk_ids"].shape[1] for x in have)
            out["teacher_topk_ids"] = torch.zeros(b, r, k, dtype=torch.long)
            out["teacher_topk_logprobs"] = torch.full((b, r, k), float("-inf"))
            out["teacher_token_mask"] = torch.zeros(b, r, dtype=torch.bool)
            for i, x in enumerate(items):
                if "teacher_topk_ids" in x:
                    n, kk = x["teacher_topk_ids"].shape
                    out["teacher_topk_ids"][i, :n, :kk] = torch.from_numpy(x["teacher_topk_ids"])
                    out["teacher_topk_logprobs"][i, :n, :kk] = torch.from_numpy(x["teacher_topk_logprobs"])
                    out["teacher_token_mask"][i, :n] = torch.from_numpy(x["teacher_token_mask"])
        return out

    def __call__(self, items: Sequence[PlanningInputs | PlanningSample | dict]) -> dict[str, torch.Tensor]:
        """Batch PlanningInputs (inputs only), PlanningSamples (with targets) or encoded dicts."""
        enc = []
        for x in items:
            if isinstance(x, PlanningSample):
                enc.append(self.encode_sample(x))
            elif isinstance(x, PlanningInputs):
                enc.append(self.encode_inputs(x))
            elif isinstance(x, dict):
                enc.append(x)
            else:
                raise TypeError(f"StudentProcessor: cannot batch {type(x).__name__}")
        return self.collate(enc)

    def decode_reasoning(self, ids: torch.Tensor) -> list[str]:
        """(B, R) generated ids -> texts, each cut at its first eos."""
        eos = self.tokenizer.eos_token_id
        texts = []
        for row in ids.tolist():
            row = row[: row.index(eos)] if eos in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> None:
        """Write the tokenizer, ``processor_config.json`` (lengths) and, for a camera student, the
        image processor (``preprocessor_config.json``) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(directory))
        if self.image_processor is not None:
            self.image_processor.save_pretrained(str(directory))
        (directory / PROCESSOR_FILE).write_text(json.dumps({"max_prompt_tokens": self.max_prompt_tokens,
                                                            "max_reasoning_tokens": self.max_reasoning_tokens,
                                                            "meta_action_from_future": self.meta_action_from_future}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path, config: StudentConfig | None = None) -> "StudentProcessor":
        """Load from a student checkpoint folder (tokenizer files, processor_config.json, config.json).

        Raises:
            FileNotFoundError: a file is missing, naming it.
        """
        directory = Path(directory)
        pfile = directory / PROCESSOR_FILE
        if not pfile.is_file():
            raise FileNotFoundError(f"{pfile}: missing (save the processor with StudentProcessor.save_pretrained)")
        config = config or StudentConfig.from_pretrained(str(directory))
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        image_processor = None
        if getattr(config, "reads_cameras", False):
            if not (directory / "preprocessor_config.json").is_file():
                raise FileNotFoundError(f"{directory / 'preprocessor_config.json'}: missing (a camera student needs its image processor)")
            image_processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
        return cls(tokenizer, config, **json.loads(pfile.read_text()), image_processor=image_processor)


class StudentDataCollator:
    """``transformers.Trainer`` data collator: a list of PlanningSamples or encoded dicts -> batch."""

    def __init__(self, processor: StudentProcessor):
        self.processor = processor

    def __call__(self, items):
        return self.processor(items)
