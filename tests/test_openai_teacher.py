"""OpenAIAnnotator against a local OpenAI-compatible HTTP server (tests/helpers_vlm.FakeChatServer).

Covers: valid answers, invalid -> valid on the re-ask, invalid twice -> failure with raw text,
429 and 500 retried to success, the API key sent to the server but found in no output, log
or failure record, and BEV images for camera-less samples. Token log-probs (token KD): the
top-k a served tiny model computes reach the annotator's records by byte mapping and as vLLM's
``token_id:N`` (the re-ask's answer's when there was one), a wrong tokenizer fails the sample, and
the runner's log-prob shards (resumable) flow into the student's token-KD loss
(:class:`helpers_token_kd.LogprobChatServer`).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from dsdrive.annotation.schema import Annotation, AnnotationFailure
from dsdrive.annotation.annotators.openai_api import OpenAIAnnotator, read_api_key
from dsdrive.data.types import Agents, MapPolylines, PlanningInputs, PlanningSample, PlanningTargets
from helpers_vlm import NUSCENES_INFO, FakeChatServer, nuscenes_sample_0061

SECRET = "sk-test-DO-NOT-LEAK-4f2a9c"


def bev_sample(sample_id: str, n_agents: int = 3) -> PlanningSample:
    """A camera-less sample with a few agents ahead (ego frame, metres)."""
    boxes = np.array([[8.0 + 5 * i, (-1) ** i * 2.0, 0.8, 4.5, 1.9, 1.6, 0.0] for i in range(n_agents)], np.float32)
    agents = Agents([f"a{i}" for i in range(n_agents)], ["VEHICLE"] * n_agents, boxes, np.zeros((n_agents, 2), np.float32))
    inputs = PlanningInputs(
        sample_id=sample_id, scene_id="synthetic", ego_history=np.zeros((4, 3), np.float32), ego_history_mask=np.ones(4, bool),
        ego_status=np.array([5.0, 0, 0, 0, 0, 0], np.float32), ego_status_mask=np.array([1, 1, 0, 0, 0, 0], bool),
        command="STRAIGHT", agents=agents, map=MapPolylines.empty(),
    )
    fut = np.stack([np.arange(1, 7) * 2.5, np.zeros(6), np.zeros(6)], 1).astype(np.float32)
    targets = PlanningTargets(fut, np.ones(6, bool), np.zeros((n_agents, 12, 3), np.float32), np.ones((n_agents, 12), bool))
    return PlanningSample("metadrive", "synthetic", 0.0, inputs, targets)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("DSDRIVE_API_KEY", SECRET)
    return SECRET


def test_modes_retries_reask_and_key_never_leaks(api_key, caplog, capsys):
    modes = {"ok": "valid", "fix": "invalid_then_valid", "bad": "invalid", "rate": "429_then_valid", "boom": "500_then_valid"}
    samples = [bev_sample(s) for s in modes]
    caplog.set_level(logging.DEBUG)
    with FakeChatServer(modes) as srv:
        teacher = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, concurrency=3, max_retries=3, timeout=10, backoff_s=0.01)
        results = teacher.annotate(samples)
        teacher.close()
    by_id = {r.sample_id: r for r in results}
    assert [r.sample_id for r in results] == list(modes)  # in order
    for sid in ("ok", "fix", "rate", "boom"):
        ann = by_id[sid]
        assert isinstance(ann, Annotation), ann
        assert ann.teacher == "openai:fake-vlm" and ann.prompt_version == "teacher/dsdrive_cot_v1@v1"
        assert ann.key_objects[0].agent_id in {"a0", "a1", "a2"} and ann.key_objects[0].position is not None
        assert ann.meta_action.behaviour == "MOVE FORWARD" and len(ann.waypoints) == 6
    bad = by_id["bad"]
    assert isinstance(bad, AnnotationFailure) and "after one re-ask" in bad.reason
    assert bad.raw_text.count("I think the car should slow down.") == 2
    calls = {sid: [(n, st) for s, n, _, st in srv.requests if s == sid] for sid in modes}
    assert calls["ok"] == [(2, 200)]
    assert calls["fix"] == [(2, 200), (4, 200)]  # system+user, then + assistant + re-ask
    assert calls["bad"] == [(2, 200), (4, 200)]
    assert calls["rate"] == [(2, 429), (2, 200)] and calls["boom"] == [(2, 500), (2, 200)]
    # the key did reach the server, and nothing else
    assert all(auth == f"Bearer {SECRET}" for *_, auth, _ in srv.requests)
    assert teacher.usage.requests == 7 and teacher.usage.tokens_in > 0 and teacher.usage.tokens_out > 0
    dumped = json.dumps([r.model_dump() for r in results]) + caplog.text + "".join(capsys.readouterr())
    assert "retrying" in caplog.text  # the retries were logged ...
    assert SECRET not in dumped  # ... without the key


def test_failed_request_is_recorded_redacted(api_key):
    with FakeChatServer({"x": "500_then_valid"}) as srv:
        teacher = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, max_retries=0, backoff_s=0.01)
        (res,) = teacher.annotate([bev_sample("x")])
    assert isinstance(res, AnnotationFailure) and "request failed" in res.reason and "500" in res.reason
    assert SECRET not in res.model_dump_json()


def test_risk_prompt_on_real_cameras(api_key):
    if not NUSCENES_INFO.exists():
        pytest.skip(f"real nuScenes sample absent: {NUSCENES_INFO}")
    sample = nuscenes_sample_0061()
    with FakeChatServer() as srv:
        teacher = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, prompt="risk_v1", backoff_s=0.01)
        (ann,) = teacher.annotate([sample])
    assert isinstance(ann, Annotation), ann
    assert ann.prompt_version == "teacher/risk_v1@v1"
    assert [r.rank for r in ann.risks] == [1, 2, 3] and ann.risks[0].risk >= ann.risks[1].risk
    cam = ann.risks[0]
    assert cam.camera == "CAM_FRONT"  # box sent at 40-60 % of the image -> rescaled to 1600x900 pixels
    np.testing.assert_allclose(cam.box_2d, [640, 360, 960, 540], atol=1e-6)


def test_key_from_environment_only(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("DSDRIVE_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY or DSDRIVE_API_KEY"):
        read_api_key(None)
    assert read_api_key("http://127.0.0.1:1/v1") == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "k1")
    monkeypatch.setenv("DSDRIVE_API_KEY", "k2")
    assert read_api_key(None) == "k1"


def test_dropped_connections_through_the_runner_lose_and_double_nothing(api_key, tmp_path):
    """The real runner (``run_annotate`` + shards) against a server that drops connections mid-run:
    every sample ends with exactly one record, and each dropped request was sent again."""
    from collections import Counter

    from helpers_annotate import make_dataset

    from dsdrive.annotation.annotate import build_parser, run_annotate
    from dsdrive.annotation.store import iter_records, read_index

    n = 6
    make_dataset(tmp_path / "planning", n)
    ids = [f"synth-{k:03d}" for k in range(n)]
    modes = {ids[0]: "drop_then_valid", ids[1]: "drop_then_valid", ids[2]: "invalid_then_valid"}
    args = build_parser().parse_args(["--teacher", "openai", "--data", str(tmp_path / "planning"), "--out", str(tmp_path / "ann"),
                                      "--batch-size", "4", "--shard-size", "2"])
    with FakeChatServer(modes, latency_s=0.02, drop_every=4) as srv:
        teacher = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, concurrency=3, max_retries=4, timeout=10, backoff_s=0.01)
        summary = run_annotate(args, annotator=teacher)
        stats = srv.stats()
    per_id = Counter(item.sample_id for _, _, item in iter_records(tmp_path / "ann"))
    # the last synthetic sample has an all-masked future: still one answer, one record
    assert sorted(per_id) == ids and set(per_id.values()) == {1}, per_id  # nothing lost, nothing doubled
    idx = read_index(tmp_path / "ann")
    assert idx.duplicates == 0 and set(idx.annotations) == set(ids) and not idx.failures
    assert (summary["done"], summary["failed"]) == (n, 0)
    dropped = stats["by_status"].get(0, 0)
    assert dropped >= 3  # the two scripted first requests + every 4th request
    # one answered request per sample + the re-ask; every dropped one was sent again
    assert stats["requests"] == n + 1 + dropped and teacher.usage.requests == n + 1
    assert stats["by_status"][200] == n + 1


# ------------------------------------------------------------------------------------------- token log-probs (token KD)
@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """A tiny random Qwen2 with the tiny student's tokenizer, saved as the "served model" of the test server."""
    import torch
    from helpers_student import make_samples
    from transformers import AutoModelForCausalLM

    from dsdrive.student.backbone import tiny_qwen2_config
    from dsdrive.student.tokenizer import build_tokenizer

    tok = build_tokenizer(make_samples(), vocab_size=300)  # the tiny student's recipe
    d = tmp_path_factory.mktemp("served")
    cfg = tiny_qwen2_config(len(tok), hidden_size=32, layers=1, heads=2, kv_heads=1, pad_token_id=tok.pad_token_id,
                            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("token_ids", [False, True], ids=["bytes", "vllm-token-ids"])
def test_logprobs_are_the_served_models_and_follow_the_reask(api_key, served_model, token_ids):
    from helpers_token_kd import LogprobChatServer

    modes = {"ok": "valid", "fix": "invalid_then_valid", "bad": "invalid"}
    with LogprobChatServer(served_model, modes) as srv:
        teacher = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, concurrency=2, max_retries=0, timeout=10, logprobs=5,
                                  tokenizer=str(served_model), logprobs_token_ids=token_ids)
        res = teacher.annotate([bev_sample(s) for s in modes])
        teacher.close()
        scored = dict(srv.scored)
    assert [type(r).__name__ for r in res] == ["Annotation", "Annotation", "AnnotationFailure"]
    recs = teacher.pop_token_logprobs()
    assert sorted(recs) == ["fix", "ok"]  # a failed sample keeps none
    assert teacher.logprobs_header.top_k == 5 and teacher.logprobs_header.teacher == "openai:fake-vlm"
    for sid, rec in recs.items():
        assert json.loads(rec.text)["meta_action"]["behaviour"] == "MOVE FORWARD"  # the valid answer's (the re-ask's for "fix")
        ref = scored[rec.text]  # what the served model computed for this very text
        assert rec.token_ids.tolist() == ref["ids"]
        top = np.argsort(-ref["logprobs"], -1, kind="stable")[:, :5]
        assert np.array_equal(rec.topk_ids, top)
        assert np.allclose(rec.topk_logprobs, np.take_along_axis(ref["logprobs"], top, -1), atol=1e-6)
        assert np.allclose(rec.token_logprobs, ref["logprobs"][np.arange(len(rec)), rec.token_ids], atol=1e-6)


