"""Fixtures for the VLM teacher tests: a tiny random Qwen2.5-VL and real samples.

* :func:`build_tiny_qwen_vl` builds a Qwen2.5-VL from a config (2 text layers, hidden 64; 2 vision
  blocks, hidden 32) with random weights, a byte-level BPE tokenizer trained here with Qwen's
  special tokens and a Qwen-style chat template, and a ``Qwen2VLImageProcessor`` with a small pixel
  budget; saves all of it to a folder that ``from_pretrained`` reads back (no hub access).
* :func:`nuscenes_sample_0061` builds the real six-camera :class:`PlanningSample` of
  ``shared/data/nuscenes-sample-0061`` (info pickle: ego2global, cameras, 69 GT boxes).
* :func:`drivelm_keyframe_sample` builds an image-only sample from a DriveLM keyframe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NUSCENES_0061 = DATA / "nuscenes-sample-0061"
DRIVELM = DATA / "drivelm-challenge-sample"

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Qwen2-VL chat template, reduced to text + image items (the structure of Qwen's own template).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "You are a driving assistant. Answer in JSON with scene_summary, key_objects, meta_action.",
    '{"scene_summary": "a car ahead", "meta_action": {"behaviour": "MOVE FORWARD", "speed": "CONSTANT"}}',
    "ego speed 4.8 m/s, command STRAIGHT, history (-9.1, 0.2) (-6.8, 0.1) waypoints [(1.2, 0.0)]",
    "CAM_FRONT CAM_FRONT_LEFT CAM_FRONT_RIGHT CAM_BACK CAM_BACK_LEFT CAM_BACK_RIGHT pedestrian truck",
]


def build_tiny_qwen_vl(out_dir: str | Path, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 16) -> Path:
    """Build, save and return the folder of a tiny random Qwen2.5-VL (model + processor).

    Args:
        out_dir: folder to write (created).
        min_pixels, max_pixels: the image processor's pixel budget per image (28x28 = one merged
            vision token); defaults give 4-16 vision tokens per image.

    Returns:
        ``out_dir`` as a Path, loadable with ``AutoProcessor.from_pretrained`` and
        ``Qwen2_5_VLForConditionalGeneration.from_pretrained``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)
    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=CHAT_TEMPLATE
    )
    processor.save_pretrained(out)
    return out


NUSCENES_INFO = NUSCENES_0061 / "n015-2018-07-24-11-22-45+0800.pkl"
SCENARIONET_0061 = DATA / "nuscenes-mini-scenarionet" / "sd_nuscenes_v1.0-mini_scene-0061.pkl"
_NUSCENES_LABELS = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle", "pedestrian", "traffic_cone", "barrier")
_AGENT_TYPE = {
    "car": "VEHICLE", "truck": "VEHICLE", "trailer": "VEHICLE", "bus": "VEHICLE", "construction_vehicle": "VEHICLE",
    "bicycle": "CYCLIST", "motorcycle": "CYCLIST", "pedestrian": "PEDESTRIAN", "traffic_cone": "TRAFFIC_CONE",
    "barrier": "TRAFFIC_BARRIER",
}


def load_trusted_pickle(path: Path):
    """Read a shared pickle through the restricted unpickler (builtins and numpy only)."""
    from dsdrive.data import safe_pickle

    return safe_pickle.load_pickle(path)


def nuscenes_info() -> dict:
    """``data_list[0]`` of the nuScenes-0061 info pickle (mmdetection3d v1.1 layout)."""
    return load_trusted_pickle(NUSCENES_INFO)["data_list"][0]


def lidar_to_ego_boxes(boxes: np.ndarray, lidar2ego: np.ndarray) -> np.ndarray:
    """(N, 7) LiDAR-frame boxes (geometric centre, l, w, h, yaw) -> ego frame."""
    out = np.array(boxes, dtype=np.float64).copy()
    out[:, :3] = out[:, :3] @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
    out[:, 6] = out[:, 6] + np.arctan2(lidar2ego[1, 0], lidar2ego[0, 0])
    return out


