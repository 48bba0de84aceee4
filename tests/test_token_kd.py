"""Token-level KD from cached top-k log-probs: the sparse divergences, the cache, the distill wiring,
and the text-only reasoning-consistency metric.

Divergence references are written out here from their definitions (Hinton 2015 forward KL, reverse
KL, GKD's generalised JSD), independent of trl's code that :mod:`dsdrive.training.token_kd` calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsdrive.annotation.logprobs import (
    LogprobCache,
    LogprobsHeader,
    TokenIdMapper,
    TokenLogprobs,
    list_logprob_shards,
    logprob_sample_ids,
    remove_orphan_logprob_shards,
    tokenizer_fingerprint,
    write_logprob_shard,
)
from dsdrive.evaluation.metrics.reasoning_consistency import parse_stated_meta_action, reasoning_consistency
from dsdrive.training.token_kd import sparse_topk_kd, token_kd_term, uld_topk_loss
from helpers_student import make_samples, one_thread, tiny_student  # noqa: F401 (fixture)


def _dense_reference(s_logits, t_logits, mask, divergence, beta=0.5, temperature=1.0):
    """Mean over masked positions of the divergence on the full vocabulary, x T^2."""
    s = torch.log_softmax(s_logits.double() / temperature, -1)
    t = torch.log_softmax(t_logits.double() / temperature, -1)
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1)  # noqa: E731  KL(a || b) from log-probs
    if divergence == "forward_kl":
        d = kl(t, s)
    elif divergence == "reverse_kl":
        d = kl(s, t)
    else:
        m = torch.log(beta * t.exp() + (1 - beta) * s.exp())
        d = beta * kl(t, m) + (1 - beta) * kl(s, m)
    return d[mask].mean() * temperature ** 2


def _case(b=2, r=5, v=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, r, v, generator=g) * 2
    t = torch.randn(b, r, v, generator=g) * 2
    mask = torch.ones(b, r, dtype=torch.bool)
    mask[1, -2:] = False
    return s, t, mask


def _topk(t_logits, k, temperature=1.0):
    lp = torch.log_softmax(t_logits / temperature, -1)
    v, i = lp.topk(k, -1)
    return i, v


@pytest.mark.parametrize("divergence,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.2)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sparse_equals_dense_when_k_is_V(divergence, beta, temperature):
    s, t, mask = _case()
    ids, lps = _topk(t, t.shape[-1])  # the whole vocabulary, cached at T = 1
    got = sparse_topk_kd(s, ids, lps, mask, divergence, beta, temperature)
    want = _dense_reference(s, t, mask, divergence, beta, temperature)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-6), (float(got), float(want))
    if temperature == 1.0:  # one tail bucket holding ~0 mass changes nothing either
        bucket = sparse_topk_kd(s, ids, lps, mask, divergence, beta, temperature, tail="bucket")
        assert torch.allclose(bucket.double(), want, rtol=1e-4, atol=1e-5)


def test_forward_kl_nonnegative_and_zero_when_student_is_teacher():
    s, t, mask = _case(seed=1)
    for k in (1, 3, 8):
        ids, lps = _topk(t, k)
        for div in ("forward_kl", "reverse_kl", "jsd"):
            for tail in ("renormalize", "bucket"):
                assert float(sparse_topk_kd(s, ids, lps, mask, div, tail=tail)) >= 0.0
        ids, lps = _topk(s, k)  # the student is the teacher
        for tail in ("renormalize", "bucket"):
            assert abs(float(sparse_topk_kd(s, ids, lps, mask, "forward_kl", tail=tail))) < 1e-6
    # only the top-k support matters when renormalising: moving the student's mass elsewhere changes nothing ...
    ids, lps = _topk(s, 4)
    s2 = s.clone()
    outside = torch.ones_like(s, dtype=torch.bool).scatter(-1, ids, False)
    s2[outside] -= 5.0
    assert abs(float(sparse_topk_kd(s2, ids, lps, mask))) < 1e-5
    # ... while the tail bucket sees it
    assert float(sparse_topk_kd(s2, ids, lps, mask, tail="bucket")) > 1e-3


def test_temperature_squared_scaling_and_padding():
    s, t, mask = _case(seed=2)
    ids, lps = _topk(t, 5)
    for div in ("forward_kl", "reverse_kl", "jsd"):
        at_t = sparse_topk_kd(s, ids, lps, mask, div, temperature=3.0)
        by_hand = sparse_topk_kd(s / 3.0, ids, lps / 3.0, mask, div, temperature=1.0)
        assert torch.allclose(at_t, 9.0 * by_hand, rtol=1e-5)
    # a candidate padded with -inf is outside the support: same as a cache with k - 1
    lps_pad = lps.clone()
    lps_pad[..., -1] = float("-inf")
    assert torch.allclose(sparse_topk_kd(s, ids, lps_pad, mask), sparse_topk_kd(s, ids[..., :-1], lps[..., :-1], mask), atol=1e-6)
    # masked-out positions do not count, whatever they hold
    lps_junk = lps.clone()
    lps_junk[~mask] = -0.01
    assert torch.allclose(sparse_topk_kd(s, ids, lps_junk, mask), sparse_topk_kd(s, ids, lps, mask))


def test_gradients_flow_only_through_masked_in_positions():
    s, t, mask = _case(seed=3)
    s.requires_grad_(True)
    ids, lps = _topk(t, 4)
    sparse_topk_kd(s, ids, lps, mask, "jsd", beta=0.3).backward()
    g = s.grad.abs().sum(-1)
    assert bool((g[mask] > 0).all()) and float(g[~mask].sum()) == 0.0
    assert torch.isfinite(s.grad).all()
    s.grad = None
    sparse_topk_kd(s, ids, lps, torch.zeros_like(mask)).backward()  # nothing to match: 0, still connected
    assert float(s.grad.abs().sum()) == 0.0


def test_bad_arguments_are_named():
    s, t, mask = _case()
    ids, lps = _topk(t, 3)
    with pytest.raises(ValueError, match="divergence='kl'"):
        sparse_topk_kd(s, ids, lps, mask, "kl")
    with pytest.raises(ValueError, match="beta=1.0"):
        sparse_topk_kd(s, ids, lps, mask, "jsd", beta=1.0)
    with pytest.raises(ValueError, match="temperature=0"):
        sparse_topk_kd(s, ids, lps, mask, temperature=0)
    with pytest.raises(ValueError, match="bucket"):
        sparse_topk_kd(s, ids, lps, mask, temperature=2.0, tail="bucket")
    with pytest.raises(ValueError, match="outside the student's vocabulary"):
        sparse_topk_kd(s, ids + s.shape[-1], lps, mask)
    with pytest.raises(ValueError, match="do not align"):
        sparse_topk_kd(s, ids[:, :2], lps[:, :2], mask)


def test_uld_is_zero_for_equal_distributions_and_ignores_ids():
    s, t, mask = _case(seed=4)
    _, lps = _topk(s, 6)
    assert float(uld_topk_loss(s, mask, lps, mask)) < 1e-5
    perm = s[..., torch.randperm(s.shape[-1])]  # another vocabulary order, same sorted probabilities
    assert float(uld_topk_loss(perm, mask, lps, mask)) < 1e-5
    _, lt = _topk(t, 6)
    s.requires_grad_(True)
    loss = uld_topk_loss(s, mask, lt, mask)
    loss.backward()
    assert loss.item() > 0 and float(s.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------- cache
def _records(tok, n=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for j in range(n):
        text = f"Scene: sample {j}.\nPlan: STOP."
        ids = tok(text, add_special_tokens=False)["input_ids"]
        lp = np.log(rng.dirichlet(np.ones(len(tok)), size=len(ids))).astype(np.float32)
        top = np.argsort(-lp, -1)[:, :k]
        out[f"s{j}"] = TokenLogprobs(ids, lp[np.arange(len(ids)), ids], top, np.take_along_axis(lp, top, -1), text)
    return out


def test_cache_round_trip_orphans_and_fingerprint(tmp_path):
    _, proc = tiny_student()
    tok = proc.tokenizer
    header = LogprobsHeader("hf-llm:/m", "/m", tokenizer_fingerprint(tok), 4, 1.0, "teacher/gpt_driver_text_v1@v1")
    recs = _records(tok)
    write_logprob_shard(tmp_path, 0, 0, header, {k: recs[k] for k in ("s0", "s1")})
    write_logprob_shard(tmp_path, 1, 0, header, {"s2": recs["s2"], "s1": recs["s1"]})
    (tmp_path / "annotations-rank0-00000.jsonl").write_text("")
    (tmp_path / "annotations-rank1-00000.jsonl").write_text("")
    with pytest.raises(FileExistsError):
        write_logprob_shard(tmp_path, 0, 0, header, recs)
    cache = LogprobCache(tmp_path)
    assert cache.header == header and sorted(cache.sample_ids) == ["s0", "s1", "s2"]
    for sid, r in recs.items():
        got = cache.get(sid)
        assert got.text == r.text and np.array_equal(got.token_ids, r.token_ids) and np.array_equal(got.topk_ids, r.topk_ids)
        assert np.allclose(got.topk_logprobs, r.topk_logprobs, rtol=2e-3, atol=2e-3)  # stored as float16
        assert got.topk_logprobs.dtype == np.float32
    cache.check_tokenizer(tok)
    from dsdrive.student.tokenizer import build_tokenizer

    tok2 = build_tokenizer(make_samples(), vocab_size=290)  # another vocabulary
    with pytest.raises(ValueError, match="do not align") as e:
        cache.check_tokenizer(tok2)
    assert header.tokenizer_fingerprint in str(e.value) and tokenizer_fingerprint(tok2) in str(e.value) and "hf-llm:/m" in str(e.value)
    # a log-prob shard whose annotation shard never got written is an orphan: removed, its ids no longer done
    write_logprob_shard(tmp_path, 0, 1, header, {"s9": recs["s0"]})
    assert "s9" in logprob_sample_ids(tmp_path)
    assert remove_orphan_logprob_shards(tmp_path, 1) == 0 and remove_orphan_logprob_shards(tmp_path, 0) == 1
    assert "s9" not in logprob_sample_ids(tmp_path) and len(list_logprob_shards(tmp_path)) == 2
    # another annotator's shard in the same folder is refused
    write_logprob_shard(tmp_path, 2, 0, LogprobsHeader("openai:x", "/t", "sha256:0", 4, 1.0, "p"), {"s7": recs["s0"]})
    with pytest.raises(ValueError, match="differs"):
        LogprobCache(tmp_path)


def test_token_record_validation_and_byte_mapping():
    with pytest.raises(ValueError, match="topk_logprobs"):
        TokenLogprobs([1, 2], [-0.1, -0.2], [[1], [2]], [[0.5], [-0.1]])
    with pytest.raises(ValueError, match=r"\(L,\), \(L, k\)"):
        TokenLogprobs([1, 2], [-0.1, -0.2], [[1]], [[-0.1]])
    _, proc = tiny_student()
    tok = proc.tokenizer
    mapper = TokenIdMapper(tok)
    text = "Plan: MOVE FORWARD with CONSTANT. Ünïcode ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    from dsdrive.annotation.logprobs import _unicode_to_byte

    u2b = _unicode_to_byte()
    for i in ids:
        raw = bytes(u2b[c] for c in tok.convert_ids_to_tokens(i))
        assert mapper.id_of(raw.decode("utf-8", errors="replace"), list(raw)) == i
    assert mapper.id_of("token_id:5") == 5
    assert mapper.id_of("<|eos|>") == tok.eos_token_id
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        mapper.id_of("zzzzqqqq-not-a-token")
    with pytest.raises(ValueError, match="outside"):
        mapper.id_of(f"token_id:{len(tok) + 3}")


# ------------------------------------------------------------------------------------------- student loss
def _kd_batch(model, proc, samples, k=4, seed=0):
    """Encode ``samples`` with cached records whose tokens are each sample's rendered reasoning."""
    from dsdrive.annotation.reasoning import render_reasoning

    rng = np.random.default_rng(seed)
    items, plain = [], []
    v = len(proc.tokenizer)
    for s in samples:
        ids = proc.tokenizer(render_reasoning(s.annotation), add_special_tokens=False)["input_ids"] + [proc.tokenizer.eos_token_id]
        lp = np.log(rng.dirichlet(np.ones(v) * 0.3, size=len(ids))).astype(np.float32)
        top = np.argsort(-lp, -1)[:, :k]
        rec = TokenLogprobs(ids, lp[np.arange(len(ids)), ids], top, np.take_along_axis(lp, top, -1), "")
        items.append(proc.encode_sample(s, teacher_tokens=rec))
        plain.append(proc.encode_sample(s))
    return proc.collate(items), proc.collate(plain)


