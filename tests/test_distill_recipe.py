"""The distill stage end to end: ``python recipes/distill.py`` in a subprocess, checkpoint resume through
``dsdrive distill`` (:func:`dsdrive.training.distill.main`), the QLoRA recipe on a tiny Qwen2 stand-in,
config / data errors raised before training, and the 2-process (gloo) accelerate launch of the recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_student import make_samples, one_thread  # noqa: F401

from dsdrive.cli import main as dsdrive_main
from dsdrive.data.dataset import load_dataset_dir, save_samples
from dsdrive.training import distill
from dsdrive.training.distill_config import DistillConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "distill.py"
QLORA_YAML = ROOT / "recipes" / "configs" / "qwen2.5-0.5b" / "distill_qlora.yaml"
GLOO_YAML = ROOT / "recipes" / "accelerate_configs" / "cpu_ddp_gloo.yaml"
TINY = ("tiny_hidden_size: 32\ntiny_layers: 1\ntiny_heads: 2\nscene_dim: 16\nscene_layers: 1\nbev_size: 16\nrisk_points: 2\n"
        "tokenizer_vocab_size: 300\nmax_prompt_tokens: 96\nmax_reasoning_tokens: 64\nper_device_train_batch_size: 4\n"
        "learning_rate: 0.01\nlogging_steps: 1\nreport_to: none\nuse_cpu: true\nnum_threads: 1\ndisable_tqdm: true\nval_scenes: scene-2\n")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """12 synthetic samples over scenes scene-0..2 (scene-2 held out); 8 of 12 annotated."""
    samples = make_samples(12)
    for i, s in enumerate(samples):
        s.inputs.scene_id = f"scene-{i % 3}"
    d = tmp_path_factory.mktemp("data") / "planning"
    save_samples(samples, d)
    return d


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(TINY)
    return p


@pytest.fixture(scope="module")
def subprocess_run(data_dir, tiny_yaml, tmp_path_factory):
    """`python recipes/distill.py --max_steps 2` in a subprocess, saving a checkpoint every step."""
    out = tmp_path_factory.mktemp("run") / "ckpt"
    cmd = [sys.executable, str(RECIPE), "--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(out),
           "--max_steps", "2", "--save_strategy", "steps", "--save_steps", "1"]
    res = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout


def test_subprocess_run_saves_a_checkpoint_the_planner_loads(subprocess_run, data_dir):
    from dsdrive.data.dataset import load_samples
    from dsdrive.planners.student import StudentPlanner

    out, stdout = subprocess_run
    assert "saved" in stdout and (out / "checkpoint-1").is_dir() and (out / "checkpoint-2").is_dir()
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["open_loop"]["num_evaluated"] == 4 and math.isfinite(report["eval_losses"]["eval_loss"])
    traj = StudentPlanner(out).compute_trajectories([s.inputs for s in load_samples(data_dir)[:3]])
    assert traj.shape == (3, 6, 3) and torch.isfinite(torch.from_numpy(traj)).all()


def test_resume_from_checkpoint_continues_the_trainer_state(subprocess_run, data_dir, tiny_yaml):
    out, _ = subprocess_run
    state2 = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state2["global_step"] == 2
    rc = dsdrive_main(["distill", "--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(out), "--max_steps", "4",
                       "--save_strategy", "steps", "--save_steps", "1", "--resume_from_checkpoint", str(out / "checkpoint-2"),
                       "--eval_open_loop", "false"])
    assert rc == 0
    state4 = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    steps = [h["step"] for h in state4["log_history"] if "loss" in h]
    assert state4["global_step"] == 4 and steps == [1, 2, 3, 4]
    # steps 1-2 were restored from checkpoint-2, not retrained: their logged losses are identical
    assert [h["loss"] for h in state4["log_history"] if "loss" in h][:2] == [h["loss"] for h in state2["log_history"] if "loss" in h]
    assert not (out / "checkpoint-3" / "checkpoint-1").exists() and (out / "checkpoint-3").is_dir()


def _tiny_qwen2_standin(out: Path, samples) -> Path:
    """A tiny Qwen2ForCausalLM (random weights) + a locally trained BPE tokenizer with a chat template,
    saved like a hub checkpoint: what the QLoRA recipe loads in place of Qwen2.5-0.5B-Instruct."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from dsdrive.student.tokenizer import build_tokenizer

    tok = build_tokenizer(samples, vocab_size=300)
    tok.chat_template = ("{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}")
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_qlora_recipe_yaml_on_a_tiny_qwen2_standin(data_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    from dsdrive.planners.student import StudentPlanner

    bb = _tiny_qwen2_standin(tmp_path / "qwen2-standin", make_samples(12))
    out = tmp_path / "qlora"
    rc = distill.main(["--config", str(QLORA_YAML), "--backbone_path", str(bb), "--max_steps", "2", "--data", str(data_dir),
                                    "--output_dir", str(out), "--val_scenes", "scene-2", "--per_device_train_batch_size", "4",
                                    "--gradient_accumulation_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
                                    "--dataloader_num_workers", "0", "--learning_rate", "0.01", "--bf16", "false", "--num_threads", "1",
                                    "--disable_tqdm", "true", "--max_prompt_tokens", "96", "--max_reasoning_tokens", "64"])
    assert rc == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 16 and adapter["lora_alpha"] == 32
    planner = StudentPlanner(out)  # merged into a full-precision copy: a plain StudentModel
    q = planner.model.backbone.get_decoder().layers[0].self_attn.q_proj
    assert type(q) is torch.nn.Linear and q.weight.dtype == torch.float32
    base = load_file(bb / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(q.weight.detach(), base)  # the trained LoRA delta is merged in
    report = json.loads((out / "eval_heldout.json").read_text())
    assert report["open_loop"]["num_evaluated"] == 4


@pytest.mark.parametrize("kw, match", [
    (dict(risk_l1_weight=-1.0), "risk_l1_weight=-1.0"),
    (dict(mode_ce_weight=float("nan")), "mode_ce_weight=nan"),
    (dict(waypoint_l1_weight=0.0, mode_ce_weight=0.0, reasoning_ce_weight=0.0, risk_l1_weight=0.0, meta_action_ce_weight=0.0), "sum to 0"),
    (dict(max_steps=0), "max_steps=0"),
    (dict(max_steps=-5), "max_steps=-5"),
    (dict(backbone_path="/nonexistent/qwen"), "backbone_path='/nonexistent/qwen' does not exist"),
    (dict(backbone_path="no-such-org/no-such-model-xyz"), "backbone_path='no-such-org/no-such-model-xyz' is neither"),
    (dict(quantization="3bit", use_lora=True), "quantization='3bit'"),
    (dict(quantization="4bit"), "use_lora"),
    (dict(use_lora=True, lora_r=0), "lora_r=0"),
    (dict(lora_dropout=1.5), "lora_dropout=1.5"),
    (dict(tiny_hidden_size=30, tiny_heads=4), "tiny_hidden_size=30"),
    (dict(learning_rate=0.0), "learning_rate=0.0"),
])
def test_bad_config_values_fail_naming_field_and_value(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace("[", r"\[")):
        DistillConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kw)


def test_backbone_folder_without_config_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="backbone_path=.*without config.json"):
        DistillConfig(output_dir=str(tmp_path), report_to="none", backbone_path=str(tmp_path / "empty"))