def nuscenes_sample_0061():
    """The real six-camera keyframe of scene-0061 as a :class:`PlanningSample`.

    Agents: the 69 GT boxes (ids ``inst_<k>`` in info order) moved LiDAR -> ego frame;
    cameras: the six images with ``cam2img`` / ``cam2ego``; ego status and ground-truth future
    (+0.5 ... +3 s) from the ScenarioNet copy of scene-0061 (the same ego pose at t = 0; the
    keyframe is the log start, so there is no history). Map: none.
    """
    from dsdrive.geometry import global_to_ego, rotate_vectors, wrap_angle
    from dsdrive.data.types import Agents, Camera, MapPolylines, PlanningInputs, PlanningSample, PlanningTargets

    info = nuscenes_info()
    lidar2ego = np.asarray(info["lidar_points"]["lidar2ego"], dtype=np.float64)
    inst = info["instances"]
    boxes = lidar_to_ego_boxes(np.array([i["bbox_3d"] for i in inst]), lidar2ego)
    vel = np.array([i["velocity"][:2] for i in inst], dtype=np.float64) @ lidar2ego[:2, :2].T
    labels = [_NUSCENES_LABELS[i["bbox_label_3d"]] for i in inst]
    agents = Agents([f"inst_{k}" for k in range(len(inst))], [_AGENT_TYPE[c] for c in labels], boxes.astype(np.float32), vel.astype(np.float32))
    cameras = [
        Camera(name, str(NUSCENES_0061 / c["img_path"]), np.asarray(c["cam2img"], np.float32), np.asarray(c["cam2ego"], np.float32))
        for name, c in info["images"].items()
    ]
    e2g = np.asarray(info["ego2global"], dtype=np.float64)
    yaw = float(np.arctan2(e2g[1, 0], e2g[0, 0]))
    status, status_mask = np.zeros(6, np.float32), np.zeros(6, bool)
    future, future_mask = np.zeros((6, 3), np.float32), np.zeros(6, bool)
    if SCENARIONET_0061.is_file():
        ego = load_trusted_pickle(SCENARIONET_0061)["tracks"]["ego"]["state"]
        status[:2] = rotate_vectors(np.asarray(ego["velocity"][0], np.float64), yaw)
        status_mask[:2] = True
        idx = np.arange(5, 35, 5)  # +0.5 ... +3.0 s at 10 Hz
        future[:, :2] = global_to_ego(np.asarray(ego["position"])[idx, :2], e2g[:2, 3], yaw)
        future[:, 2] = wrap_angle(np.asarray(ego["heading"])[idx] - yaw)
        future_mask[:] = np.asarray(ego["valid"])[idx] > 0
    from dsdrive.data.types import command_from_future

    inputs = PlanningInputs(
        sample_id=info["token"], scene_id="scene-0061", ego_history=np.zeros((4, 3), np.float32),
        ego_history_mask=np.zeros(4, bool), ego_status=status, ego_status_mask=status_mask,
        command=command_from_future(future), agents=agents, map=MapPolylines.empty(), cameras=cameras,
    )
    n = len(agents)
    targets = PlanningTargets(future, future_mask, np.zeros((n, 12, 3), np.float32), np.zeros((n, 12), bool))
    return PlanningSample("nuscenes", "singapore-onenorth", 0.0, inputs, targets)