def test_weight_zero_is_the_baseline_loss_and_weight_adds_the_term(tmp_path, one_thread):  # noqa: F811
    from dsdrive.training.distill_config import DistillConfig
    from dsdrive.training.distill_trainer import DistillTrainer

    samples = [s for s in make_samples(6) if s.annotation][:3]
    model, proc = tiny_student()
    kd, plain = _kd_batch(model, proc, samples)
    # the cached tokens are the rendered reasoning here, so the targets agree and only the KD keys differ
    assert torch.equal(kd["reasoning_ids"][:, : plain["reasoning_ids"].shape[1]], plain["reasoning_ids"])
    assert kd["teacher_topk_ids"].shape[:2] == kd["reasoning_ids"].shape and kd["teacher_token_mask"].any()
    model.eval()
    base = model(**plain).loss.item()
    common = dict(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_steps=1)
    t0 = DistillTrainer(model=model, args=DistillConfig(**common), data_collator=proc.collate)
    assert DistillTrainer.compute_loss(t0, model, dict(kd)).item() == base  # weight 0: exactly the baseline
    with pytest.raises(ValueError, match="teacher_logprobs"):
        DistillConfig(**common, token_kd_weight=1.0)
    cfg = DistillConfig(**common, token_kd_weight=0.5, teacher_logprobs=str(tmp_path), token_kd_divergence="jsd")
    t1 = DistillTrainer(model=model, args=cfg, data_collator=proc.collate)
    batch = dict(kd)
    with_kd = DistillTrainer.compute_loss(t1, model, batch)
    keys = {k: kd[k] for k in ("teacher_topk_ids", "teacher_topk_logprobs", "teacher_token_mask")}
    term = token_kd_term(model(**plain), keys, plain["reasoning_mask"], cfg)
    assert abs(with_kd.item() - (base + 0.5 * term.item())) < 1e-5 and term.item() > 0
    assert "teacher_topk_ids" not in batch  # popped before the student saw the batch
    # gradients reach the backbone's LM head through the KD term alone
    model.zero_grad()
    token_kd_term(model(**plain), keys, plain["reasoning_mask"], cfg).backward()
    assert float(model.backbone.get_output_embeddings().weight.grad.abs().sum()) > 0


