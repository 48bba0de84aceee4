"""Fixtures for the VLM teacher tests: a tiny random Qwen2.5-VL and real samples.

* :func:`build_tiny_qwen_vl` saves the tiny random Qwen2.5-VL of
  :func:`dsdrive.student.tiny_vl.build_tiny_qwen_vl` (2 text layers, hidden 64; 2 vision blocks,
  hidden 32; byte-level BPE with Qwen's special tokens and chat template; a small pixel budget) to a
  folder that ``from_pretrained`` reads back (no hub access).
* The real camera samples come from the library builders (recipes use them too):
  :func:`nuscenes_sample_0061` (:mod:`data_builders.nuscenes_sample`: the six-camera keyframe of
  ``shared/data/nuscenes-sample-0061``, 69 GT boxes) and :func:`drivelm_keyframe_sample`
  (:func:`data_builders.drivelm.keyframe_planning_sample`: an image-only DriveLM keyframe).
* :class:`FakeChatServer`: a local OpenAI-compatible server.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_builders.drivelm import DRIVELM_SAMPLE as DRIVELM
from data_builders.drivelm import keyframe_planning_sample as drivelm_keyframe_sample
from data_builders.nuscenes_sample import NUSCENES_0061, NUSCENES_INFO, SCENARIONET_0061, lidar_to_ego_boxes, load_info, nuscenes_sample_0061
from dsdrive.data.paths import SHARED_DATA as DATA

__all__ = ["DATA", "DRIVELM", "NUSCENES_0061", "NUSCENES_INFO", "SCENARIONET_0061", "build_tiny_qwen_vl", "drivelm_keyframe_sample",
           "lidar_to_ego_boxes", "load_trusted_pickle", "nuscenes_info", "nuscenes_sample_0061", "FakeChatServer", "serve_main"]


def build_tiny_qwen_vl(out_dir: str | Path, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 16) -> Path:
    """Build, save and return the folder of a tiny random Qwen2.5-VL (model + processor).

    The builder is :func:`dsdrive.student.tiny_vl.build_tiny_qwen_vl` (the camera student's
    embedded backbone); this wrapper keeps the tests' folder-returning signature.

    Args:
        out_dir: folder to write (created).
        min_pixels, max_pixels: the image processor's pixel budget per image (28x28 = one merged
            vision token); defaults give 4-16 vision tokens per image.

    Returns:
        ``out_dir`` as a Path, loadable with ``AutoProcessor.from_pretrained`` and
        ``Qwen2_5_VLForConditionalGeneration.from_pretrained``.
    """
    from dsdrive.student.tiny_vl import build_tiny_qwen_vl as build

    build(out_dir, min_pixels=min_pixels, max_pixels=max_pixels)
    return Path(out_dir)


def load_trusted_pickle(path: Path):
    """Read a shared pickle through the restricted unpickler (builtins and numpy only)."""
    from dsdrive.data import safe_pickle

    return safe_pickle.load_pickle(path)


def nuscenes_info() -> dict:
    """``data_list[0]`` of the nuScenes-0061 info pickle (mmdetection3d v1.1 layout)."""
    return load_info(NUSCENES_INFO, 0)


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