def drivelm_keyframe_sample(index: int = 0):
    """A DriveLM keyframe's six real images as an image-only :class:`PlanningSample`.

    DriveLM's JSON has no calibration or ego state: intrinsics/cam2ego are identity
    placeholders (unused by the teachers), agents/map/history are empty, command STRAIGHT.
    """
    from dsdrive.data.types import Agents, Camera, MapPolylines, PlanningInputs, PlanningSample, PlanningTargets

    scenes = json.loads((DRIVELM / "train_sample.json").read_text())
    frames = [(sid, kid, kf) for sid, sc in scenes.items() for kid, kf in sc["key_frames"].items()]
    scene_id, key, kf = frames[index]
    cameras = [
        Camera(cam, str(DRIVELM / "samples" / Path(p).parent.name / Path(p).name), np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32))
        for cam, p in kf["image_paths"].items()
    ]
    inputs = PlanningInputs(
        sample_id=key, scene_id=scene_id, ego_history=np.zeros((4, 3), np.float32), ego_history_mask=np.zeros(4, bool),
        ego_status=np.zeros(6, np.float32), ego_status_mask=np.zeros(6, bool), command="STRAIGHT",
        agents=Agents.empty(), map=MapPolylines.empty(), cameras=cameras,
    )
    targets = PlanningTargets(np.zeros((6, 3), np.float32), np.zeros(6, bool), np.zeros((0, 12, 3), np.float32), np.zeros((0, 12), bool))
    return PlanningSample("drivelm", "unknown", 0.0, inputs, targets)


