"""The local Qwen2.5-VL teacher for real (tiny random model built from a config), prompts,
answer parsing and the BEV rendering."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.annotation.bev_render import render_bev, save_bev_png
from dsdrive.annotation.annotators.vlm_answer import AnswerContext, AnswerError, extract_json, parse_answer
from dsdrive.annotation.annotators.vlm_common import load_prompt, prompt_variables
from helpers_vlm import DRIVELM, NUSCENES_INFO, FakeChatServer, build_tiny_qwen_vl, drivelm_keyframe_sample, nuscenes_sample_0061
from test_openai_teacher import bev_sample

needs_data = pytest.mark.skipif(
    not (NUSCENES_INFO.exists() and DRIVELM.exists()), reason=f"real data absent: {NUSCENES_INFO} / {DRIVELM}"
)
TINY_PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 8)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return str(build_tiny_qwen_vl(tmp_path_factory.mktemp("tiny_qwen_vl"), **TINY_PIXELS))


@needs_data
def test_qwen_teacher_end_to_end_on_real_images(tiny_qwen):
    from dsdrive.annotation.annotators.qwen_vl import QwenVLAnnotator

    teacher = QwenVLAnnotator(tiny_qwen, batch_size=2, max_new_tokens=8, **TINY_PIXELS)
    samples = [nuscenes_sample_0061(), drivelm_keyframe_sample(0), bev_sample("bev-only")]
    results = teacher.annotate(samples)
    assert [r.sample_id for r in results] == [s.sample_id for s in samples]
    # random weights write gibberish: every sample takes the re-ask path and is recorded as failed
    for r in results:
        assert isinstance(r, AnnotationFailure), r
        assert r.teacher == f"qwen-vl:{tiny_qwen}" and r.prompt_version == "teacher/dsdrive_cot_v1@v1"
        assert "invalid answer after one re-ask" in r.reason
        assert "--- first answer ---" in r.raw_text and "--- re-ask answer ---" in r.raw_text
    # 3 samples in batches of 2 -> 2 generate calls, then the 3 re-asks -> 2 more
    assert teacher.usage.requests == 4
    assert 0 < teacher.usage.tokens_out <= 3 * 2 * 8
    six_cams = 6 * 4  # >= 4 vision tokens per image, 6 images for the real samples
    assert teacher.usage.tokens_in > 2 * (2 * six_cams)


@needs_data
def test_qwen_batched_equals_one_at_a_time(tiny_qwen):
    """Left padding: a sample's greedy answer does not depend on its batch-mates."""
    from dsdrive.annotation.annotators.qwen_vl import QwenVLAnnotator

    teacher = QwenVLAnnotator(tiny_qwen, batch_size=2, max_new_tokens=6, **TINY_PIXELS)
    convs = [teacher._conversation(s)[0] for s in (nuscenes_sample_0061(), bev_sample("b"))]
    batched = teacher._generate(convs)
    single = [teacher._generate([c])[0] for c in convs]
    assert batched == single


def test_quantized_on_cpu_is_a_clear_error(tiny_qwen):
    from dsdrive.annotation.annotators.qwen_vl import QwenVLAnnotator

    with pytest.raises(RuntimeError, match="load_in_4bit needs a CUDA GPU"):
        QwenVLAnnotator(tiny_qwen, load_in_4bit=True, device="cpu")
    with pytest.raises(ValueError, match="not both"):
        QwenVLAnnotator(tiny_qwen, load_in_4bit=True, load_in_8bit=True, device="cpu")


def test_prompts_versions_and_hindsight():
    cot, hs, risk = (load_prompt(n) for n in ("dsdrive_cot_v1", "dsdrive_cot_hindsight_v1", "risk_v1"))
    assert (cot.schema, cot.hindsight, risk.schema, hs.hindsight) == ("cot", False, "risk", True)
    assert cot.prompt_version == "teacher/dsdrive_cot_v1@v1"
    s = bev_sample("h1")
    plain = cot.render("user", **prompt_variables(s, [("BEV", 448, 448)], hindsight=False))
    hind = hs.render("user", **prompt_variables(s, [("BEV", 448, 448)], hindsight=True))
    assert "(3.0: 15.0, 0.0)" in hind and "15.0, 0.0" not in plain  # the GT future only in hindsight
    assert '"agent_id"' in plain and '"camera"' not in plain  # BEV: objects by id
    with pytest.raises(Exception, match="future"):
        hs.render("user", **prompt_variables(s, [("BEV", 448, 448)], hindsight=False))
    with pytest.raises(FileNotFoundError, match="dsdrive_cot_v1"):
        load_prompt("no_such_prompt")


def test_parse_answer_rescales_and_rejects():
    ctx = AnswerContext(image_sizes={"CAM_FRONT": (160, 90, 1600, 900)}, agent_positions={"a0": (8.0, 1.0)})
    good = FakeChatServer.valid_answer(False, [("CAM_FRONT", 160, 90)], ["a0"])
    import json

    text = f"Sure!\n```json\n{json.dumps(good)}\n```"
    ann = parse_answer(text, "cot", ctx, sample_id="s", teacher="t", prompt_version="p", hindsight=True)
    assert isinstance(ann, Annotation) and ann.hindsight
    np.testing.assert_allclose(ann.key_objects[0].box_2d, [640, 360, 960, 540])
    assert ann.key_objects[1].position == (8.0, 1.0)
    bad_cam = json.loads(json.dumps(good))
    bad_cam["key_objects"][0]["camera"] = "CAM_BACK"
    with pytest.raises(AnswerError, match="CAM_BACK"):
        parse_answer(json.dumps(bad_cam), "cot", ctx, sample_id="s", teacher="t", prompt_version="p", hindsight=False)
    bad_meta = dict(good, meta_action={"behaviour": "FLY", "speed": "CONSTANT"})
    with pytest.raises(AnswerError, match="behaviour"):
        parse_answer(json.dumps(bad_meta), "cot", ctx, sample_id="s", teacher="t", prompt_version="p", hindsight=False)
    with pytest.raises(AnswerError, match="no JSON object"):
        extract_json("no braces here")