def test_logprobs_need_a_matching_tokenizer(api_key, served_model, tmp_path):
    from helpers_token_kd import LogprobChatServer

    from dsdrive.student.tokenizer import build_tokenizer

    with pytest.raises(ValueError, match="tokenizer"):
        OpenAIAnnotator("fake-vlm", base_url="http://127.0.0.1:1/v1", logprobs=5)
    with pytest.raises(ValueError, match="0..20"):
        OpenAIAnnotator("fake-vlm", base_url="http://127.0.0.1:1/v1", logprobs=21, tokenizer=str(served_model))
    other = build_tokenizer([bev_sample("x")], vocab_size=270)  # byte-level too, but another vocabulary
    other.save_pretrained(tmp_path / "other")
    with LogprobChatServer(served_model) as srv:
        teacher = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, max_retries=0, logprobs=3, tokenizer=str(tmp_path / "other"))
        (res,) = teacher.annotate([bev_sample("ok")])
    assert isinstance(res, AnnotationFailure) and ("not in the tokenizer's vocabulary" in res.reason or "decode to" in res.reason)
    assert teacher.pop_token_logprobs() == {}


def test_server_logprobs_through_the_runner_into_the_student_loss(api_key, served_model, tmp_path):
    """OpenAI-compatible server -> ``run_annotate`` (log-prob shards, resume) -> cache -> the student's token-KD loss."""
    import torch
    from helpers_annotate import make_dataset
    from helpers_token_kd import LogprobChatServer, student_for
    from transformers import AutoTokenizer

    from dsdrive.annotation.annotate import build_parser, merge, run_annotate
    from dsdrive.annotation.logprobs import LogprobCache, list_logprob_shards
    from dsdrive.data.dataset import load_samples
    from dsdrive.training.distill_config import DistillConfig
    from dsdrive.training.distill_trainer import EncodedSamples
    from dsdrive.training.token_kd import load_token_kd_cache, pop_token_kd, token_kd_term

    make_dataset(tmp_path / "planning", 5)
    argv = ["--teacher", "openai", "--data", str(tmp_path / "planning"), "--out", str(tmp_path / "ann"), "--batch-size", "2",
            "--shard-size", "2"]
    args = build_parser().parse_args(argv)
    with LogprobChatServer(served_model) as srv:
        def run():
            t = OpenAIAnnotator("fake-vlm", base_url=srv.base_url, max_retries=0, logprobs=4, tokenizer=str(served_model))
            return run_annotate(args, annotator=t)

        first = run()
        shards = list_logprob_shards(tmp_path / "ann")
        assert first["done"] == first["logprobs_written"] == 5 and len(shards) == 3
        assert run()["skipped_already_done"] == 5  # resumed: nothing asked again
        shards[0].unlink()  # those samples lack log-probs now: redone, the new records win
        redo = run()
        assert redo["done"] == 2 and redo["skipped_already_done"] == 3
        n_requests = len(srv.requests)
    assert n_requests == 5 + 2
    cache = LogprobCache(tmp_path / "ann")
    assert len(cache) == 5 and cache.header.teacher == "openai:fake-vlm"
    merge(tmp_path / "planning", tmp_path / "ann", tmp_path / "data")
    train = load_samples(tmp_path / "data")

    # the student's tokenizer loaded as the annotator loaded it (AutoTokenizer on the served folder)
    model, proc = student_for(AutoTokenizer.from_pretrained(served_model))
    cfg = DistillConfig(output_dir=str(tmp_path / "o"), report_to=[], token_kd_weight=1.0, teacher_logprobs=str(tmp_path / "ann"),
                        token_kd_divergence="reverse_kl")
    got, cross, _ = load_token_kd_cache(cfg, train, proc.tokenizer)
    assert not cross
    items = EncodedSamples(train, proc, teacher_logprobs=got).items
    for s, it in zip(train, items):
        ids = cache.get(s.sample_id).token_ids.tolist()
        assert it["reasoning_ids"].tolist()[: len(ids)] == ids[: proc.max_reasoning_tokens]  # the answer's tokens, as served
    batch = proc.collate(items)
    teacher = pop_token_kd(batch)
    out = model(**batch)
    kd = token_kd_term(out, teacher, batch["reasoning_mask"], cfg)
    kd.backward()
    assert torch.isfinite(kd) and kd.item() > 0
    assert float(model.backbone.get_output_embeddings().weight.grad.abs().sum()) > 0