def test_config_validation_names_fields(tmp_path):
    from dsdrive.training.distill_config import DistillConfig

    common = dict(output_dir=str(tmp_path), report_to=[])
    for kw, field in [({"token_kd_weight": -1.0}, "token_kd_weight"), ({"token_kd_divergence": "kl"}, "token_kd_divergence"),
                      ({"token_kd_beta": 1.0}, "token_kd_beta"), ({"token_kd_temperature": 0.0}, "token_kd_temperature"),
                      ({"token_kd_tail": "bucket", "token_kd_temperature": 2.0}, "token_kd_tail"),
                      ({"token_kd_cross_tokenizer": "gold"}, "token_kd_cross_tokenizer"),
                      ({"tokenizer_path": str(tmp_path / "none")}, "tokenizer_path")]:
        with pytest.raises(ValueError, match=field):
            DistillConfig(**common, **kw)
    assert DistillConfig(**common).token_kd_weight == 0.0


# ------------------------------------------------------------------------------------------- consistency from text
@pytest.mark.parametrize("text,want", [
    ("Scene: x.\nKey objects: none.\nPlan: MOVE FORWARD with DECELERATION.\nWhy: y.", "MOVE FORWARD with DECELERATION"),
    ("plan:   turn left  with quick acceleration", "TURN LEFT with QUICK ACCELERATION"),
    ("Scene: stopped.\nPlan: STOP.\nWhy: red light.", "STOP"),
    ("Plan: STOP with DECELERATION TO ZERO.", "STOP"),
    ('{"scene_summary": "a", "meta_action": {"speed": "CONSTANT", "behaviour": "CHANGE LANE TO RIGHT"}, "plan": "p"}',
     "CHANGE LANE TO RIGHT with CONSTANT"),
    ("Plan: MOVE FORWARD with CONSTANT.\nPlan: STOP.", "MOVE FORWARD with CONSTANT"),  # the first statement counts
    # unparseable: no statement, looping text, a missing speed, words outside the vocabulary
    ("Stay stopped: Stay stopped: Stay stopped:", None),
    ("Plan: MOVE FORWARD.", None),
    ("Plan: keep going with CONSTANT", None),
    ("Plan: MOVE FORWARD with CONSTANT and then STOP.", None),
    ('"meta_action": {"behaviour": "FLY", "speed": "CONSTANT"}', None),
    ("", None),
    (None, None),
])
def test_parse_stated_meta_action(text, want):
    got = parse_stated_meta_action(text)
    assert (None if got is None else str(got)) == want


