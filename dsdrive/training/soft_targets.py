"""EvoDriveVLA's soft-target selection among four oracle-teacher candidates (arXiv 2603.09465).

For each training sample the trained oracle teacher (:mod:`dsdrive.training.oracle_teacher`) is run
teacher-forced on the ground-truth answer and four candidate next-token distributions over the
answer tokens are made:

0. ``teacher``: its logits;
1. ``teacher_mc``: the best of ``mc_samples`` (10) MC-dropout samples, dropout ``mc_dropout`` (0.1)
   on the final hidden state (the LM head's input) before the LM head;
2. ``refined``: its logits with its own argmax answer inserted as "Student prediction to refine"
   (the coarse-to-fine prompt);
3. ``refined_mc``: the best of ``mc_samples`` dropout samples of the refined pass.

"Best" and the final pick are per sample by the minimum mean cross-entropy to the ground-truth
answer tokens. What is stored per sample: the answer ids (A,), the picked candidate's log-probs
(A, k) at T = 1 with their ids (k = the whole vocabulary, or the top ``soft_target_top_k``; the
student's KL renormalises on them), the final hidden states h_T* (A, H) of the candidate's pass
(the MC-dropout mask is a sampling device for the soft label; the hidden target is the state
before it), the candidate index and the four cross-entropies. Row j of each is the prediction of
answer token j (the position before it). Dropout masks come from a seeded ``torch.Generator``:
the targets are reproducible.

Files (``<out>/``): ``soft_targets.pt`` (``torch.save`` of ``{"meta": ..., "samples": {sample_id:
{...}}}``, written atomically) and ``soft_targets.json`` (the meta and the candidate counts).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from dsdrive.data.atomic_io import write_json_atomic
from dsdrive.training.oracle_teacher import REFINE_PREFIX, OracleProcessor, refine_batch
from dsdrive.training.text_trajectory_trainer import answer_window

CANDIDATES = ("teacher", "teacher_mc", "refined", "refined_mc")
SOFT_TARGETS_FILE = "soft_targets.pt"
SUMMARY_FILE = "soft_targets.json"
SOFT_KEYS = ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_hidden", "teacher_token_mask")
"""Batch keys the collator adds for the student (popped by the trainer before the VLM sees the batch)."""


def _unwrap(vlm):
    return vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm


def answer_hidden(vlm, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states (the LM head's input) at the positions that predict answer tokens.

    Returns:
        ``(hidden (B, K-1, H), target (B, K-1))``: position j predicts ``target[:, j]`` (-100 off the answer).
    """
    base = _unwrap(vlm)
    labels = batch["labels"]
    keep = answer_window(labels)
    out = base.model(**{k: v for k, v in batch.items() if k != "labels"})
    return out.last_hidden_state[:, -keep:-1], labels[:, -keep:][:, 1:]


