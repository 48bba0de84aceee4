"""The text LLM teacher of the token-KD experiment (dsdrive.training.text_teacher): prompt/completion
tokenization as the hf-llm annotator sees it, the completion-only labels, settings validation, and a
few SFT steps lowering the completion CE, on real nuScenes-mini keyframes."""

from __future__ import annotations

import pytest
import torch
from helpers_student import one_thread  # noqa: F401 (fixture)
from helpers_token_kd import DATA, real_samples

from dsdrive.annotation.annotators.hf_llm import load_text_prompt, render_text_prompt
from dsdrive.annotation.reasoning import render_reasoning
from dsdrive.training.text_teacher import (PromptCompletionCollator, PromptCompletionIds, TextTeacherSettings, completion_ce,
                                           count_parameters, teacher_config, train_text_teacher)

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not DATA.is_dir(), reason=f"real ScenarioNet data not found at {DATA}")]
TINY = dict(hidden_size=32, layers=1, heads=2, kv_heads=1, intermediate_size=64)


@pytest.fixture(scope="module")
def samples():
    return real_samples("scene-0061", 3)


@pytest.fixture(scope="module")
def tokenizer(samples):
    from dsdrive.student.tokenizer import build_tokenizer

    return build_tokenizer(samples, vocab_size=400)


def test_prompt_and_completion_are_tokenized_apart_and_only_the_completion_is_labelled(samples, tokenizer):
    data = PromptCompletionIds(samples, tokenizer, "gpt_driver_text_compact_v1", "v2")
    assert len(data) == 3
    x = data[0]
    text, _ = render_text_prompt(load_text_prompt("gpt_driver_text_compact_v1"), tokenizer, samples[0])
    assert x["prompt_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]  # what the annotator feeds
    assert x["completion_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(x["completion_ids"][:-1]) == render_reasoning(samples[0].annotation, "v2")
    batch = PromptCompletionCollator(tokenizer.pad_token_id)([data[0], data[1]])
    n0 = len(x["prompt_ids"]) + len(x["completion_ids"])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][0, :len(x["prompt_ids"])] == -100).all() and (batch["labels"][0, n0:] == -100).all()
    assert batch["labels"][0, len(x["prompt_ids"]):n0].tolist() == x["completion_ids"]
    assert int(batch["attention_mask"][0].sum()) == n0


def test_settings_and_samples_are_checked(samples, tokenizer):
    with pytest.raises(ValueError, match="divisible"):
        TextTeacherSettings(hidden_size=30, heads=4)
    with pytest.raises(ValueError, match="max_steps=0"):
        TextTeacherSettings(max_steps=0)
    with pytest.raises(ValueError, match="none of the 1 samples has an annotation"):
        import dataclasses

        PromptCompletionIds([dataclasses.replace(samples[0], annotation=None)], tokenizer, "gpt_driver_text_compact_v1", "v1")
    cfg = teacher_config(tokenizer, TextTeacherSettings(**TINY))
    assert cfg.vocab_size == len(tokenizer) and cfg.eos_token_id == tokenizer.eos_token_id and not cfg.tie_word_embeddings


def test_a_few_sft_steps_lower_the_completion_ce_and_the_folder_loads(samples, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before_dir = tmp_path / "t0"
    train_text_teacher(samples, tokenizer, before_dir, TextTeacherSettings(**TINY, max_steps=1, learning_rate=1e-9))
    info = train_text_teacher(samples, tokenizer, tmp_path / "t", TextTeacherSettings(**TINY, max_steps=30, batch_size=3, learning_rate=3e-3))
    assert info["train_samples"] == 3 and info["steps"] == 30 and info["train_loss_last"] < info["train_loss_first"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "t")
    assert count_parameters(model) == info["parameters"] and model.generation_config.eos_token_id == tokenizer.eos_token_id
    loaded = AutoTokenizer.from_pretrained(tmp_path / "t")  # a Qwen2 tokenizer over the same vocabulary (+ its <|endoftext|>)
    assert tokenizer.get_vocab().items() <= loaded.get_vocab().items() and loaded.eos_token_id == tokenizer.eos_token_id
    ce0 = completion_ce(before_dir, samples, "gpt_driver_text_compact_v1", "v1")
    ce1 = completion_ce(tmp_path / "t", samples, "gpt_driver_text_compact_v1", "v1")
    assert set(ce1) == {s.sample_id for s in samples} and all(torch.isfinite(torch.tensor(v)) for v in ce1.values())
    assert sum(ce1.values()) < sum(ce0.values())
