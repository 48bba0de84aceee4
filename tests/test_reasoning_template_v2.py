"""Reasoning template v2 (the ``Plan:`` meta-action line first) beside v1, its config switch, and the
compact GPT-Driver text prompt of the hf-llm annotator, on real nuScenes-mini keyframes."""

from __future__ import annotations

import functools

import pytest
from helpers_student import one_thread  # noqa: F401 (fixture)
from helpers_token_kd import DATA, real_samples

from dsdrive.annotation.annotators.hf_llm import load_text_prompt, parse_text_answer, render_text_prompt
from dsdrive.annotation.meta_action_text import parse_stated_meta_action
from dsdrive.annotation.reasoning import render_reasoning
from dsdrive.annotation.schema import Annotation

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not DATA.is_dir(), reason=f"real ScenarioNet data not found at {DATA}")]


@pytest.fixture(scope="module")
def samples():
    return real_samples("scene-0061", 3) + real_samples("scene-0553", 3)


def test_v2_is_v1_with_the_plan_line_first(samples):
    for s in samples:
        v1, v2 = render_reasoning(s.annotation), render_reasoning(s.annotation, version="v2")
        l1, l2 = v1.splitlines(), v2.splitlines()
        assert [x.split(":")[0] for x in l1] == ["Scene", "Key objects", "Plan", "Why"]
        assert l2 == [l1[2], l1[0], l1[1], l1[3]]
        meta = Annotation.model_validate(s.annotation).meta_action
        assert l2[0] == f"Plan: {meta}." and str(parse_stated_meta_action(v2)) == str(meta) == str(parse_stated_meta_action(v1))
    assert render_reasoning(samples[0].annotation) == render_reasoning(samples[0].annotation, version="v1")  # the default is still v1


def test_v2_needs_no_other_tokenizer(samples):
    """Byte-level BPE pre-splits at spaces and newlines, so reordering whole lines leaves every word count,
    hence the trained vocabulary and merges, unchanged: the student's tokenizer (fitted on v1 text) serves v2."""
    from dsdrive.student.tokenizer import student_corpus, train_tokenizer

    v1 = train_tokenizer(student_corpus(samples), vocab_size=400)
    v2 = train_tokenizer([t for s in samples for t in (student_corpus([s])[0], render_reasoning(s.annotation, "v2"))], vocab_size=400)
    assert v1.get_vocab() == v2.get_vocab()
    text = render_reasoning(samples[1].annotation, "v2")
    assert v1(text)["input_ids"] == v2(text)["input_ids"]


def test_distill_config_switches(tmp_path):
    from dsdrive.training.distill_config import DistillConfig

    assert DistillConfig(output_dir=str(tmp_path), report_to=[]).reasoning_template == "v1"
    assert DistillConfig(output_dir=str(tmp_path), report_to=[], reasoning_template="v2").reasoning_template == "v2"
    with pytest.raises(ValueError, match="reasoning_template='v9'"):
        DistillConfig(output_dir=str(tmp_path), report_to=[], reasoning_template="v9")
    with pytest.raises(ValueError, match="teacher_logprobs"):
        DistillConfig(output_dir=str(tmp_path), report_to=[], teacher_tokens_target=True)


def test_processor_learns_the_v2_text(samples):
    from helpers_student import tiny_student

    model, proc = tiny_student()
    ids_v1 = proc.encode_sample(samples[0])["reasoning_ids"]
    proc.reasoning_fn = functools.partial(render_reasoning, version="v2")  # what dsdrive distill --reasoning_template v2 sets
    ids_v2 = proc.encode_sample(samples[0])["reasoning_ids"]
    tok = proc.tokenizer
    meta = Annotation.model_validate(samples[0].annotation).meta_action
    assert tok.decode(ids_v2, skip_special_tokens=True).strip().startswith(f"Plan: {meta}.\nScene:")
    assert tok.decode(ids_v1, skip_special_tokens=True).strip().startswith("Scene:")


def test_compact_prompt_is_short_and_answers_parse_in_either_order(samples):
    from dsdrive.student.tokenizer import build_tokenizer

    tok = build_tokenizer(samples, vocab_size=600)
    full, compact = load_text_prompt("gpt_driver_text_v1"), load_text_prompt("gpt_driver_text_compact_v1")
    assert compact.prompt_version == "teacher/gpt_driver_text_compact_v1@v1" and not compact.hindsight
    s = samples[0]
    text, agents = render_text_prompt(compact, tok, s)
    assert text.startswith("Drive.") and f"Command: {s.inputs.command}." in text and len(agents) == len(render_text_prompt(full, tok, s)[1])
    assert len(text.splitlines()) <= 5 + 8 + 2  # header, status, history, agents title, at most 8 agents
    assert len(tok(text)["input_ids"]) < len(tok(render_text_prompt(full, tok, s)[0])["input_ids"]) / 2
    for version in ("v1", "v2"):
        ann = parse_text_answer(render_reasoning(s.annotation, version), s, agents, teacher="t", prompt_version=compact.prompt_version,
                                hindsight=False)
        assert str(ann.meta_action) == str(Annotation.model_validate(s.annotation).meta_action)