def test_bev_render_png_size(tmp_path):
    s = bev_sample("png", n_agents=5)
    im = render_bev(s, size_px=320)
    assert im.size == (320, 320) and im.mode == "RGB"
    arr = np.asarray(im)
    assert (arr[..., 0] > 150).any() and arr.std() > 5  # ego (red) and agents drawn on white
    path = tmp_path / "bev.png"
    save_bev_png(s, path, size_px=256)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (256, 256)
    with pytest.raises(ValueError, match="size_px"):
        render_bev(s, size_px=8)
    assert io.BytesIO(path.read_bytes()).read(8) == b"\x89PNG\r\n\x1a\n"


def test_varlen_attention_matches_masked_sdpa():
    """Left-padded prefill without a mask gives stock masked SDPA's output at every real position;
    other cases (no mask, a decoding step) are handed to stock SDPA unchanged."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from dsdrive.annotation.annotators.qwen_vl import varlen_sdpa_attention

    torch.manual_seed(0)
    b, h, kv, t, d = 3, 4, 2, 9, 8
    module = type("Attn", (), {"num_key_value_groups": h // kv, "is_causal": True})()
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, kv, t, d), torch.randn(b, kv, t, d)
    pads = torch.tensor([0, 3, 3])
    real = torch.arange(t)[None] >= pads[:, None]  # (B, T)
    mask = (torch.ones(t, t, dtype=torch.bool).tril()[None] & real[:, None, :])[:, None]  # (B, 1, T, T)
    mask = mask | torch.eye(t, dtype=torch.bool)  # pad queries see themselves (as transformers' mask keeps rows finite)
    got, _ = varlen_sdpa_attention(module, q, k, v, mask, scaling=d ** -0.5)
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=d ** -0.5)
    assert got.shape == ref.shape == (b, t, h, d)
    torch.testing.assert_close(got[real], ref[real], rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(got[~real]) == 0
    # no mask: identical to stock SDPA (causal kernel)
    torch.testing.assert_close(varlen_sdpa_attention(module, q, k, v, None)[0], sdpa_attention_forward(module, q, k, v, None)[0])
    # a decoding step (one query): stock SDPA with the mask
    step_mask = real[:, None, None, :]
    torch.testing.assert_close(varlen_sdpa_attention(module, q[:, :, -1:], k, v, step_mask)[0],
                               sdpa_attention_forward(module, q[:, :, -1:], k, v, step_mask)[0])


@needs_data
def test_sorted_prefetched_batches_answer_as_stock_in_order(tiny_qwen):
    """Length sorting + prefetch + varlen attention give the answers of the stock path, in the caller's order."""
    from dsdrive.annotation.annotators.qwen_vl import QwenVLAnnotator

    fast = QwenVLAnnotator(tiny_qwen, batch_size=3, max_new_tokens=5, **TINY_PIXELS)
    stock = QwenVLAnnotator(tiny_qwen, batch_size=3, max_new_tokens=5, attn_implementation="sdpa", sort_by_length=False,
                            prefetch=False, **TINY_PIXELS)
    samples = [drivelm_keyframe_sample(0), nuscenes_sample_0061(), bev_sample("b"), drivelm_keyframe_sample(1), bev_sample("c", 1)]
    convs = [fast._conversation(s)[0] for s in samples]
    lengths = [fast._prompt_length(c) for c in convs]
    batches = fast._batches(convs)
    assert [i for b in batches for i in b] == sorted(range(5), key=lambda i: lengths[i]) != list(range(5))
    assert fast._chat(convs) == stock._chat(convs) == [stock._generate([c])[0] for c in convs]
    assert fast.usage.requests == 2 and fast.usage.tokens_in == sum(lengths)  # padding is not counted


@needs_data
def test_image_that_does_not_decode_fails_alone(tiny_qwen, tmp_path):
    from dsdrive.annotation.annotators.qwen_vl import QwenVLAnnotator
    from dsdrive.annotation.annotators.vlm_common import ImageSource

    good = drivelm_keyframe_sample(0)
    src = ImageSource.from_file("CAM_FRONT", good.inputs.cameras[0].image_path)
    im = src.load((160, 90))
    assert im.size == (160, 90) and im.mode == "RGB" and src.size == (1600, 900) and src.format == "JPEG"
    bad = drivelm_keyframe_sample(1)
    broken = tmp_path / "broken.jpg"
    data = open(bad.inputs.cameras[0].image_path, "rb").read()
    broken.write_bytes(data[: len(data) // 3])  # the header reads, the pixels do not
    bad.inputs.cameras[0].image_path = str(broken)
    with pytest.raises(FileNotFoundError, match="CAM_X image_path .*missing.jpg does not exist"):
        ImageSource.from_file("CAM_X", tmp_path / "missing.jpg")
    teacher = QwenVLAnnotator(tiny_qwen, batch_size=2, max_new_tokens=4, **TINY_PIXELS)
    res_good, res_bad = teacher.annotate([good, bad])
    assert "request failed: OSError" in res_bad.reason and "broken.jpg" in res_bad.reason
    assert "invalid answer after one re-ask" in res_good.reason  # the batch-mate was answered (gibberish: random weights)
