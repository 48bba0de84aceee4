"""A perception noise model: what a planner sees when the agents come from a detector, not the log.

Every planning sample holds the *logged* (ground-truth) agents. A deployed planner reads a
detector's output instead: boxes a little off, headings and velocities noisy, far objects
missed, ghosts reported, everything a frame late. :func:`apply_perception_noise` turns the
agents of :class:`~dsdrive.data.types.PlanningInputs` into such a detector output, seeded and
configurable (:class:`PerceptionNoiseConfig`), and the same model serves

* open loop (``dsdrive open-loop --perception-noise none default``: one table with a
  "ground-truth perception" and a "noisy perception" row per planner),
* the PDM score (``dsdrive pdm-score --perception-noise ...``),
* closed loop (``dsdrive closed-loop --perception-noise ...``: noise on the inputs the simulator
  adapter builds at every replanning step), and
* training-time augmentation (``DistillConfig.perception_noise``: a fresh draw per epoch).

Scoring always uses the true agents (the targets, the simulator's state); only the planner's
view is perturbed.

What is perturbed (ego frame of the current time: x forward, y left, metres, radians, m/s), in
this order, on ``inputs.agents`` (:class:`~dsdrive.data.types.Agents`, boxes (N, 7)
``x, y, z, l, w, h, yaw``, velocities (N, 2)):

1. **Latency** ``latency_s``: the agents as seen ``latency_s`` ago, each rewound along its own
   velocity: ``xy <- xy - v * latency_s``. Approximation: constant velocity over the latency, no
   yaw rate (yaw, size and velocity are kept), perfectly ego-motion-compensated (the stale
   detection is placed in the ego frame of *now*). The ego's own state is not delayed.
2. **Misses** grow with range: agent i (range r_i = ||xy_i|| after the rewind) is dropped with
   probability ``p(r) = clip(miss_prob_at_0m + miss_prob_per_m * r, 0, miss_prob_max)``.
3. **Noise** on the kept agents: x and y each + N(0, ``position_std_m``^2); yaw +
   N(0, ``heading_std_rad``^2) (wrapped to [-pi, pi)); vx and vy each + N(0, ``velocity_std_mps``^2).
   Independent per agent and per call (white noise: a real detector's errors are correlated over
   time, which this model does not reproduce).
4. **False positives**: K ~ Poisson(``false_positives_per_sample``) ghost boxes, centres uniform
   in area over the annulus ``false_positive_min_range_m`` <= r <= ``false_positive_max_range_m``
   around the ego, a class drawn from :data:`FALSE_POSITIVE_CLASSES` with its typical size
   (+-10 %), yaw uniform, velocity N(0, ``velocity_std_mps``^2) per component (ghosts mostly
   stand still), z on the ground of the real agents (their median ``z - h/2``; 0 without any),
   ids ``fp0``, ``fp1``, ...
5. The agents are sorted nearest first again (stable), the convention of
   :func:`dsdrive.data.world_state.planning_inputs_from_world`.

Untouched: ego history, ego status, command, map polylines and cameras (map and localisation
noise are other models). Track ids of detected agents are kept (a perfect tracker).

Randomness: one ``numpy.random.Generator`` per call, derived from stable keys
(:func:`perception_rng`, SHA-256 of the keys, never Python's salted ``hash``): open loop and the
PDM score use (seed, sample_id), so a table is reproducible, independent of sample order and
batch size, and every planner of a table sees the *same* noisy draw of a sample (a paired
comparison); closed loop uses (seed, scene_id, step); training uses (seed, sample_id, epoch).

Presets (:data:`PRESETS`; :func:`load_perception_noise` also takes a YAML file of the fields,
optionally ``preset: NAME`` as the base):

* ``none``: the identity (ground-truth perception).
* ``default``: a temporal camera detector on nuScenes. Position, heading and velocity noise
  are set from BEVFormer's nuScenes *test* true-positive errors (Li et al., ECCV 2022,
  arXiv 2203.17270; V2-99 backbone): mATE 0.582 m, mAOE 0.375 rad, mAVE 0.378 m/s. The nuScenes
  TP errors are means of |error| (mATE: 2D centre distance; mAVE: 2D velocity distance; mAOE:
  absolute yaw difference), so with Gaussian errors: per-axis position std = mATE / sqrt(pi/2)
  = 0.464 m (mean of a 2D Rayleigh), per-axis velocity std = mAVE / sqrt(pi/2) = 0.302 m/s, yaw
  std = mAOE * sqrt(pi/2) = 0.470 rad (mean of a half-normal). mAOE averages over classes,
  pedestrians and cyclists included, whose orientation is often flipped; it overstates the yaw
  error of cars. nuScenes TP errors only count detections within 2 m of a true box, so the
  published means leave out the tails. Misses, false positives and latency are *not*
  published figures but assumptions of this project: miss 5 % at 0 m + 0.4 %/m (25 % at 50 m,
  capped at 50 %), 0.5 ghost per sample, 0.1 s latency (one 10 Hz frame).
* ``heavy``: a single-frame monocular detector: FCOS3D's nuScenes test TP errors (Wang et al.,
  ICCVW 2021, arXiv 2104.10956): mATE 0.690 m, mAOE 0.452 rad, mAVE 1.434 m/s (velocity from
  one frame), so stds 0.551 m, 0.566 rad, 1.144 m/s; assumed miss 10 % + 0.8 %/m (capped 70 %),
  2 ghosts per sample, 0.3 s latency.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dsdrive.data.types import Agents, PlanningInputs
from dsdrive.geometry import wrap_angle

MEAN_ABS_TO_STD_2D = math.sqrt(math.pi / 2)
"""Mean 2D distance of an isotropic Gaussian error (a Rayleigh mean) / its per-axis std."""
MEAN_ABS_TO_STD_1D = math.sqrt(2 / math.pi)
"""Mean |error| of a 1D Gaussian (a half-normal mean) / its std."""

FALSE_POSITIVE_CLASSES: dict[str, tuple[float, tuple[float, float, float]]] = {
    "VEHICLE": (0.4, (4.63, 1.96, 1.74)),
    "PEDESTRIAN": (0.3, (0.7, 0.7, 1.75)),
    "CYCLIST": (0.1, (1.8, 0.6, 1.4)),
    "TRAFFIC_CONE": (0.1, (0.4, 0.4, 1.0)),
    "TRAFFIC_BARRIER": (0.1, (0.5, 2.5, 1.0)),
}
"""Ghost boxes: class -> (share of the ghosts, typical length, width, height in m). The shares
are an assumption of this model; the sizes are the usual sizes of these classes (VEHICLE: the mean
nuScenes car box, about 4.63 x 1.96 x 1.74 m)."""
FALSE_POSITIVE_SIZE_JITTER = 0.1
"""Ghost box sizes are scaled by a factor uniform in [1 - 0.1, 1 + 0.1]."""

GROUND_TRUTH_LABEL = "ground-truth perception"
"""Row label of the identity model."""
PRIVILEGED_LABEL = "ground truth (privileged)"
"""Row label of a planner that reads the ground truth by definition (no noise applied)."""


class PerceptionNoiseConfig(BaseModel):
    """Settings of the perception noise model (see the module docstring for what each does).

    Attributes:
        name: label in tables (``noisy perception (NAME)``); a preset's name or a YAML file's stem.
        position_std_m: per-axis std of the box-centre x, y error (m), >= 0.
        heading_std_rad: std of the yaw error (rad), >= 0.
        velocity_std_mps: per-component std of the vx, vy error (m/s), >= 0.
        miss_prob_at_0m: miss probability at range 0, in [0, 1].
        miss_prob_per_m: growth of the miss probability per metre of range (1/m), >= 0.
        miss_prob_max: cap of the miss probability, in [0, 1].
        false_positives_per_sample: Poisson mean of ghost boxes per call, >= 0.
        false_positive_min_range_m / false_positive_max_range_m: annulus of ghost centres (m),
            0 <= min < max.
        latency_s: how old the agents are (s), in [0, 5].
        seed: base seed of every draw (an integer >= 0).

    Raises:
        ValueError: a field out of range (:func:`config_from_dict` names the field and value).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    position_std_m: float = Field(0.0, ge=0, allow_inf_nan=False)
    heading_std_rad: float = Field(0.0, ge=0, allow_inf_nan=False)
    velocity_std_mps: float = Field(0.0, ge=0, allow_inf_nan=False)
    miss_prob_at_0m: float = Field(0.0, ge=0, le=1)
    miss_prob_per_m: float = Field(0.0, ge=0, allow_inf_nan=False)
    miss_prob_max: float = Field(1.0, ge=0, le=1)
    false_positives_per_sample: float = Field(0.0, ge=0, allow_inf_nan=False)
    false_positive_min_range_m: float = Field(4.0, ge=0, allow_inf_nan=False)
    false_positive_max_range_m: float = Field(50.0, gt=0, allow_inf_nan=False)
    latency_s: float = Field(0.0, ge=0, le=5)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> "PerceptionNoiseConfig":
        if not self.false_positive_min_range_m < self.false_positive_max_range_m:
            raise ValueError(f"false_positive_min_range_m = {self.false_positive_min_range_m} must be below "
                             f"false_positive_max_range_m = {self.false_positive_max_range_m}")
        return self

    @property
    def is_identity(self) -> bool:
        """True when the model changes nothing (ground-truth perception)."""
        return (self.position_std_m == 0 and self.heading_std_rad == 0 and self.velocity_std_mps == 0
                and self.miss_probability(np.array([0.0, 1e6])).max() == 0 and self.false_positives_per_sample == 0
                and self.latency_s == 0)

    @property
    def label(self) -> str:
        """Row label: ``ground-truth perception`` or ``noisy perception (NAME)``."""
        return GROUND_TRUTH_LABEL if self.is_identity else f"noisy perception ({self.name})"

    def miss_probability(self, range_m: np.ndarray) -> np.ndarray:
        """Miss probability per agent: ``clip(p0 + slope * range, 0, p_max)``; ``range_m`` (N,) metres."""
        p = self.miss_prob_at_0m + self.miss_prob_per_m * np.asarray(range_m, np.float64)
        return np.clip(p, 0.0, self.miss_prob_max)


