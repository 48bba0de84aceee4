"""The ``hf-llm`` text annotator (GPT-Driver style) on real nuScenes-mini keyframes: its answers, the
top-k log-probs it records (checked against a teacher-forced pass of the same model), the runner's
log-prob shards and resume, and the cached tokens reaching the student's loss (same tokenizer, a
tokenizer mismatch error, cross-tokenizer ULD).

The teacher is a tiny Qwen2 built from a config with a student-style byte-level BPE tokenizer and
fine-tuned for a few seconds to answer one keyframe in the four-line format
(:func:`helpers_token_kd.build_text_teacher`).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from helpers_student import one_thread  # noqa: F401 (fixture)
from helpers_token_kd import DATA, build_text_teacher, real_samples, short_answer, student_for

from dsdrive.annotation.annotators.hf_llm import HFLLMAnnotator, parse_text_answer
from dsdrive.annotation.annotators.vlm_answer import AnswerError
from dsdrive.annotation.logprobs import LogprobCache, list_logprob_shards, tokenizer_fingerprint
from dsdrive.annotation.schema import Annotation, AnnotationFailure

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not DATA.is_dir(), reason=f"real ScenarioNet data not found at {DATA}")]


@pytest.fixture(scope="module")
def samples():
    return real_samples("scene-0061", 3)


@pytest.fixture(scope="module")
def teacher_dir(samples, tmp_path_factory):
    """A tiny text teacher fine-tuned on the first keyframe's short answer."""
    return build_text_teacher(tmp_path_factory.mktemp("teacher"), samples[:1], steps=100, target=short_answer)


def _teacher_forced(annotator, sample, ids):
    """(L, V) log-probs of the model at each generated token, by one forward pass over prompt + ids."""
    text, _ = annotator.prompt_text(sample)
    p = annotator.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = annotator.model(input_ids=torch.tensor([p + list(ids)])).logits[0, len(p) - 1: len(p) - 1 + len(ids)]
    return torch.log_softmax(logits.float(), -1)


def test_answers_and_recorded_logprobs_match_the_model(teacher_dir, samples):
    ann = HFLLMAnnotator(str(teacher_dir), logprobs=6, batch_size=3, max_new_tokens=60)
    assert ann.records_logprobs and ann.logprobs_header.temperature == 1.0 and ann.logprobs_header.top_k == 6
    assert ann.logprobs_header.tokenizer_fingerprint == tokenizer_fingerprint(ann.tokenizer)
    res = ann.annotate(samples)
    assert [r.sample_id for r in res] == [s.sample_id for s in samples]
    first = res[0]
    assert isinstance(first, Annotation), first
    assert first.teacher == f"hf-llm:{teacher_dir}" and first.prompt_version == "teacher/gpt_driver_text_v1@v1"
    assert str(first.meta_action) == str(Annotation.model_validate(samples[0].annotation).meta_action)
    assert first.scene_summary == "urban road." and first.explanation == "as labelled." and first.key_objects == []
    for r in res[1:]:  # an unseen keyframe may not come out in the format: then a failure with the raw text, never a guess
        assert isinstance(r, Annotation) or (r.raw_text is not None and r.reason.startswith("invalid answer"))
    recs = ann.pop_token_logprobs()
    assert set(recs) == {r.sample_id for r in res if isinstance(r, Annotation)} and ann.pop_token_logprobs() == {}
    rec = recs[samples[0].sample_id]
    assert rec.token_ids[-1] == ann.tokenizer.eos_token_id and rec.text.strip() == short_answer(samples[0].annotation)
    lp = _teacher_forced(ann, samples[0], rec.token_ids.tolist())
    top_v = lp.topk(6, -1).values
    # the recorded ids are the top 6 of the same distribution (compared by value: ties may order either way)
    assert np.allclose(rec.topk_logprobs, top_v.numpy(), atol=1e-4)
    assert np.allclose(lp.gather(-1, torch.as_tensor(rec.topk_ids, dtype=torch.long)).numpy(), rec.topk_logprobs, atol=1e-4)
    assert np.array_equal(rec.token_ids, rec.topk_ids[:, 0])  # greedy: each generated token is the top-1
    assert np.allclose(rec.token_logprobs, lp.gather(-1, torch.as_tensor(rec.token_ids, dtype=torch.long)[:, None])[:, 0].numpy(), atol=1e-4)
    assert ann.usage.requests == 1 and ann.usage.tokens_out >= len(rec)


