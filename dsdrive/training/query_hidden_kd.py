"""EvoDriveVLA's hidden-state KD for the dual-head student: SmoothL1 on the planning queries' final hidden states.

EvoDriveVLA (arXiv 2603.09465) adds ``0.2 * SmoothL1(h_S, h_T*)`` between the student's and a
same-architecture teacher's final hidden states. The dual-head student
(:class:`dsdrive.student.StudentModel`) plans from its 18 planning queries, so the term is taken
on them: ``SmoothL1(query_states_S, query_states_T)``, (B, K*M, H), mean over queries and channels
(:attr:`dsdrive.student.modeling_student.StudentOutput.query_states`). The teacher is a frozen
student checkpoint of the same shape run on the same batch without grad (loaded once, lazily).
Its other half, EvoDriveVLA's ``0.1 * T^2 * KL`` (T = 5) on the reasoning tokens, is the existing
token KD (:mod:`dsdrive.training.token_kd`) with ``token_kd_weight 0.1``, ``token_kd_temperature
5``, ``token_kd_divergence forward_kl``, ``token_kd_tail renormalize``.

What the dual-head teacher is not: EvoDriveVLA's future-aware oracle. The student's prompt
(``prompts/student/``) and scene tokens carry no future, so an oracle of this architecture would
need a privileged processor; the text-trajectory VLA has one
(:mod:`dsdrive.training.oracle_teacher`). Any same-shape student checkpoint serves here (e.g. one
trained longer or on more data).

Wiring: ``DistillConfig.query_hidden_kd_weight`` (0 = off: nothing is loaded, the loss is the
baseline's exactly) and ``query_hidden_kd_teacher`` (the checkpoint folder);
:meth:`dsdrive.training.distill_trainer.DistillTrainer.compute_loss` adds the weighted term and
logs it unweighted as ``query_hidden_kd``.
"""

from __future__ import annotations

from pathlib import Path

import torch


def load_query_kd_teacher(path: str | Path, device) -> torch.nn.Module:
    """The frozen teacher student (eval mode, no grad) from a ``StudentModel`` checkpoint folder.

    Raises:
        FileNotFoundError: no ``config.json`` in ``path`` (naming it).
    """
    from dsdrive.student import StudentModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path / 'config.json'}: missing (query_hidden_kd_teacher must be a student checkpoint folder)")
    teacher = StudentModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    teacher.requires_grad_(False)
    return teacher


def query_hidden_kd(student_states: torch.Tensor, teacher_states: torch.Tensor) -> torch.Tensor:
    """``SmoothL1(h_S, h_T)`` (beta 1, mean) between (B, Q, H) planning-query states.

    Raises:
        ValueError: the shapes differ (another query count or hidden size; naming both).
    """
    if student_states.shape != teacher_states.shape:
        raise ValueError(f"query hidden KD: student query_states {tuple(student_states.shape)} vs teacher {tuple(teacher_states.shape)}; "
                         "the teacher must be a student of the same shape")
    return torch.nn.functional.smooth_l1_loss(student_states.float(), teacher_states.float())


def query_hidden_kd_term(trainer, outputs, inputs: dict) -> torch.Tensor:
    """The unweighted term of one batch: the teacher (``trainer.args.query_hidden_kd_teacher``, loaded
    on first use and kept on the trainer) runs on ``inputs`` without grad.

    Raises:
        ValueError: the student returned no ``query_states``; shapes differ.
    """
    teacher = getattr(trainer, "_query_kd_teacher", None)
    if teacher is None:
        teacher = trainer._query_kd_teacher = load_query_kd_teacher(trainer.args.query_hidden_kd_teacher, trainer.args.device)
    if outputs.query_states is None:
        raise ValueError("query hidden KD: the student returned no query_states")
    with torch.no_grad():
        target = teacher(**inputs).query_states
    return query_hidden_kd(outputs.query_states, target)


__all__ = ["load_query_kd_teacher", "query_hidden_kd", "query_hidden_kd_term"]
