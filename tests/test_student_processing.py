"""StudentProcessor, tokenizer and backbone: features, targets, padding, persistence (offline)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_student import make_inputs, make_sample, make_samples, tiny_student, one_thread  # noqa: F401
from transformers import AutoModelForCausalLM, AutoTokenizer

from dsdrive.annotation.schema import Annotation
from dsdrive.annotation.meta_action import meta_action_from_trajectory
from dsdrive.annotation.reasoning import render_reasoning
from dsdrive.student import StudentConfig, StudentProcessor
from dsdrive.student.backbone import build_tiny_backbone, load_backbone, quantization_config
from dsdrive.student.tokenizer import student_corpus, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def proc():
    return tiny_student()[1]


def test_tokenizer_round_trip(tmp_path):
    corpus = student_corpus(make_samples(6))
    tok = train_tokenizer(corpus, vocab_size=300)
    assert 259 <= len(tok) <= 300 and tok.pad_token_id == 0 and tok.eos_token_id == 2
    text = corpus[1] + " émoji ✓"  # unseen characters still round-trip (byte level)
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    with pytest.raises(ValueError):
        train_tokenizer([])


def test_backbone_build_save_load(tmp_path):
    tok = train_tokenizer(student_corpus(make_samples(4)), vocab_size=280)
    model = build_tiny_backbone(tok, tmp_path / "bb", hidden_size=32, layers=1)
    loaded = load_backbone(tmp_path / "bb")
    assert isinstance(loaded, type(model)) and loaded.config.vocab_size == len(tok)
    ids = torch.tensor([[1, 5, 7]])
    torch.testing.assert_close(model(ids).logits, loaded(ids).logits)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "bb"), type(model))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(tmp_path / "missing")
    with pytest.raises(ValueError):
        quantization_config("2bit")


def test_featurizer_caps_nearest_and_masks(proc):
    x = make_inputs("a")
    boxes = np.concatenate([x.agents.boxes] * 6)  # 12 agents, cap 8
    boxes[:, 0] += np.arange(12) * 3.0
    x.agents.boxes, x.agents.velocities = boxes, np.zeros((12, 2), np.float32)
    x.agents.ids, x.agents.types = [f"a{i}" for i in range(12)], ["VEHICLE", "BUS?"] * 6
    f = proc.featurizer(x)
    d = np.hypot(boxes[:, 0], boxes[:, 1])
    assert f["agents"].shape == (8, 9) and set(np.round(np.hypot(f["agents"][:, 0], f["agents"][:, 1]), 3)) == set(np.round(np.sort(d)[:8], 3))
    assert f["agent_types"].max() == 5  # unknown type -> OTHER
    assert f["ego"].shape == (28,) and int(f["command"]) == 2  # STRAIGHT
    x.command = "UTURN"
    with pytest.raises(ValueError, match="command"):
        proc.featurizer(x)


def test_batch_targets_from_annotation(proc):
    samples = [make_sample("ann", speed=5.0), make_sample("plain", speed=8.0, annotated=False)]
    b = proc(samples)
    assert b["agents"].shape == (2, 2, 9) and b["agents_mask"].all()
    assert b["prompt_mask"].sum(1).tolist() == [len(proc.tokenizer(proc.prompt_fn(s.inputs), add_special_tokens=False)["input_ids"][:96]) for s in samples]
    # reasoning: the rendered chain-of-thought + eos for the annotated sample, nothing for the other
    n = int(b["reasoning_mask"][0].sum())
    ids = b["reasoning_ids"][0, :n].tolist()
    assert ids[-1] == proc.tokenizer.eos_token_id or n == proc.max_reasoning_tokens
    decoded, full = proc.tokenizer.decode(ids[:-1]), render_reasoning(samples[0].annotation)
    assert len(decoded) > 20 and decoded == full[: len(decoded)]
    assert n == proc.max_reasoning_tokens or decoded == full  # truncated only at the token cap
    assert int(b["reasoning_mask"][1].sum()) == 0
    # risk: lead car 0.8 painted in the grid; only the annotated sample is valid
    assert b["risk_valid"].tolist() == [True, False] and float(b["risk_target"][0].max()) == pytest.approx(0.8)
    assert float(b["risk_target"][1].sum()) == 0
    ann = Annotation.model_validate(samples[0].annotation)
    assert int(b["meta_action"][0]) == ann.meta_action.index
    # unannotated: labelled from the ground-truth future, with the same rule the rule teacher uses
    plain = samples[1]
    expected = meta_action_from_trajectory(plain.targets.ego_future, plain.inputs.speed, plain.inputs.ego_history)
    assert int(b["meta_action"][1]) == expected.index
    torch.testing.assert_close(b["ego_future"][1], torch.from_numpy(samples[1].targets.ego_future))


def test_meta_action_label_ignores_a_masked_history(proc):
    """A masked last history pose (zeros in the builders) must not read as a stopped ego."""
    s = make_sample("masked", speed=8.0, annotated=False)
    s.inputs.ego_status_mask[:2] = False  # speed unknown: the label falls back to history / first step
    s.inputs.ego_history[:] = 0.0
    s.inputs.ego_history_mask[:] = False
    label = int(proc([s])["meta_action"][0])
    assert label == meta_action_from_trajectory(s.targets.ego_future, None, None).index
    assert "ACCELERATION" not in str(meta_action_from_trajectory(s.targets.ego_future, None, None))


def test_inputs_only_batch_has_no_targets(proc):
    b = proc([make_inputs("a"), make_inputs("b", n_agents=0, n_map=0)])
    assert "ego_future" not in b and "risk_target" not in b and "reasoning_ids" not in b
    assert b["agents_mask"].tolist() == [[True, True], [False, False]] and b["map_mask"][1].sum() == 0


def test_processor_save_load(tmp_path, proc):
    StudentConfig(**proc.config.to_diff_dict()).save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    again = StudentProcessor.from_pretrained(tmp_path)
    a, b = proc(make_samples(3)), again(make_samples(3))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        StudentProcessor.from_pretrained(tmp_path / "nothing")