def _gaussian_stds(mate_m: float, maoe_rad: float, mave_mps: float) -> dict[str, float]:
    """Per-axis stds from nuScenes mean TP errors (see the module docstring)."""
    return {"position_std_m": round(mate_m / MEAN_ABS_TO_STD_2D, 3), "heading_std_rad": round(maoe_rad / MEAN_ABS_TO_STD_1D, 3),
            "velocity_std_mps": round(mave_mps / MEAN_ABS_TO_STD_2D, 3)}


PRESETS: dict[str, PerceptionNoiseConfig] = {
    "none": PerceptionNoiseConfig(name="none"),
    # BEVFormer (V2-99, temporal), nuScenes test: mATE 0.582 m, mAOE 0.375 rad, mAVE 0.378 m/s
    "default": PerceptionNoiseConfig(name="default", **_gaussian_stds(0.582, 0.375, 0.378), miss_prob_at_0m=0.05,
                                     miss_prob_per_m=0.004, miss_prob_max=0.5, false_positives_per_sample=0.5, latency_s=0.1),
    # FCOS3D (single frame, monocular), nuScenes test: mATE 0.690 m, mAOE 0.452 rad, mAVE 1.434 m/s
    "heavy": PerceptionNoiseConfig(name="heavy", **_gaussian_stds(0.690, 0.452, 1.434), miss_prob_at_0m=0.10,
                                   miss_prob_per_m=0.008, miss_prob_max=0.7, false_positives_per_sample=2.0, latency_s=0.3),
}
"""The named settings of ``--perception-noise`` (see the module docstring for the sources)."""