def test_bad_config_fails_through_the_cli_before_training(tiny_yaml, data_dir, tmp_path):
    with pytest.raises(ValueError, match="risk_l1_weight=-2.0"):
        distill.main(["--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(tmp_path / "o"),
                                   "--risk_l1_weight", "-2"])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["no_column", "no_annotations"])
def test_dataset_without_annotations_fails_naming_column_and_file(case, data_dir, tiny_yaml, tmp_path):
    ds = load_dataset_dir(data_dir)
    ds = ds.remove_columns("annotation") if case == "no_column" else ds.map(lambda r: {"annotation": None})
    bad = tmp_path / "bad"
    ds.save_to_disk(str(bad))
    base = ["--config", str(tiny_yaml), "--data", str(bad), "--output_dir", str(tmp_path / "o"), "--max_steps", "1", "--eval_open_loop", "false"]
    want = "no 'annotation' column" if case == "no_column" else "column 'annotation' is empty"
    with pytest.raises(ValueError, match=f"{bad}.*{want}.*reasoning_ce_weight"):
        distill.main(base)
    assert not (tmp_path / "o").exists()
    # with both annotation-driven terms off the same data trains (waypoint + mode + meta-action)
    assert distill.main(base + ["--reasoning_ce_weight", "0", "--risk_l1_weight", "0"]) == 0


@pytest.mark.slow
def test_two_process_gloo_accelerate_launch(data_dir, tiny_yaml, tmp_path):
    from dsdrive.planners.student import StudentPlanner

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(GLOO_YAML), "--main_process_port", "29533", str(RECIPE),
           "--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(out), "--max_steps", "2"]
    res = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    state = json.loads((out / "eval_heldout.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2]
    assert StudentPlanner(out).compute_trajectories([s.inputs for s in make_samples(2)]).shape == (2, 6, 3)


def test_init_from_warm_starts_with_the_checkpoints_weights_and_tokenizer(subprocess_run, data_dir, tiny_yaml, tmp_path):
    """--init_from: the student built for fine-tuning IS the saved one (weights, tokenizer, vocabulary), then it trains."""
    from dsdrive.student import StudentModel

    ckpt, _ = subprocess_run
    saved = StudentModel.from_pretrained(str(ckpt), local_files_only=True).state_dict()
    script, args = distill.parse_args(["--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(tmp_path / "w"),
                                       "--init_from", str(ckpt), "--plan_selection", "expected"])
    model, processor = distill.build_student(args, [])
    got = model.state_dict()
    assert got.keys() == saved.keys() and all(torch.equal(got[k], saved[k]) for k in saved)
    assert model.config.plan_selection == "expected"  # the recipe's non-architectural settings apply
    assert processor.tokenizer.get_vocab() == type(processor).from_pretrained(ckpt).tokenizer.get_vocab()
    rc = distill.main(["--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(tmp_path / "w"),
                       "--init_from", str(ckpt), "--max_steps", "1", "--eval_open_loop", "false"])
    assert rc == 0
    tuned = StudentModel.from_pretrained(str(tmp_path / "w"), local_files_only=True).state_dict()
    assert not all(torch.equal(tuned[k], saved[k]) for k in saved)  # one optimizer step moved the weights


def test_init_from_with_another_architecture_fails_naming_field(subprocess_run, data_dir, tiny_yaml, tmp_path):
    ckpt, _ = subprocess_run
    with pytest.raises(ValueError, match=r"init_from checkpoint has scene_dim=16, but the recipe sets scene_dim=32"):
        distill.main(["--config", str(tiny_yaml), "--data", str(data_dir), "--output_dir", str(tmp_path / "w"),
                      "--init_from", str(ckpt), "--scene_dim", "32"])
    with pytest.raises(ValueError, match="init_from=.*config.json"):
        DistillConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, init_from=str(tmp_path))
