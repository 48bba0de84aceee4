"""A text LLM teacher for token-level KD: a causal LM fine-tuned (SFT) to write the student's reasoning
from a GPT-Driver style scene text, with the student's own tokenizer.

GPT-Driver (Mao et al., arXiv 2310.01415) casts planning as language modelling over a text
description of the scene. Here a Qwen2 causal LM, built from a config (no pretrained weights exist
for the student's 1024-token BPE), is trained on pairs ``prompt -> reasoning``: the prompt is what
the ``hf-llm`` annotator shows it (:func:`dsdrive.annotation.annotators.hf_llm.render_text_prompt`,
e.g. ``prompts/teacher/gpt_driver_text_compact_v1.jinja``), the completion the rule teacher's
reasoning rendered with ``prompts/reasoning/<version>.jinja``, then eos. The loss is the token
cross-entropy on the completion only. Prompt and completion are tokenized separately and
concatenated, exactly as the annotator tokenizes the prompt before generating, so training and
annotation see the same token boundary. Saved with ``save_pretrained`` (model, tokenizer,
generation config with the eos), so ``dsdrive annotate --annotator hf-llm --model DIR`` loads it.

Training runs through ``transformers.Trainer`` (AdamW, cosine schedule); the collator pads on the
right and masks the prompt and the padding with -100. trl's ``SFTTrainer`` is not used because it
tokenizes prompt + completion as one string and lets byte-level BPE merge across the boundary
("\\n\\n" + "Scene"), which the annotator never sees.

Shapes: B batch, L = prompt + completion tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config, Trainer, TrainingArguments

from dsdrive.annotation.annotators.hf_llm import load_text_prompt, render_text_prompt
from dsdrive.annotation.reasoning import render_reasoning
from dsdrive.data.types import PlanningSample


@dataclass
class TextTeacherSettings:
    """Size and training of the text teacher.

    Attributes:
        hidden_size, layers, heads, kv_heads, intermediate_size: Qwen2 shape (untied LM head).
        prompt: text prompt stem in ``prompts/teacher/`` (header ``schema=text``).
        reasoning_template: version of ``prompts/reasoning/`` the completions are rendered with.
        max_steps, batch_size, learning_rate, warmup_steps, weight_decay: AdamW / cosine schedule.
        seed: initialisation and data order.
    """

    hidden_size: int = 512
    layers: int = 5
    heads: int = 8
    kv_heads: int = 2
    intermediate_size: int = 1536
    prompt: str = "gpt_driver_text_compact_v1"
    reasoning_template: str = "v1"
    max_steps: int = 60
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_steps: int = 5
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for k in ("hidden_size", "layers", "heads", "kv_heads", "intermediate_size", "max_steps", "batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"TextTeacherSettings: {k}={getattr(self, k)!r} must be >= 1")
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"TextTeacherSettings: hidden_size={self.hidden_size} must be divisible by heads={self.heads}, "
                             f"and heads by kv_heads={self.kv_heads}")
        if not self.learning_rate > 0:
            raise ValueError(f"TextTeacherSettings: learning_rate={self.learning_rate!r} must be > 0")


def teacher_config(tokenizer, s: TextTeacherSettings) -> Qwen2Config:
    """The teacher's Qwen2 config for ``tokenizer`` (its pad / bos / eos ids; vocabulary = ``len(tokenizer)``)."""
    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                       num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                       max_position_embeddings=2048, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


