"""Fixtures of the token-KD tests: real samples, a tiny text teacher sharing the student's tokenizer,
and a local OpenAI-compatible server whose answers carry real token log-probs.

* :func:`real_samples` builds a few real nuScenes-mini keyframes (``shared/data``) with rule
  annotations (the rule annotator's labels; the text teacher learns to write their reasoning).
* :func:`build_text_teacher` saves a tiny random Qwen2 (built from a config) with a byte-level BPE
  tokenizer trained on the samples' prompts and reasoning (the student's tokenizer recipe,
  :func:`dsdrive.student.tokenizer.build_tokenizer`), after ``steps`` of supervised fine-tuning
  on (``hf-llm`` prompt -> rendered reasoning), so that its greedy answers have the four lines
  (only the prompt's last ``context`` tokens are fed, at their real positions: the prompt's fixed
  instructions end it, and a full ~1k-token prompt per step is too slow for a CPU test).
* :class:`LogprobChatServer` is :class:`helpers_vlm.FakeChatServer` whose answers carry
  ``logprobs.content``: the answer text is tokenized with a local tokenizer and scored by a local
  causal LM (teacher-forced: position j's distribution given the previous tokens after a bos), so
  the top-k log-probs are a real model's, in the OpenAI format (``token``, ``bytes``, ``logprob``,
  ``top_logprobs``), or as vLLM's ``token_id:N`` strings when the request asks for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers_vlm import FakeChatServer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nuscenes-mini-scenarionet"


def real_samples(scene: str = "scene-0061", n: int = 4, start: int = 0):
    """``n`` real keyframes of ``scene`` (every 3rd from ``start``) with rule annotations (JSON dicts)."""
    from data_builders.scenarionet import build_scene, load_scenario

    from dsdrive.annotation.annotators.rule import RuleAnnotator

    path = DATA / f"sd_nuscenes_v1.0-mini_{scene}.pkl"
    samples = build_scene(load_scenario(path), path)[start::3][:n]
    for s, ann in zip(samples, RuleAnnotator().annotate(samples)):
        s.annotation = ann.model_dump(mode="json")
    return samples


def build_text_teacher(out_dir: str | Path, samples, steps: int = 80, hidden: int = 64, seed: int = 0, tokenizer=None,
                       context: int = 100_000, lr: float = 3e-3, vocab_size: int = 1024, target=None) -> Path:
    """Save a tiny Qwen2 + tokenizer to ``out_dir`` (see the module docstring); returns the folder.

    ``steps`` = 0 keeps the random weights (its answers do not parse). ``target(annotation dict) -> str``
    is the answer taught (default :func:`dsdrive.annotation.reasoning.render_reasoning`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dsdrive.annotation.annotators.hf_llm import load_text_prompt, render_text_prompt
    from dsdrive.annotation.reasoning import render_reasoning
    from dsdrive.student.backbone import tiny_qwen2_config
    from dsdrive.student.tokenizer import build_tokenizer, student_corpus, train_tokenizer

    out_dir = Path(out_dir)
    prompt = load_text_prompt("gpt_driver_text_v1")
    if tokenizer is None:  # the student's recipe (prompts + reasoning), plus the annotator's prompts: shorter prompts
        tok = build_tokenizer(samples, vocab_size=vocab_size)
        tok = train_tokenizer(student_corpus(samples) + [render_text_prompt(prompt, tok, s)[0] for s in samples], vocab_size=vocab_size)
    else:
        tok = tokenizer
    cfg = tiny_qwen2_config(len(tok), hidden_size=hidden, layers=2, heads=4, kv_heads=2, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    # tokenize as the annotator will: AutoTokenizer on a folder whose config.json says qwen2 builds a
    # Qwen2 tokenizer (Qwen's pre-tokenizer regex) over the saved vocabulary, not the object trained here
    cfg.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    if steps:  # SFT on the last `context` prompt tokens + the reasoning, at their real positions (cheap on CPU)
        rows = []
        for s in samples:
            text, _ = render_text_prompt(prompt, tok, s)
            p_ids = tok(text, add_special_tokens=False)["input_ids"]
            r_ids = tok((target or render_reasoning)(s.annotation), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            rows.append((p_ids[-context:], r_ids, len(p_ids) - len(p_ids[-context:])))
        n = max(len(p) + len(r) for p, r, _ in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id)
        labels = torch.full((len(rows), n), -100)
        att = torch.zeros(len(rows), n, dtype=torch.long)
        pos = torch.zeros(len(rows), n, dtype=torch.long)
        for i, (p, r, start) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
            att[i, : len(p) + len(r)] = 1
            pos[i] = start + torch.arange(n)
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=att, position_ids=pos, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def _unicode_to_byte():
    from dsdrive.annotation.logprobs import _unicode_to_byte as u2b

    return u2b()


class LogprobChatServer(FakeChatServer):
    """:class:`FakeChatServer` whose answers carry real token log-probs (module docstring).

    Args:
        model_dir: folder with a causal LM and its tokenizer (the "served model").
        modes: as :class:`FakeChatServer`.
    """

    def __init__(self, model_dir: str | Path, modes: dict[str, str] | None = None, **kw):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(modes, **kw)
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.scored: dict[str, dict] = {}  # answer text -> {"ids", "logprobs" (L, V)} of the last scoring

    def score(self, content: str) -> tuple[list[int], np.ndarray]:
        """Token ids of ``content`` and the model's (L, V) log-probs at each of them (after a bos)."""
        ids = self.tok(content, add_special_tokens=False)["input_ids"]
        start = self.tok.bos_token_id if self.tok.bos_token_id is not None else self.tok.eos_token_id
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([[start] + ids[:-1]])).logits[0]
        lp = torch.log_softmax(logits.float(), -1).numpy()
        self.scored[content] = {"ids": ids, "logprobs": lp}
        return ids, lp

    def _token(self, i: int, as_ids: bool) -> dict:
        if as_ids:
            return {"token": f"token_id:{i}", "bytes": None}
        u2b = _unicode_to_byte()
        raw = bytes(u2b[c] for c in self.tok.convert_ids_to_tokens(i))
        return {"token": raw.decode("utf-8", errors="replace"), "bytes": list(raw)}

    def _answer(self, body: dict, auth: str):
        status, payload, mid = super()._answer(body, auth)
        if status == 200 and body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            as_ids = bool(body.get("return_tokens_as_token_ids"))
            content = payload["choices"][0]["message"]["content"]
            ids, lp = self.score(content)
            items = []
            for j, i in enumerate(ids):
                top = np.argsort(-lp[j], kind="stable")[:k]
                items.append({**self._token(i, as_ids), "logprob": float(lp[j, i]),
                              "top_logprobs": [{**self._token(int(t), as_ids), "logprob": float(lp[j, t])} for t in top]})
            payload["choices"][0]["logprobs"] = {"content": items}
        return status, payload, mid


def short_answer(annotation: dict) -> str:
    """A short four-line answer stating the annotation's meta-action (a quick SFT target)."""
    from dsdrive.annotation.schema import Annotation

    meta = str(Annotation.model_validate(annotation).meta_action)
    return f"Scene: urban road.\nKey objects: none.\nPlan: {meta}.\nWhy: as labelled."


def student_for(tokenizer, seed: int = 0):
    """(StudentModel, StudentProcessor): a tiny student (1-layer Qwen2, hidden 32) sized to ``tokenizer``."""
    from dsdrive.student import StudentConfig, StudentModel, StudentProcessor
    from dsdrive.student.backbone import tiny_qwen2_config

    bb = tiny_qwen2_config(len(tokenizer), hidden_size=32, layers=1, heads=2, kv_heads=1, pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    cfg = StudentConfig(backbone_config=bb.to_dict(), scene_dim=16, scene_layers=1, scene_heads=2, max_agents=8, max_map=8,
                        bev_height=16, bev_width=16, risk_heads=2, risk_points=2)
    torch.manual_seed(seed)
    return StudentModel(cfg), StudentProcessor(tokenizer, cfg, max_prompt_tokens=96, max_reasoning_tokens=96)