def config_from_dict(data: dict, where: str = "perception noise") -> PerceptionNoiseConfig:
    """Build a config from a dict of fields; ``preset: NAME`` (optional) gives the base values.

    Raises:
        ValueError: an unknown preset or field, or a value out of range; the message names
            ``where``, the field and the value.
    """
    data = dict(data)
    base: dict = {}
    preset = data.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"{where}: field 'preset' = {preset!r}, expected one of {sorted(PRESETS)}")
        base = PRESETS[preset].model_dump()
    try:
        return PerceptionNoiseConfig.model_validate(base | data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        value = err.get("input")
        if field == "(config)":
            raise ValueError(f"{where}: {err['msg'].removeprefix('Value error, ')}") from None
        raise ValueError(f"{where}: field {field!r} = {value!r}: {err['msg']}") from None


def load_perception_noise(spec: str | PerceptionNoiseConfig) -> PerceptionNoiseConfig:
    """A config from a preset name (:data:`PRESETS`), a YAML file of fields, or a config (returned).

    A YAML file's ``name`` defaults to the file's stem.

    Raises:
        ValueError: neither a preset nor an existing ``.yaml``/``.yml`` file, a file that is not a
            YAML mapping, or a bad field (file, field and value named).
    """
    if isinstance(spec, PerceptionNoiseConfig):
        return spec
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        raise ValueError(f"perception noise {spec!r}: expected one of {sorted(PRESETS)} or an existing .yaml file")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of PerceptionNoiseConfig fields, got {type(data).__name__}")
    return config_from_dict({"name": path.stem} | data, where=str(path))


def perception_settings(specs: list[str] | None) -> list[PerceptionNoiseConfig]:
    """``--perception-noise`` values (``open-loop``, ``pdm-score``, ``closed-loop``) -> configs
    (:func:`load_perception_noise`); no value = ``["none"]``.

    Raises:
        ValueError: a bad value, or two values with the same row label (e.g. ``none none``).
    """
    settings = [load_perception_noise(s) for s in (specs or ["none"])]
    labels = [c.label for c in settings]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise ValueError(f"--perception-noise {' '.join(specs or [])}: settings with the same label {dup}; give each a distinct name")
    return settings


def perception_rng(seed: int, *keys: object) -> np.random.Generator:
    """A generator derived from ``seed`` and the keys (e.g. a sample id, or a scene id and a step):
    stable across processes and Python versions (SHA-256 of their text, not Python's ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in (seed, *keys)).encode()).digest()
    return np.random.default_rng(np.random.SeedSequence(list(np.frombuffer(digest, np.uint32))))


def _copy_agents(a: Agents) -> Agents:
    return Agents(list(a.ids), list(a.types), np.array(a.boxes, np.float32, copy=True).reshape(-1, 7),
                  np.array(a.velocities, np.float32, copy=True).reshape(-1, 2))


def _false_positives(config: PerceptionNoiseConfig, rng: np.random.Generator, ground_z: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(types, boxes (K, 7), velocities (K, 2)) of the ghost boxes of one call."""
    k = int(rng.poisson(config.false_positives_per_sample))
    classes = list(FALSE_POSITIVE_CLASSES)
    shares = np.array([FALSE_POSITIVE_CLASSES[c][0] for c in classes])
    idx = rng.choice(len(classes), size=k, p=shares / shares.sum())
    r0, r1 = config.false_positive_min_range_m, config.false_positive_max_range_m
    r = np.sqrt(rng.uniform(r0 ** 2, r1 ** 2, size=k))  # uniform in area
    phi = rng.uniform(-np.pi, np.pi, size=k)
    lwh = np.array([FALSE_POSITIVE_CLASSES[classes[i]][1] for i in idx]).reshape(k, 3)
    lwh = lwh * rng.uniform(1 - FALSE_POSITIVE_SIZE_JITTER, 1 + FALSE_POSITIVE_SIZE_JITTER, size=(k, 3))
    yaw = rng.uniform(-np.pi, np.pi, size=k)
    boxes = np.column_stack([r * np.cos(phi), r * np.sin(phi), ground_z + lwh[:, 2] / 2, lwh, yaw])
    vel = rng.normal(0.0, config.velocity_std_mps, size=(k, 2))
    return [classes[i] for i in idx], boxes.reshape(k, 7), vel.reshape(k, 2)


def apply_perception_noise(inputs: PlanningInputs, config: PerceptionNoiseConfig, rng: np.random.Generator) -> PlanningInputs:
    """The planner's inputs as a detector with ``config``'s errors would give them.

    Args:
        inputs: the inputs with ground-truth agents (ego frame: x forward, y left, metres);
            never modified.
        config: the noise settings (:class:`PerceptionNoiseConfig`).
        rng: the draw's generator (:func:`perception_rng` for a reproducible one).

    Returns:
        A new :class:`~dsdrive.data.types.PlanningInputs` whose agents are latency-rewound,
        thinned by range-dependent misses, perturbed in position / yaw / velocity, extended by
        ghost boxes and sorted nearest first (boxes (N', 7) float32, velocities (N', 2) float32);
        every other field is the same object as in ``inputs`` (not copied: they are not changed).
        With an identity config the agents are an exact copy.
    """
    agents = _copy_agents(inputs.agents)
    out = PlanningInputs(sample_id=inputs.sample_id, scene_id=inputs.scene_id, ego_history=inputs.ego_history,
                         ego_history_mask=inputs.ego_history_mask, ego_status=inputs.ego_status,
                         ego_status_mask=inputs.ego_status_mask, command=inputs.command, agents=agents, map=inputs.map,
                         cameras=list(inputs.cameras))
    if config.is_identity:
        return out
    boxes = agents.boxes.astype(np.float64)
    vel = agents.velocities.astype(np.float64)
    n = len(agents)
    boxes[:, :2] -= vel * config.latency_s
    keep = rng.random(n) >= config.miss_probability(np.hypot(boxes[:, 0], boxes[:, 1]))
    boxes, vel = boxes[keep], vel[keep]
    ids = [i for i, k in zip(agents.ids, keep) if k]
    types = [t for t, k in zip(agents.types, keep) if k]
    m = len(ids)
    boxes[:, :2] += rng.normal(0.0, config.position_std_m, size=(m, 2))
    boxes[:, 6] = wrap_angle(boxes[:, 6] + rng.normal(0.0, config.heading_std_rad, size=m))
    vel += rng.normal(0.0, config.velocity_std_mps, size=(m, 2))
    ground_z = float(np.median(boxes[:, 2] - boxes[:, 5] / 2)) if m else 0.0
    fp_types, fp_boxes, fp_vel = _false_positives(config, rng, ground_z)
    ids += [f"fp{j}" for j in range(len(fp_types))]
    types += fp_types
    boxes, vel = np.concatenate([boxes, fp_boxes]), np.concatenate([vel, fp_vel])
    order = np.argsort(np.hypot(boxes[:, 0], boxes[:, 1]), kind="stable")
    out.agents = Agents([ids[i] for i in order], [types[i] for i in order], boxes[order].astype(np.float32),
                        vel[order].astype(np.float32))
    return out


def perceived(inputs: PlanningInputs, config: PerceptionNoiseConfig | None, *keys: object) -> PlanningInputs:
    """``inputs`` unchanged for ``None`` or an identity config, else :func:`apply_perception_noise`
    with ``perception_rng(config.seed, *keys)`` (keys default to the sample id)."""
    if config is None or config.is_identity:
        return inputs
    return apply_perception_noise(inputs, config, perception_rng(config.seed, *(keys or (inputs.sample_id,))))


def row_name(planner: str, config: PerceptionNoiseConfig | None, several: bool, privileged: bool = False) -> str:
    """The name of a table row: the planner's name alone when only one perception setting is asked
    for, for an identity one, or for a privileged planner (it reads the ground truth); else
    ``"PLANNER [noisy perception (NAME)]"`` / ``"PLANNER [ground-truth perception]"``."""
    if privileged or config is None or (not several and config.is_identity):
        return planner
    return f"{planner} [{config.label}]"


def perception_label(config: PerceptionNoiseConfig | None, privileged: bool = False) -> str:
    """The ``perception`` column of a row (privileged planners: :data:`PRIVILEGED_LABEL`)."""
    if privileged:
        return PRIVILEGED_LABEL
    return GROUND_TRUTH_LABEL if config is None else config.label


class PerceptionNoiseItems:
    """Training-time augmentation: encoded training items whose *inputs* are re-encoded from a
    fresh noisy draw each epoch (a map-style dataset for ``transformers.Trainer``).

    Item i is ``items[i]`` (targets, annotation targets and any cached planning-teacher outputs,
    all from the ground truth) with its input features replaced by
    ``encode_inputs(apply_perception_noise(samples[i].inputs, config, perception_rng(config.seed,
    sample_id, epoch)))``. :meth:`set_epoch` is called by accelerate's data loader and by the
    distill recipe's callback at every epoch start.

    Args:
        samples: the training :class:`~dsdrive.data.types.PlanningSample` list, aligned with ``items``.
        items: the clean encoded items (kept by reference: planning-KD outputs attached later are seen).
        encode_inputs: PlanningInputs -> dict of input features (``StudentProcessor.encode_inputs``).
        config: the noise settings.

    Raises:
        ValueError: ``samples`` and ``items`` differ in length.
    """

    def __init__(self, samples: list, items: list[dict], encode_inputs, config: PerceptionNoiseConfig):
        if len(samples) != len(items):
            raise ValueError(f"PerceptionNoiseItems: {len(samples)} samples but {len(items)} items")
        self.samples, self.items, self.encode_inputs, self.config = samples, items, encode_inputs, config
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw item noise for ``epoch`` from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        s = self.samples[i]
        return self.items[i] | self.encode_inputs(perceived(s.inputs, self.config, s.sample_id, self.epoch))