# ----------------------------------------------------------------------------- fake API server
class FakeChatServer:
    """A local OpenAI-compatible ``POST /v1/chat/completions`` server (http.server, threads, HTTP/1.1).

    The answer for a request is scripted by the ``Sample: <id>`` line of its user text and
    ``modes[id]`` (default ``"valid"``):

    * ``valid``: a valid answer (``cot`` or ``risk`` schema, read from the prompt);
    * ``invalid_then_valid``: prose without JSON first, a valid answer on the re-ask;
    * ``invalid``: never valid JSON;
    * ``429_then_valid`` / ``500_then_valid``: HTTP 429 / 500 on the first request, then valid;
    * ``drop_then_valid``: the first request's connection is closed without an answer.

    With ``mix=True`` unknown ids get a mode from their hash (for demo runs of the runner).
    ``latency_s`` (seconds) is slept before every answer: the generation time of a real server
    (``vllm serve``), constant whatever the number of requests in flight. ``drop_every=k`` closes
    the connection of every k-th request (server-wide count) after that wait, alternately before
    the status line and in the middle of the body: the server did the work and the client never
    gets it. ``requests`` records ``(sample_id, n_messages, authorization header, status)`` per
    request (status 0: dropped).
    """

    def __init__(self, modes: dict[str, str] | None = None, mix: bool = False, port: int = 0,
                 latency_s: float = 0.0, drop_every: int = 0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.modes, self.mix, self.latency_s, self.drop_every = dict(modes or {}), mix, latency_s, drop_every
        self.requests: list[tuple[str, int, str, int]] = []
        self._seen: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status, payload, mid_body = outer._answer(body, self.headers.get("Authorization", ""))
                data = json.dumps(payload).encode()
                if status == 0:  # dropped: close before the status line, or half-way through the body
                    self.close_connection = True
                    if mid_body:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # 16+ clients connecting at once must not overflow the backlog
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _mode(self, sample_id: str) -> str:
        if sample_id in self.modes or not self.mix:
            return self.modes.get(sample_id, "valid")
        import zlib

        return ("valid", "valid", "valid", "invalid_then_valid", "429_then_valid", "500_then_valid", "invalid")[zlib.crc32(sample_id.encode()) % 7]

    def stats(self) -> dict:
        """Requests received by status (``0`` = dropped) and by sample id."""
        from collections import Counter

        with self._lock:
            reqs = list(self.requests)
        return {"requests": len(reqs), "by_status": dict(Counter(r[3] for r in reqs)), "samples": len({r[0] for r in reqs})}

    def _answer(self, body: dict, auth: str) -> tuple[int, dict, bool]:
        """(HTTP status or 0 = drop, JSON payload, whether a drop happens in the middle of the body)."""
        import re

        texts, cameras = [], []
        for m in body["messages"]:
            parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
            for p in parts:
                if p["type"] == "text":
                    texts.append(p["text"])
                    cam = re.match(r"^(CAM_\w+) \((\d+)x(\d+)\):$", p["text"])
                    if cam:
                        cameras.append((cam.group(1), int(cam.group(2)), int(cam.group(3))))
        text = "\n".join(texts)
        sid = re.search(r"Sample: (\S+)", text).group(1)
        agent_ids = re.findall(r"^- (\S+), [A-Z_]+, ", text, flags=re.M)
        n_msgs = len(body["messages"])
        with self._lock:
            k = self._seen[sid] = self._seen.get(sid, 0) + 1
            self._count += 1
            count = self._count
        if self.latency_s:
            import time

            time.sleep(self.latency_s)
        mode = self._mode(sid)
        status = 200
        if (mode == "429_then_valid" and k == 1) or (mode == "500_then_valid" and k == 1):
            status = int(mode[:3])
        mid_body = False
        if (mode == "drop_then_valid" and k == 1) or (self.drop_every and count % self.drop_every == 0):
            status, mid_body = 0, bool((count // max(self.drop_every, 1)) % 2)
        with self._lock:
            self.requests.append((sid, n_msgs, auth, status))
        if status not in (0, 200):
            return status, {"error": {"message": f"scripted {status}", "type": "server_error", "code": status}}, False
        reask = n_msgs > 2
        if mode == "invalid" or (mode == "invalid_then_valid" and not reask):
            content = "I think the car should slow down."  # no JSON: the teacher must re-ask
        else:
            content = json.dumps(self.valid_answer("risks" in text and '"risk"' in text, cameras, agent_ids))
        return status, {
            "id": f"fake-{sid}-{k}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": len(content) // 4, "total_tokens": (len(text) + len(content)) // 4},
        }, mid_body

    @staticmethod
    def valid_answer(risk: bool, cameras: list[tuple[str, int, int]], agent_ids: list[str]) -> dict:
        """A schema-valid answer naming the first camera's centre box, else the first agents."""
        objs = []
        if cameras:
            name, w, h = cameras[0]
            objs.append({"camera": name, "box_2d": [w * 0.4, h * 0.4, w * 0.6, h * 0.6], "category": "car", "reason": "ahead in lane"})
        for a in agent_ids[:2]:
            objs.append({"agent_id": a, "category": "car", "reason": "close to the ego vehicle"})
        meta = {"behaviour": "MOVE FORWARD", "speed": "CONSTANT"}
        if risk:
            risks = [dict(o, risk=round(0.9 / (i + 1), 3), rank=i + 1) for i, o in enumerate(objs)]
            return {"scene_summary": "Urban road.", "risks": risks, "meta_action": meta, "explanation": "Keep distance."}
        return {
            "scene_summary": "Urban road with light traffic.", "key_objects": objs, "meta_action": meta,
            "plan": "Keep the lane at the current speed.", "explanation": "Nothing blocks the lane.",
            "waypoints": [[4.5 * (i + 1), 0.0] for i in range(6)],
        }


def serve_main(argv: list[str] | None = None) -> None:
    """``python tests/helpers_vlm.py [--port P] [--latency S] [--drop-every K] [--mix]``: serve until
    killed; prints ``serving <base_url>`` once listening and, on SIGTERM / Ctrl-C, one JSON line of
    :meth:`FakeChatServer.stats`."""
    import argparse
    import signal
    import sys
    import threading

    p = argparse.ArgumentParser(description="local OpenAI-compatible test server")
    p.add_argument("port", nargs="?", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0, help="seconds slept before every answer")
    p.add_argument("--drop-every", type=int, default=0, help="close the connection of every k-th request")
    p.add_argument("--mix", action="store_true", help="modes from the sample id's hash (see FakeChatServer)")
    a = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeChatServer(mix=a.mix, port=a.port, latency_s=a.latency, drop_every=a.drop_every) as srv:
        print(f"serving {srv.base_url}", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        print(json.dumps(srv.stats()), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    serve_main()