def test_sampling_records_the_tempered_distribution(teacher_dir, samples):
    ann = HFLLMAnnotator(str(teacher_dir), logprobs=4, temperature=0.7, max_new_tokens=12, seed=3)
    assert ann.logprobs_header.temperature == 0.7
    text, _ = ann.prompt_text(samples[1])
    (row,), rec = ann._generate([text])
    lp = _teacher_forced(ann, samples[1], row)
    tempered = torch.log_softmax(lp / 0.7, -1)  # log_softmax is shift-invariant: logits/T == log-probs/T, renormalised
    got_i, got_v = torch.stack(rec.ids, 1)[0, : len(row)], torch.stack(rec.lps, 1)[0, : len(row)]
    assert torch.allclose(got_v, tempered.topk(4, -1).values, atol=1e-4)
    assert torch.allclose(tempered.gather(-1, got_i), got_v, atol=1e-4)
    chosen = torch.stack(rec.chosen, 1)[0, : len(row)]
    assert torch.allclose(chosen, tempered.gather(-1, torch.tensor(row)[:, None])[:, 0], atol=1e-4)


def test_random_teacher_fails_with_raw_text_and_records_nothing(samples, tmp_path):
    d = build_text_teacher(tmp_path / "random", samples[:1], steps=0)
    ann = HFLLMAnnotator(str(d), logprobs=3, max_new_tokens=16)
    res = ann.annotate(samples[:2])
    assert all(isinstance(r, AnnotationFailure) and r.raw_text is not None and "invalid answer" in r.reason for r in res)
    assert ann.pop_token_logprobs() == {}


def test_parse_text_answer():
    s = real_samples("scene-0061", 1)[0]
    agents = [{"agent_id": "car-7", "x": 10.0, "y": 2.0}, {"agent_id": "ped-1", "x": 20.0, "y": -4.0}]
    text = ("Scene: busy street.\nKey objects: vehicle at (10.5, 1.8), slower, ahead; pedestrian at (40.0, 0.0), far; junk\n"
            "Plan: TURN LEFT with DECELERATION.\nWhy: slow for the turn.")
    a = parse_text_answer(text, s, agents, teacher="hf-llm:x", prompt_version="p", hindsight=False)
    assert str(a.meta_action) == "TURN LEFT with DECELERATION" and a.scene_summary == "busy street."
    assert [(o.agent_id, o.category, o.position) for o in a.key_objects] == [("car-7", "vehicle", (10.5, 1.8)), (None, "pedestrian", (40.0, 0.0))]
    assert a.key_objects[0].reason == "slower, ahead"
    with pytest.raises(AnswerError, match="Why:"):
        parse_text_answer("Scene: a.\nKey objects: none.\nPlan: STOP.", s, agents, teacher="t", prompt_version="p", hindsight=False)
    with pytest.raises(AnswerError, match="BEHAVIOUR with SPEED"):
        parse_text_answer("Scene: a.\nKey objects: none.\nPlan: go fast.\nWhy: b.", s, agents, teacher="t", prompt_version="p", hindsight=False)
    with pytest.raises(ValueError, match="hindsight"):  # checked before any model is loaded
        HFLLMAnnotator("no-such-model-folder", hindsight=True)


