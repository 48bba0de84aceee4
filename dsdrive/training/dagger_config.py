"""Settings of on-policy closed-loop distillation (``dsdrive dagger``; :mod:`dsdrive.training.dagger`).

Groups (every field has ``metadata["help"]``; ``dsdrive dagger --help`` lists them):

* **Data and output**: ``data`` (the logged, annotated planning dataset), ``scenarios`` (the
  ScenarioNet folder the rollouts replay), ``out`` (one folder per fold and iteration).
* **Held-out split**: ``folds`` / ``fold`` (:func:`dsdrive.evaluation.cross_validate.make_folds`
  over the sorted scene ids; the fold's scenes are never rolled out for training, never trained
  on, and are where every closed-loop and open-loop figure is measured); ``scenes`` restricts the
  scene set first (tests, quick runs).
* **Loop**: ``iterations`` (N on-policy iterations after iteration 0, plain imitation),
  ``distill_config`` (the student's training YAML, the main job's by default; any flag that
  ``dsdrive dagger`` does not know is passed on to ``dsdrive distill``, e.g. ``--max_steps 20``).
* **Rollouts**: ``rollout_max_steps`` (simulator steps per scenario, None = the whole log),
  ``traffic``; **DART perturbations** (Laskey et al., CoRL 2017, "DART: Noise Injection for Robust
  Imitation Learning"): at each replanning step of a training rollout a perturbation starts with
  probability ``perturb_prob``; it adds a steering offset of magnitude uniform in
  ``[perturb_steer / 2, perturb_steer]`` (MetaDrive's normalised steering, random sign) to the
  executed action for ``perturb_steps`` simulator steps. Held-out rollouts are never perturbed.
* **Expert mixing** (DAgger's beta_i, Ross, Gordon & Bagnell, AISTATS 2011): off by default
  (``beta0 = 0``: every training rollout drives the current student, as in Learning by Cheating's
  on-policy stage, Chen et al., CoRL 2019; the expert only labels). With ``beta0 > 0`` the rollout
  of iteration i >= 1 executes, at each 0.5 s replanning step, the expert's (PDM-Closed's,
  closed-loop, with the label settings below) plan with probability
  ``beta_i = beta0 * beta_decay ** (i - 1)`` and student i-1's otherwise (seeded draws), so the
  states visited stay nearer the expert's distribution; every visited state is labelled.
* **Label settings** (PDM-Closed as the labeller and the mixing expert; defaults = PDM-Closed's,
  the labels as before): ``label_speed`` ``fixed`` aims at 13.9 m/s (nuScenes maps carry no speed
  limit), ``log`` at the scene's speed where the ego is
  (:func:`dsdrive.planners.pdm_closed.log_speed_band`: the logged ego's fastest speed over the next
  4 s from its place on the route, times ``1 + label_speed_margin``); ``label_idm_headway`` (s) and
  ``label_idm_s0`` (m) are the IDM time headway and minimum gap of the label's proposals.

Validation (``__post_init__``; ``ValueError`` naming the field and value): ``folds >= 2``,
``0 <= fold < folds``, ``iterations >= 0``, ``0 <= perturb_prob <= 1``, ``0 <= perturb_steer <= 1``,
``perturb_steps >= 1``, ``rollout_max_steps`` None or >= 1, ``traffic`` replay | reactive,
``0 <= beta0 <= 1``, ``0 <= beta_decay <= 1``, ``label_speed`` fixed | log, ``label_speed_margin >= 0``,
``label_idm_headway > 0``, ``label_idm_s0 > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DaggerConfig:
    """Settings of ``dsdrive dagger`` (see the module docstring for the groups and checks)."""

    data: str = field(default="outputs/main/planning_annotated", metadata={
        "help": "logged planning dataset, annotated (dsdrive annotate + merge); its scenes define the folds"})
    out: str = field(default="outputs/dagger", metadata={"help": "output folder: OUT/fold_F/iter_I/..."})
    scenarios: str | None = field(default=None, metadata={
        "help": "ScenarioNet folder to roll out (default: DSDRIVE_SCENARIOS or the shared nuScenes-mini scenes)"})
    scenes: str | None = field(default=None, metadata={
        "help": "comma-separated scene ids to use (default: every scene of --data); folds are made over these"})
    folds: int = field(default=4, metadata={"help": "number of leave-scenes-out folds (make_folds over sorted scene ids)"})
    fold: int = field(default=0, metadata={"help": "the fold whose scenes are held out (0-based)"})
    iterations: int = field(default=3, metadata={"help": "on-policy iterations after iteration 0 (plain imitation)"})
    distill_config: str = field(default="recipes/configs/tiny/distill.yaml", metadata={
        "help": "YAML of the student's training (dsdrive distill --config); unknown flags are passed to distill"})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads for training and planning"})
    seed: int = field(default=0, metadata={"help": "seed of the perturbations (training follows the distill config's seed)"})
    traffic: str = field(default="replay", metadata={"help": "closed-loop traffic: replay | reactive"})
    rollout_max_steps: int | None = field(default=None, metadata={
        "help": "cap on simulator steps per scenario, training and held-out rollouts (None: the whole log)"})
    perturb_prob: float = field(default=0.2, metadata={
        "help": "probability that a DART steering perturbation starts at a replanning step of a training rollout"})
    perturb_steer: float = field(default=0.3, metadata={
        "help": "largest steering offset of a perturbation (MetaDrive normalised steering, [-1, 1])"})
    perturb_steps: int = field(default=10, metadata={"help": "length of a perturbation in simulator steps (0.1 s each)"})
    beta0: float = field(default=0.0, metadata={
        "help": "DAgger expert mixing: probability that PDM-Closed drives a replanning step of iteration 1's rollouts (0: never, as before)"})
    beta_decay: float = field(default=0.5, metadata={"help": "beta_i = beta0 * beta_decay ** (i - 1) for iteration i >= 1"})
    label_speed: str = field(default="fixed", metadata={
        "help": "PDM-Closed label target speed: fixed (13.9 m/s, as before) | log (the logged ego's speed band where the ego is)"})
    label_speed_margin: float = field(default=0.1, metadata={"help": "label_speed log: the band is (1 + margin) x the logged speed"})
    label_idm_headway: float = field(default=1.5, metadata={"help": "IDM time headway (s) of the label's proposals (1.5: PDM-Closed's)"})
    label_idm_s0: float = field(default=1.0, metadata={"help": "IDM minimum gap (m) of the label's proposals (1.0: PDM-Closed's)"})
    warm_start: bool = field(default=False, metadata={
        "help": "iteration i >= 1 fine-tunes student i-1 on the aggregate (distill --init_from) instead of training from scratch"})
    warm_start_steps: int | None = field(default=None, metadata={
        "help": "with warm_start: max_steps of iterations i >= 1 (None: the distill config's)"})
    on_policy_repeat: int = field(default=1, metadata={
        "help": "copies of each on-policy sample in the aggregate (ids suffixed ~repK), to weigh them against a large logged set"})

    def __post_init__(self) -> None:
        checks = [
            ("folds", self.folds, self.folds >= 2, ">= 2"),
            ("fold", self.fold, 0 <= self.fold < self.folds, f"in [0, folds={self.folds})"),
            ("iterations", self.iterations, self.iterations >= 0, ">= 0"),
            ("perturb_prob", self.perturb_prob, 0.0 <= self.perturb_prob <= 1.0, "in [0, 1]"),
            ("perturb_steer", self.perturb_steer, 0.0 <= self.perturb_steer <= 1.0, "in [0, 1]"),
            ("perturb_steps", self.perturb_steps, self.perturb_steps >= 1, ">= 1"),
            ("rollout_max_steps", self.rollout_max_steps, self.rollout_max_steps is None or self.rollout_max_steps >= 1, "None or >= 1"),
            ("traffic", self.traffic, self.traffic in ("replay", "reactive"), "'replay' or 'reactive'"),
            ("num_threads", self.num_threads, self.num_threads >= 1, ">= 1"),
            ("beta0", self.beta0, 0.0 <= self.beta0 <= 1.0, "in [0, 1]"),
            ("beta_decay", self.beta_decay, 0.0 <= self.beta_decay <= 1.0, "in [0, 1]"),
            ("label_speed", self.label_speed, self.label_speed in ("fixed", "log"), "'fixed' or 'log'"),
            ("label_speed_margin", self.label_speed_margin, self.label_speed_margin >= 0.0, ">= 0"),
            ("label_idm_headway", self.label_idm_headway, self.label_idm_headway > 0.0, "> 0"),
            ("label_idm_s0", self.label_idm_s0, self.label_idm_s0 > 0.0, "> 0"),
            ("warm_start_steps", self.warm_start_steps, self.warm_start_steps is None or (self.warm_start and self.warm_start_steps >= 1),
             "None, or >= 1 with warm_start true"),
            ("on_policy_repeat", self.on_policy_repeat, self.on_policy_repeat >= 1, ">= 1"),
        ]
        for name, value, ok, want in checks:
            if not ok:
                raise ValueError(f"DaggerConfig: {name}={value!r}, expected {want}")

    def beta(self, iteration: int) -> float:
        """DAgger's beta_i: the probability that the expert drives a replanning step of iteration
        ``iteration``'s rollouts (0 for iteration 0, which has none)."""
        return 0.0 if iteration < 1 or self.beta0 == 0.0 else self.beta0 * self.beta_decay ** (iteration - 1)

    def scene_list(self) -> list[str] | None:
        """``scenes`` as a list (None: every scene of ``data``)."""
        return [s.strip() for s in self.scenes.split(",") if s.strip()] if self.scenes else None