def _mc_best(head, h: torch.Tensor, y: torch.Tensor, n: int, p: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Best (min CE) of ``n`` dropout samples of ``h`` (A, H) through ``head``: (logits (A, V), CE)."""
    best, best_ce = None, float("inf")
    for _ in range(n):
        keep = (torch.rand(h.shape, generator=gen) >= p).to(h.device, h.dtype)
        z = head(h * keep / (1.0 - p))
        ce = float(torch.nn.functional.cross_entropy(z.float(), y))
        if ce < best_ce:
            best, best_ce = z, ce
    return best, best_ce


@torch.no_grad()
def sample_soft_target(vlm, processor: OracleProcessor, sample, mc_samples: int = 10, mc_dropout: float = 0.1, top_k: int = 0,
                       gen: torch.Generator | None = None) -> dict:
    """The four candidates of one sample and the pick (module docstring).

    Returns:
        ``answer_ids`` (A,) long, ``ids`` (A, k) int32 or None (whole vocabulary), ``logprobs``
        (A, k) float32, ``hidden`` (A, H) float32, ``candidate`` int, ``ce`` list of 4 floats
        (NaN for an MC candidate when ``mc_samples`` is 0).
    """
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    tok = processor.tokenizer
    head = _unwrap(vlm).lm_head
    dev = next(vlm.parameters()).device
    batch = {k: v.to(dev) for k, v in processor.collate([processor.encode_sample(sample)]).items()}
    h0, t0 = answer_hidden(vlm, batch)
    m0 = t0[0] != -100
    h0, y = h0[0][m0], t0[0][m0]
    z0 = head(h0)
    coarse = z0.argmax(-1).tolist()  # its own teacher-forced argmax answer, cut before its first eos
    coarse = [coarse[: coarse.index(tok.eos_token_id)] if tok.eos_token_id in coarse else coarse]
    refined = refine_batch(batch, coarse, tok(REFINE_PREFIX, add_special_tokens=False)["input_ids"], tok.convert_tokens_to_ids("<|im_end|>"),
                           tok.pad_token_id)
    h1, t1 = answer_hidden(vlm, refined)
    m1 = t1[0] != -100
    h1 = h1[0][m1]
    if not torch.equal(t1[0][m1], y):
        raise RuntimeError(f"sample {sample.sample_id}: the refined pass's answer differs from the ground truth's")
    z1 = head(h1)

    def ce(z):
        return float(torch.nn.functional.cross_entropy(z.float(), y))

    cands = [(z0, h0, ce(z0)), None, (z1, h1, ce(z1)), None]
    if mc_samples > 0:
        zm, cm = _mc_best(head, h0, y, mc_samples, mc_dropout, gen)
        cands[1] = (zm, h0, cm)
        zm, cm = _mc_best(head, h1, y, mc_samples, mc_dropout, gen)
        cands[3] = (zm, h1, cm)
    ces = [c[2] if c is not None else float("nan") for c in cands]
    pick = int(np.nanargmin(ces))
    z, h, _ = cands[pick]
    lp = torch.log_softmax(z.float(), -1)
    ids = None
    if 0 < top_k < lp.shape[-1]:
        lp, ids = lp.topk(top_k, -1)
        ids = ids.to(torch.int32).cpu()
    return {"answer_ids": y.cpu(), "ids": ids, "logprobs": lp.cpu(), "hidden": h.float().cpu(), "candidate": pick, "ce": ces}


def build_soft_targets(vlm, processor: OracleProcessor, samples, out_dir: str | Path, mc_samples: int = 10, mc_dropout: float = 0.1,
                       top_k: int = 0, seed: int = 0, meta: dict | None = None) -> dict:
    """Soft targets of every sample into ``out_dir`` (module docstring); returns the summary.

    Args:
        vlm: the trained oracle teacher (put in eval mode here).
        processor: its :class:`OracleProcessor`.
        samples: PlanningSamples with a fully valid future.
        meta: extra fields for the summary (e.g. the teacher's folder and the tokenizer fingerprint).

    Raises:
        ValueError: a sample without a fully valid future (the processor's message).
    """
    from dsdrive.annotation.logprobs import tokenizer_fingerprint

    vlm.eval()
    gen = torch.Generator().manual_seed(int(seed))
    rows = {s.sample_id: sample_soft_target(vlm, processor, s, mc_samples, mc_dropout, top_k, gen)
            for s in tqdm(samples, desc="soft targets", unit="sample", leave=False)}
    counts = {c: sum(r["candidate"] == i for r in rows.values()) for i, c in enumerate(CANDIDATES)}
    mean_ce = {c: float(np.mean([r["ce"][i] for r in rows.values()])) if rows and (mc_samples > 0 or i % 2 == 0) else None
               for i, c in enumerate(CANDIDATES)}
    summary = {**(meta or {}), "tokenizer_fingerprint": tokenizer_fingerprint(processor.tokenizer), "num_samples": len(rows),
               "mc_samples": mc_samples, "mc_dropout": mc_dropout, "top_k": top_k, "seed": seed, "picked": counts,
               "mean_ce": mean_ce, "mean_ce_picked": float(np.mean([min(x for x in r["ce"] if x == x) for r in rows.values()])) if rows else None}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (SOFT_TARGETS_FILE + ".tmp")
    torch.save({"meta": summary, "samples": rows}, tmp)
    os.replace(tmp, out / SOFT_TARGETS_FILE)
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


def load_soft_targets(folder: str | Path, tokenizer=None) -> dict:
    """Read ``soft_targets.pt`` of ``folder``; with ``tokenizer``, check it is the teacher's.

    Raises:
        FileNotFoundError: no ``soft_targets.pt`` (naming it).
        ValueError: the tokenizer differs from the teacher's (naming both fingerprints).
    """
    from dsdrive.annotation.logprobs import tokenizer_fingerprint

    path = Path(folder) / SOFT_TARGETS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the soft-target stage: recipes/evodrive.py)")
    data = torch.load(path, weights_only=True)
    if tokenizer is not None:
        fp = tokenizer_fingerprint(tokenizer)
        if fp != data["meta"]["tokenizer_fingerprint"]:
            raise ValueError(f"{path}: tokenizer_fingerprint {data['meta']['tokenizer_fingerprint']} (the oracle teacher's) differs from "
                             f"the student's {fp}; EvoDriveVLA's KL needs one vocabulary")
    return data


class EvoDriveItems(Dataset):
    """Text-trajectory items (:class:`~dsdrive.training.text_trajectory_trainer.TextTrajectoryItems`)
    with their soft targets attached (``soft``); None targets = the baseline's items.

    Raises:
        ValueError: a sample without soft targets, or whose stored answer ids differ from the
            processor's (naming the sample).
    """

    def __init__(self, items, samples, targets: dict | None):
        self.items = list(items)
        if targets is not None:
            for item, s in zip(self.items, samples):
                t = targets["samples"].get(s.sample_id)
                if t is None:
                    raise ValueError(f"sample {s.sample_id}: no soft target in the soft-target file ({len(targets['samples'])} samples)")
                if not np.array_equal(np.asarray(t["answer_ids"]), item["answer_ids"]):
                    raise ValueError(f"sample {s.sample_id}: soft-target answer_ids differ from the student's answer tokens "
                                     "(another tokenizer or trajectory template)")
                item["soft"] = t

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def collate_soft_targets(items: list[dict]) -> dict[str, torch.Tensor]:
    """Right-aligned (B, A_max, ...) soft-target tensors of :data:`SOFT_KEYS` ({} when no item has any).

    ``teacher_topk_logprobs`` pads with -inf, ``teacher_token_mask`` False on padding; row b's
    answer occupies the last A_b positions (as the left-padded batch's answer does).
    """
    soft = [x.get("soft") for x in items]
    if all(s is None for s in soft):
        return {}
    if any(s is None for s in soft):
        raise ValueError("collate_soft_targets: a batch mixes items with and without soft targets")
    a = max(len(s["answer_ids"]) for s in soft)
    v = soft[0]["logprobs"].shape[-1]
    hdim = soft[0]["hidden"].shape[-1]
    b = len(soft)
    ids = torch.zeros(b, a, v, dtype=torch.long)
    lps = torch.full((b, a, v), float("-inf"))
    hid = torch.zeros(b, a, hdim)
    mask = torch.zeros(b, a, dtype=torch.bool)
    for i, s in enumerate(soft):
        n = len(s["answer_ids"])
        ids[i, a - n:] = s["ids"].long() if s["ids"] is not None else torch.arange(v).expand(n, v)
        lps[i, a - n:] = s["logprobs"].float()
        hid[i, a - n:] = s["hidden"].float()
        mask[i, a - n:] = True
    return dict(zip(SOFT_KEYS, (ids, lps, hid, mask)))


__all__ = ["CANDIDATES", "SOFT_TARGETS_FILE", "SUMMARY_FILE", "SOFT_KEYS", "answer_hidden", "sample_soft_target", "build_soft_targets",
           "load_soft_targets", "EvoDriveItems", "collate_soft_targets"]