# ------------------------------------------------------------------------------------------- runner -> cache -> student
def test_cli_annotate_writes_resumable_logprob_shards_that_reach_the_student_loss(teacher_dir, samples, tmp_path):
    from transformers import AutoTokenizer

    from dsdrive.cli import main
    from dsdrive.data.dataset import load_samples, save_samples
    from dsdrive.student.tokenizer import build_tokenizer
    from dsdrive.training.distill_config import DistillConfig
    from dsdrive.training.distill_trainer import EncodedSamples
    from dsdrive.training.token_kd import load_token_kd_cache, pop_token_kd, token_kd_term

    save_samples([dataclasses.replace(s, annotation=None) for s in samples], tmp_path / "planning")
    argv = ["annotate", "--teacher", "hf-llm", "--model", str(teacher_dir), "--logprobs", "5", "--max-new-tokens", "60",
            "--data", str(tmp_path / "planning"), "--out", str(tmp_path / "ann"), "--batch-size", "3"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "ann" / "summary-rank0.json").read_text())
    assert summary["done"] >= 1 and summary["logprobs_written"] == summary["done"]
    assert [p.name for p in list_logprob_shards(tmp_path / "ann")] == ["logprobs-rank0-00000.safetensors"]
    assert main(argv) == 0  # a rerun finds every sample done (annotated with log-probs, or failed)
    again = json.loads((tmp_path / "ann" / "summary-rank0.json").read_text())
    assert again["skipped_already_done"] == 3 and again["done"] == again["failed"] == 0
    assert main(["merge", "--data", str(tmp_path / "planning"), "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "data")]) == 0
    train = load_samples(tmp_path / "data")
    cache = LogprobCache(tmp_path / "ann")
    sid = samples[0].sample_id
    assert sid in cache and cache.header.teacher == f"hf-llm:{teacher_dir}"

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model, proc = student_for(tok)
    args = DistillConfig(output_dir=str(tmp_path / "o"), report_to=[], token_kd_weight=1.0, teacher_logprobs=str(tmp_path / "ann"),
                         token_kd_divergence="forward_kl")
    got, cross, line = load_token_kd_cache(args, train, tok)
    assert not cross and "token KD: " in line
    ds = EncodedSamples(train, proc, teacher_logprobs=got)
    i = [s.sample_id for s in train].index(sid)
    rec = cache.get(sid)
    assert ds.items[i]["reasoning_ids"].tolist() == rec.token_ids.tolist()  # the annotator's very tokens (they end in eos)
    assert np.allclose(ds.items[i]["teacher_topk_logprobs"], rec.topk_logprobs)
    batch = proc.collate(ds.items)
    teacher = pop_token_kd(batch)
    out = model(**batch)
    kd = token_kd_term(out, teacher, batch["reasoning_mask"], args)
    assert torch.isfinite(kd) and kd.item() > 0
    (out.loss + kd).backward()
    assert float(model.backbone.get_output_embeddings().weight.grad.abs().sum()) > 0

    other = build_tokenizer(train, vocab_size=300)  # a student with another vocabulary: a clear error ...
    with pytest.raises(ValueError, match="do not align") as e:
        load_token_kd_cache(args, train, other)
    assert cache.header.tokenizer_fingerprint in str(e.value) and f"hf-llm:{teacher_dir}" in str(e.value)
    uld = DistillConfig(output_dir=str(tmp_path / "o"), report_to=[], token_kd_weight=1.0, teacher_logprobs=str(tmp_path / "ann"),
                        token_kd_cross_tokenizer="uld")
    got, cross, _ = load_token_kd_cache(uld, train, other)  # ... unless a cross-tokenizer method is chosen
    assert cross
    model2, proc2 = student_for(other)
    ds2 = EncodedSamples(train, proc2, teacher_logprobs=got, cross_tokenizer=True)
    assert ds2.items[i]["reasoning_ids"][:-1].tolist() == other(rec.text, add_special_tokens=False)["input_ids"][:95]
    b2 = proc2.collate(ds2.items)
    t2 = pop_token_kd(b2)
    out2 = model2(**b2)
    loss2 = token_kd_term(out2, t2, b2["reasoning_mask"], uld)
    loss2.backward()
    assert torch.isfinite(loss2) and loss2.item() > 0


def test_distill_with_token_kd_end_to_end(teacher_dir, samples, tmp_path):
    """``dsdrive annotate --teacher hf-llm --logprobs`` -> ``merge`` -> ``dsdrive distill --token_kd_weight 1``."""
    from dsdrive.cli import main
    from dsdrive.data.dataset import save_samples

    save_samples([dataclasses.replace(s, annotation=None) for s in samples], tmp_path / "planning")
    assert main(["annotate", "--teacher", "hf-llm", "--model", str(teacher_dir), "--logprobs", "5", "--max-new-tokens", "60",
                 "--data", str(tmp_path / "planning"), "--out", str(tmp_path / "ann")]) == 0
    assert main(["merge", "--data", str(tmp_path / "planning"), "--annotations", str(tmp_path / "ann"), "--out", str(tmp_path / "data")]) == 0
    out = tmp_path / "student"
    assert main(["distill", "--data", str(tmp_path / "data"), "--val_scenes", "none", "--eval_strategy", "no", "--output_dir", str(out),
                 "--tokenizer_path", str(teacher_dir), "--teacher_logprobs", str(tmp_path / "ann"), "--token_kd_weight", "1.0",
                 "--max_steps", "2", "--per_device_train_batch_size", "3", "--tiny_hidden_size", "32", "--tiny_layers", "1",
                 "--tiny_heads", "2", "--scene_dim", "16", "--scene_layers", "1", "--bev_size", "16", "--risk_points", "2",
                 "--risk_l1_weight", "0", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true"]) == 0
    report = json.loads((out / "eval_heldout.json").read_text())
    logged = [h for h in report["log_history"] if "token_kd" in h]
    assert logged and all(np.isfinite(h["token_kd"]) and h["token_kd"] > 0 for h in logged)