def test_reasoning_consistency_reports_parse_rate_and_agreement_apart():
    t = np.arange(1, 7) * 0.5
    straight = np.stack([8.0 * t, 0 * t], -1)  # 8 m/s held: MOVE FORWARD with CONSTANT
    stop = np.zeros((6, 2))
    texts = ["Plan: MOVE FORWARD with CONSTANT.", "Plan: STOP.", "no plan here", "Plan: MOVE FORWARD with DECELERATION."]
    wp = np.stack([straight, stop, straight, straight])
    out = reasoning_consistency(texts, wp, [8.0, 0.0, 8.0, 8.0], ["a", "b", "c", "d"])
    assert (out["num_texts"], out["num_parsed"], out["num_agree"]) == (4, 3, 2)
    assert out["parse_rate"] == 0.75 and out["agreement"] == round(2 / 3, 4) and out["agreement_all"] == 0.5
    assert out["behaviour_agreement"] == 1.0
    assert [r["agrees"] for r in out["records"]] == [True, True, None, False]
    assert out["records"][2]["stated"] is None and out["records"][2]["implied"] == "MOVE FORWARD with CONSTANT"
    empty = reasoning_consistency([], np.zeros((0, 6, 2)), [])
    assert empty["parse_rate"] is None and empty["agreement"] is None
    with pytest.raises(ValueError, match="texts"):
        reasoning_consistency(["a"], np.zeros((2, 6, 2)), [1.0, 1.0])


