"""Token-level KD of the student's reasoning from an annotator's cached top-k log-probs (offline, no teacher loaded).

Word-level KD (Hinton et al. 2015, "Distilling the knowledge in a neural network"; Kim & Rush
2016 for sequences) matches the student's next-token distribution to the teacher's at every
position of the teacher's text; GKD (Agarwal et al. 2024, "On-policy distillation of language
models") generalises the divergence to a beta-skewed Jensen-Shannon that interpolates between
forward KL(teacher || student) and reverse KL(student || teacher). Here the teacher is only known
through its cached top-k (:mod:`dsdrive.annotation.logprobs`), so the divergence runs on a sparse
support per position.

How the tail is handled (``tail``):

* ``"renormalize"`` (default): both distributions are restricted to the teacher's top-k ids at
  that position and renormalised there (what trl's ``server_distillation`` does with
  ``loss_add_tail=False``). With k = V it is the dense divergence.
* ``"bucket"``: a (k+1)-th bucket holds the remaining mass, ``1 - sum(top-k)`` of each model, so
  a student that puts mass outside the teacher's top-k is penalised (trl's ``loss_add_tail``).
  The teacher's tail is known only at the temperature its log-probs were recorded at, so this
  mode needs ``temperature == 1`` (the cache's own temperature).

The divergence itself is trl's (``trl.experimental.server_distillation``'s ``_jsd_divergence`` and
``_add_tail_bucket``, TRL >= 1.16; beta = 0 forward KL, 1 reverse KL, in between the generalised
JSD with mixture ``beta * teacher + (1 - beta) * student``, ``support_mask`` excluding padded
candidates); what is ours is gathering the student's log-probs on the cached support, the
temperature, the masking over reasoning tokens and the T^2 scale (Hinton 2015: keeps gradient
magnitudes comparable across temperatures).

Why not trl's trainers for this: ``DistillationTrainer`` (on-policy GKD) and
``ServerDistillationTrainer`` run a teacher (local or a vLLM server) during training and feed a
causal LM ``input_ids``; the dual-head student's sequence is ``[scene tokens][prompt][planning
queries][reasoning]`` built from embeddings, with planning losses beside the text, so it cannot be
their ``model``. ``trl.experimental.gold`` (cross-tokenizer ULD / GOLD) needs the teacher's full
logits and tokenizer at train time; with a top-k cache only its idea applies: ``uld_topk_loss``
(Universal Logit Distillation, Boizard et al. 2024: L1 between the sorted probability vectors,
positions paired by index, which needs no shared vocabulary).

Shapes: B batch, R reasoning tokens, V student vocabulary, k cached candidates.
"""

from __future__ import annotations

import warnings

import torch

DIVERGENCES = {"forward_kl": 0.0, "reverse_kl": 1.0, "jsd": None}
"""Divergence name -> trl beta (``jsd`` takes ``beta`` from the caller)."""
TAILS = ("renormalize", "bucket")


