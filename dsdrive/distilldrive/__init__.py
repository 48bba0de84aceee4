"""DistillDrive (ICCV 2025, arXiv 2508.05402): the planning teacher that reads ground-truth
annotations, its RL state optimisation, conditional VAE, and the planning distillation terms.

Facts about the public code this follows are in ``shared/research/distilldrive.md``; every
module states which quirks of that code it keeps or fixes.

Modules:
    teacher_inputs       PlanningSample list -> padded tensors (never reads cameras)
    agent_encoder        per-agent temporal encoder over the GT future (privileged)
    map_encoder          PointNet over map polyline segments
    kmeans_anchors       k-means anchors of trajectories (below both vocabularies)
    motion_vocabulary    k-means motion anchors per agent class
    planning_teacher     config + model (18 vocabulary ego queries)
    kinematic_prior      the teacher's own kinematics: CV / CTRV rollout prior and status features
    losses               motion / planning / status losses ("label" and "distribution")
    state_optimization   DQN-style state-optimisation loss
    cvae                 conditional VAE (FIERY-style prior / posterior)
    rescoring            collision-aware rescoring of a command's modes
    kd                   teacher -> student planning distillation terms
    teacher_cache        run the frozen teacher once, cache its outputs by sample id
    planning_vocabulary  k-means planning anchors: 3 commands x 6 modes (``dsdrive vocab``)
    teacher_evaluation   held-out prediction and open-loop L2 / collision of a trained teacher
                         (training: dsdrive.training.planning_teacher*, through transformers.Trainer)
    layers               MLP blocks (sine embedding: dsdrive.layers)
"""

from dsdrive.distilldrive.planning_teacher import PlanningTeacher, PlanningTeacherConfig

__all__ = ["PlanningTeacher", "PlanningTeacherConfig"]