def test_open_loop_report_measures_consistency_from_text_only(tmp_path):
    """The report has every sample explained and scores the text, never a head: a planner whose text
    always says MOVE FORWARD with CONSTANT agrees exactly where its own waypoints imply that."""
    import json

    from dsdrive.annotation.meta_action import meta_action_from_trajectory
    from dsdrive.evaluation.open_loop_report import collect_report_inputs, write_open_loop_report
    from dsdrive.planners.constant_velocity import ConstantVelocityPlanner

    class Talking(ConstantVelocityPlanner):
        name = "student"

        def plan_and_explain(self, inputs):
            text = "Scene: road.\nPlan: MOVE FORWARD with CONSTANT.\nWhy: speed held." if inputs.speed > 4 else "Looping: looping:"
            return self.compute_trajectory(inputs), {"reasoning": text, "meta_action": "STOP", "meta_action_source": "meta-action head"}

    samples = make_samples(8)
    student = Talking()
    inputs = collect_report_inputs({"constant_velocity": ConstantVelocityPlanner(), "student": student}, samples, worst_n=2)
    rc = inputs.reasoning_consistency
    fast = [s for s in inputs.samples if s.inputs.speed > 4]
    implied = [str(meta_action_from_trajectory(student.compute_trajectory(s.inputs)[:, :2], s.inputs.speed)) for s in fast]
    assert rc["num_texts"] == len(inputs.samples) and rc["num_parsed"] == len(fast)
    assert rc["num_agree"] == sum(m == "MOVE FORWARD with CONSTANT" for m in implied) > 0
    assert all(r["stated"] in (None, "MOVE FORWARD with CONSTANT") for r in rc["records"])  # the head's "STOP" is never used
    html = write_open_loop_report(tmp_path, inputs)
    assert "Reasoning-plan consistency" in html.read_text()
    assert json.loads((tmp_path / "report.json").read_text())["reasoning_consistency"]["parse_rate"] == rc["parse_rate"]