def _trl_divergence():
    """trl's ``_jsd_divergence`` and ``_add_tail_bucket`` (imported once, the experimental warning silenced).

    Raises:
        ImportError: the installed trl lacks them (needs trl >= 1.16).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from trl.experimental.server_distillation.server_distillation_trainer import _add_tail_bucket, _jsd_divergence
    except ImportError as e:
        raise ImportError(f"token KD uses trl.experimental.server_distillation's divergence (trl >= 1.16): {e}") from e
    return _jsd_divergence, _add_tail_bucket


def sparse_topk_kd(student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor,
                   mask: torch.Tensor, divergence: str = "forward_kl", beta: float = 0.5, temperature: float = 1.0,
                   tail: str = "renormalize") -> torch.Tensor:
    """Mean per-token divergence between the student and the teacher's cached top-k, times T^2.

    Args:
        student_logits: (B, R, V) the student's logits predicting reasoning token j at position j.
        teacher_ids: (B, R, k) long, the teacher's top-k token ids at each position (student vocabulary).
        teacher_logprobs: (B, R, k) the teacher's log-probs of them at the cache's temperature;
            -inf marks a padded candidate (excluded from the support).
        mask: (B, R) bool, positions that carry teacher log-probs (False: padding, or a token the
            teacher did not write such as an appended eos).
        divergence: ``forward_kl`` (KL(teacher || student), Hinton 2015), ``reverse_kl``
            (KL(student || teacher)) or ``jsd`` (GKD's generalised JSD with ``beta``).
        beta: JSD interpolation in (0, 1) (trl's convention; ignored by the two KLs).
        temperature: T > 0; the student's logits and the teacher's log-probs are divided by T
            before the softmax over the support, and the result is scaled by T^2.
        tail: ``renormalize`` or ``bucket`` (module docstring).

    Returns:
        Scalar: the T^2-scaled divergence averaged over the masked-in positions (0, graph-connected,
        when none).

    Raises:
        ValueError: unknown ``divergence`` / ``tail``, ``beta`` outside (0, 1) for ``jsd``,
            ``temperature`` <= 0, ``bucket`` with ``temperature`` != 1, shapes that disagree, or a
            teacher id outside the student's vocabulary.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"token KD: divergence={divergence!r}, expected one of {sorted(DIVERGENCES)}")
    if tail not in TAILS:
        raise ValueError(f"token KD: tail={tail!r}, expected one of {TAILS}")
    b = DIVERGENCES[divergence]
    if b is None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"token KD: beta={beta!r} must lie in (0, 1) for the generalised JSD")
        b = float(beta)
    if not temperature > 0:
        raise ValueError(f"token KD: temperature={temperature!r} must be > 0")
    if tail == "bucket" and temperature != 1.0:
        raise ValueError(f"token KD: tail='bucket' needs temperature 1 (the teacher's tail mass is known only at the cache's "
                         f"temperature), got {temperature}")
    bsz, r, v = student_logits.shape
    if teacher_ids.shape[:2] != (bsz, r) or teacher_logprobs.shape != teacher_ids.shape or mask.shape != (bsz, r):
        raise ValueError(f"token KD: student_logits {tuple(student_logits.shape)}, teacher_ids {tuple(teacher_ids.shape)}, "
                         f"teacher_logprobs {tuple(teacher_logprobs.shape)}, mask {tuple(mask.shape)} do not align as "
                         "(B, R, V), (B, R, k), (B, R, k), (B, R)")
    mask = mask.bool()
    valid = torch.isfinite(teacher_logprobs) & mask[..., None]  # (B, R, k) support
    if bool((teacher_ids[valid] >= v).any()) or bool((teacher_ids[valid] < 0).any()):
        raise ValueError(f"token KD: a teacher id lies outside the student's vocabulary of {v} (max {int(teacher_ids[valid].max())})")
    jsd_divergence, add_tail_bucket = _trl_divergence()
    neg_inf = torch.tensor(float("-inf"), dtype=torch.float32, device=student_logits.device)
    s_logp = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    s_top = torch.where(valid, s_logp.gather(-1, teacher_ids.long().clamp(min=0, max=v - 1)), neg_inf)
    t_top = torch.where(valid, teacher_logprobs.float() / temperature, neg_inf)
    rows = valid.any(-1)  # (B, R) positions with at least one candidate
    s_top, t_top, support = s_top[rows], t_top[rows], valid[rows]  # (N, k)
    if s_top.shape[0] == 0:
        return student_logits.sum() * 0.0
    if tail == "bucket":
        s_sparse, support = add_tail_bucket(s_top, valid[rows])
        t_sparse, _ = add_tail_bucket(t_top, valid[rows])
    else:
        s_sparse = s_top - torch.logsumexp(s_top, -1, keepdim=True)
        t_sparse = t_top - torch.logsumexp(t_top, -1, keepdim=True)
    per_token = jsd_divergence(s_sparse, t_sparse, b, support).sum(-1)  # (N,)
    return per_token.mean() * temperature ** 2


def uld_topk_loss(student_logits: torch.Tensor, student_mask: torch.Tensor, teacher_logprobs: torch.Tensor,
                  teacher_mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Cross-tokenizer KD from a top-k cache: Universal Logit Distillation (Boizard et al. 2024).

    Positions are paired by index (student reasoning token j with the teacher's token j, the
    shorter sequence decides), as in ULD; at each pair the L1 distance between the two sorted
    probability vectors over k ranks plus one tail bucket (each model's remaining mass) is taken.
    No vocabulary is shared, so ids are never compared.

    Args:
        student_logits: (B, R, V) student logits; student_mask (B, R) bool its real tokens.
        teacher_logprobs: (B, Rt, k) cached teacher log-probs (-inf pads); teacher_mask (B, Rt) bool.
        temperature: T > 0 applied to the student only (the cache is at its own temperature); x T^2.

    Returns:
        Scalar mean over paired positions (0, graph-connected, when none).

    Raises:
        ValueError: ``temperature`` <= 0 or batch sizes differ.
    """
    if not temperature > 0:
        raise ValueError(f"token KD (uld): temperature={temperature!r} must be > 0")
    if student_logits.shape[0] != teacher_logprobs.shape[0]:
        raise ValueError(f"token KD (uld): batch {student_logits.shape[0]} vs teacher {teacher_logprobs.shape[0]}")
    k = teacher_logprobs.shape[-1]
    n = min(student_logits.shape[1], teacher_logprobs.shape[1])
    pair = student_mask[:, :n].bool() & teacher_mask[:, :n].bool()
    if not bool(pair.any()):
        return student_logits.sum() * 0.0
    s_p = torch.softmax(student_logits[:, :n].float() / temperature, -1)
    s_top = s_p.topk(min(k, s_p.shape[-1]), dim=-1).values
    if s_top.shape[-1] < k:
        s_top = torch.nn.functional.pad(s_top, (0, k - s_top.shape[-1]))
    t_top = teacher_logprobs[:, :n].float().exp().nan_to_num(0.0).sort(-1, descending=True).values
    s_full = torch.cat([s_top, (1 - s_top.sum(-1, keepdim=True)).clamp(min=0)], -1)
    t_full = torch.cat([t_top, (1 - t_top.sum(-1, keepdim=True)).clamp(min=0)], -1)
    return (s_full - t_full).abs().sum(-1)[pair].mean() * temperature ** 2


# ------------------------------------------------------------------------------------------- wiring into distill
def pop_token_kd(inputs: dict) -> dict[str, torch.Tensor]:
    """Remove the cached top-k tensors (:data:`dsdrive.student.processing_student.TOKEN_KD_KEYS`) from
    a batch, in place, and return them ({} when there are none): the student never receives them."""
    from dsdrive.student.processing_student import TOKEN_KD_KEYS

    return {k: inputs.pop(k) for k in TOKEN_KD_KEYS if k in inputs}


def token_kd_term(outputs, teacher: dict[str, torch.Tensor], reasoning_mask: torch.Tensor | None, args) -> torch.Tensor:
    """The (unweighted) token-KD term of one batch from the student's output and :func:`pop_token_kd`.

    Args:
        outputs: :class:`dsdrive.student.modeling_student.StudentOutput`; ``reasoning_logits`` (B, R, V).
        teacher: ``teacher_topk_ids`` (B, Rt, k), ``teacher_topk_logprobs`` (B, Rt, k), ``teacher_token_mask`` (B, Rt).
        reasoning_mask: (B, R) the student's real reasoning tokens (ULD pairs them by index).
        args: a :class:`dsdrive.training.distill_config.DistillConfig` (``token_kd_*`` fields).

    Raises:
        ValueError: the student produced no reasoning logits although the batch carries cached top-k.
    """
    logits = outputs.reasoning_logits
    if logits is None:
        raise ValueError("token KD: the batch carries cached annotator top-k but no reasoning tokens (no reasoning_logits)")
    ids, lps, mask = teacher["teacher_topk_ids"], teacher["teacher_topk_logprobs"], teacher["teacher_token_mask"]
    ids, lps, mask = ids.to(logits.device), lps.to(logits.device), mask.to(logits.device)
    if args.token_kd_cross_tokenizer == "uld":
        smask = reasoning_mask if reasoning_mask is not None else torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        return uld_topk_loss(logits, smask.to(logits.device), lps, mask, args.token_kd_temperature)
    r = logits.shape[1]
    if ids.shape[1] < r:  # batch-mates with longer (rendered) reasoning: no teacher data there
        pad = r - ids.shape[1]
        ids = torch.nn.functional.pad(ids, (0, 0, 0, pad))
        lps = torch.nn.functional.pad(lps, (0, 0, 0, pad), value=float("-inf"))
        mask = torch.nn.functional.pad(mask, (0, pad), value=False)
    return sparse_topk_kd(logits, ids[:, :r], lps[:, :r], mask[:, :r], args.token_kd_divergence, args.token_kd_beta,
                          args.token_kd_temperature, args.token_kd_tail)


def load_token_kd_cache(args, train_samples: list, tokenizer):
    """The annotator's log-prob cache for ``dsdrive distill`` (``args.teacher_logprobs``), checked.

    Returns:
        (:class:`dsdrive.annotation.logprobs.LogprobCache`, cross_tokenizer: bool, summary line).

    Raises:
        FileNotFoundError: no log-prob shard in the folder.
        ValueError: the tokenizers differ and ``token_kd_cross_tokenizer`` is ``none`` (names the
            annotator, both tokenizers and fingerprints); a cached sample's annotation comes from
            another annotator (names the sample and both); no training sample has cached log-probs.
    """
    from dsdrive.annotation.logprobs import LogprobCache, tokenizer_fingerprint

    cache = LogprobCache(args.teacher_logprobs)
    cross = tokenizer_fingerprint(tokenizer) != cache.header.tokenizer_fingerprint
    if cross and args.token_kd_cross_tokenizer == "none":
        cache.check_tokenizer(tokenizer, student=f"the student ({args.backbone_path or args.tokenizer_path or 'embedded tiny tokenizer'})")
    hit = 0
    for s in train_samples:
        if s.sample_id not in cache:
            continue
        who = (s.annotation or {}).get("teacher")
        if who != cache.header.teacher:
            raise ValueError(f"sample {s.sample_id}: its annotation is by {who!r} but the cached log-probs in {args.teacher_logprobs} "
                             f"are by {cache.header.teacher!r}; merge that annotator's annotations (dsdrive merge --annotations "
                             f"{args.teacher_logprobs})")
        hit += 1
    if not hit:
        raise ValueError(f"{args.teacher_logprobs}: none of the {len(train_samples)} training samples has cached log-probs "
                         f"({len(cache)} cached samples)")
    line = (f"token KD: {hit}/{len(train_samples)} training samples with cached top-{cache.header.top_k} log-probs of "
            f"{cache.header.teacher} ({args.token_kd_divergence}, T={args.token_kd_temperature}, tail {args.token_kd_tail}"
            f"{', cross-tokenizer ULD' if cross else ', same tokenizer'}; weight {args.token_kd_weight})")
    return cache, cross, line