class PromptCompletionIds(Dataset):
    """``(prompt ids, completion ids + eos)`` of annotated samples, tokenized separately (module docstring).

    Args:
        samples: PlanningSamples with an ``annotation`` (the completion's source); others are skipped.
        tokenizer: the student's tokenizer (needs eos).
        prompt: text prompt stem; reasoning_template: reasoning version.

    Raises:
        ValueError: no sample has an annotation, or the tokenizer has no eos.
    """

    def __init__(self, samples: list[PlanningSample], tokenizer, prompt: str, reasoning_template: str):
        if tokenizer.eos_token_id is None:
            raise ValueError("PromptCompletionIds: the tokenizer has no eos token")
        p = load_text_prompt(prompt)
        self.items = []
        for s in samples:
            if not s.annotation:
                continue
            text, _ = render_text_prompt(p, tokenizer, s)
            pid = tokenizer(text, add_special_tokens=False)["input_ids"]
            cid = tokenizer(render_reasoning(s.annotation, reasoning_template), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            self.items.append({"prompt_ids": pid, "completion_ids": cid, "sample_id": s.sample_id})
        if not self.items:
            raise ValueError(f"PromptCompletionIds: none of the {len(samples)} samples has an annotation")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class PromptCompletionCollator:
    """Right-padded ``input_ids`` / ``attention_mask`` (B, L) and ``labels`` (B, L), -100 on the prompt and padding."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(x["prompt_ids"]) + len(x["completion_ids"]) for x in items)
        ids = torch.full((len(items), n), self.pad, dtype=torch.long)
        labels = torch.full((len(items), n), -100, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        for i, x in enumerate(items):
            seq = x["prompt_ids"] + x["completion_ids"]
            ids[i, :len(seq)] = torch.tensor(seq)
            mask[i, :len(seq)] = 1
            labels[i, len(x["prompt_ids"]):len(seq)] = torch.tensor(x["completion_ids"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train_text_teacher(samples: list[PlanningSample], tokenizer, out_dir: str | Path, settings: TextTeacherSettings,
                       num_threads: int = 1) -> dict:
    """Build, train and save the teacher.

    Args:
        samples: training samples (rule-annotated; held-out scenes must not be among them).
        tokenizer: the student's tokenizer; saved beside the model, and reloaded from there with
            ``AutoTokenizer`` before training, so the teacher, the annotator and the students
            (``--tokenizer_path``) split text alike.
        out_dir: output folder (model.safetensors, config.json, generation_config.json, tokenizer files).
        settings: :class:`TextTeacherSettings`; num_threads: torch CPU threads.

    Returns:
        ``{"parameters", "train_samples", "steps", "train_loss", "train_tokens"}`` (train_loss: mean
        completion-token CE of the last logged steps, nats).
    """
    from transformers import AutoTokenizer

    torch.set_num_threads(num_threads)
    out_dir = Path(out_dir)
    config = teacher_config(tokenizer, settings)
    # train on the tokenizer as every later reader loads it: AutoTokenizer on a folder whose config.json
    # says qwen2 builds a Qwen2 tokenizer (Qwen's pre-tokenizer) over the saved vocabulary, which
    # splits text unlike the in-memory BPE object
    config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    data = PromptCompletionIds(samples, tokenizer, settings.prompt, settings.reasoning_template)
    torch.manual_seed(settings.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.bos_token_id)
    args = TrainingArguments(output_dir=str(out_dir / "trainer"), max_steps=settings.max_steps, per_device_train_batch_size=settings.batch_size,
                             learning_rate=settings.learning_rate, lr_scheduler_type="cosine", warmup_steps=settings.warmup_steps,
                             weight_decay=settings.weight_decay, max_grad_norm=1.0, logging_steps=5, save_strategy="no", report_to="none",
                             use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=settings.seed, remove_unused_columns=False,
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=PromptCompletionCollator(tokenizer.pad_token_id))
    trainer.train()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"parameters": count_parameters(model), "train_samples": len(data), "steps": settings.max_steps,
            "train_loss_last": float(np.mean(losses[-2:])) if losses else None, "train_loss_first": losses[0] if losses else None,
            "train_tokens_per_epoch": int(sum(len(x["prompt_ids"]) + len(x["completion_ids"]) for x in data.items))}


@torch.inference_mode()
def completion_ce(model_dir: str | Path, samples: list[PlanningSample], prompt: str, reasoning_template: str,
                  batch_size: int = 16) -> dict[str, float]:
    """Per-sample mean token cross-entropy (nats) of a saved teacher on each sample's annotation rendered
    with ``reasoning_template`` (+ eos), given its prompt (teacher forcing).

    Returns:
        sample id -> CE, for the annotated samples.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    data = PromptCompletionIds(samples, tok, prompt, reasoning_template)
    collate = PromptCompletionCollator(tok.pad_token_id)
    out = {}
    for b in range(0, len(data), batch_size):
        items = data.items[b:b + batch_size]
        batch = collate(items)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        n = (labels != -100).sum(1).clamp(min=1)
        for x, v in zip(items, (ce.sum(1) / n).tolist()):
            out[x["sample_id"]] = float(v)
    return out
