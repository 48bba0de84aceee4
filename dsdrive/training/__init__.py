"""Stage 3, training: configs, trainers and distillation losses (trl's config + trainer pairs).

Modules:
    distill                    ``dsdrive distill`` / ``recipes/distill.py``: the student recipe
    distill_config             DistillConfig (TrainingArguments + the student's loss switches)
    distill_trainer            DistillTrainer (waypoints, reasoning, RiskHead, meta-action losses)
    loss_terms                 LossTermsTrainer: per-term loss logging shared by the trainers
    planning_kd                DistillDrive planning KD into the student (config switches)
    planning_teacher           ``dsdrive planning-teacher``: train the DistillDrive planning teacher
    planning_teacher_config    its TrainingArguments
    planning_teacher_trainer   its transformers.Trainer
    ego_mlp                    ``dsdrive ego-mlp``: the ego-status MLP baseline through Trainer
"""
