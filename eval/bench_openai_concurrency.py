"""Benchmark: the OpenAI-compatible annotator through the real ``dsdrive annotate`` runner, by concurrency.

Run as:
    .venv/bin/python eval/bench_openai_concurrency.py                       # 32 samples, 0.5 s latency, drop every 7th
    .venv/bin/python eval/bench_openai_concurrency.py --concurrency 1,4,8,16 --latency 1.0 --samples 64 --repeats 3
    .venv/bin/python eval/bench_openai_concurrency.py --data outputs/main/planning   # a planning dataset of your own

What a user does with a big teacher behind ``vllm serve``, with the server simulated: the local
OpenAI-compatible test server of ``tests/helpers_vlm.py`` runs in its own process (a fresh one per
run, so that scripted modes restart), sleeps ``--latency`` seconds before every answer (a real
server's generation time, constant whatever the load), drops the connection of every
``--drop-every``-th request (before the status line or half-way through the body: the server did
the work, the client never got it), and with ``--mix`` (default on) answers by the sample id's hash:
valid, invalid then valid on the re-ask, never valid, HTTP 429 / 500 then valid. Each run calls
:func:`dsdrive.annotation.annotate.run_annotate` (shards, resumable store) with an
:class:`~dsdrive.annotation.annotators.openai_api.OpenAIAnnotator` at one concurrency; runs are
interleaved (1, 4, 8, 16, 1, 4, ...) so machine load hits every setting alike, and the median wall
time per setting is reported.

Per concurrency it prints samples/s and requests/s (everything the server received: answered,
scripted errors, dropped), annotations and failures (the never-valid samples fail by design), and
the checks that nothing was lost or doubled: sample ids without a record in the shards, and
records beyond one per sample id. Samples without cameras (the default ScenarioNet build) are shown
as BEV renderings, drawn on the client (matplotlib) inside the request threads: the client CPU
seconds column shows when that work, not the server, bounds the throughput (wall ~ client CPU /
cores available).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVER = REPO / "tests" / "helpers_vlm.py"
SCENARIONET = REPO.parent / "shared" / "data" / "nuscenes-mini-scenarionet"


class TestServer:
    """``tests/helpers_vlm.py`` served in a subprocess; :attr:`stats` is filled when it stops."""

    def __init__(self, latency: float, drop_every: int, mix: bool):
        cmd = [sys.executable, str(SERVER), "--latency", str(latency), "--drop-every", str(drop_every)] + (["--mix"] if mix else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO / "tests")
        line = self.proc.stdout.readline().strip()
        if not line.startswith("serving "):
            self.proc.kill()
            raise RuntimeError(f"{SERVER}: expected 'serving <url>', got {line!r}")
        self.base_url = line.split()[1]
        self.stats: dict = {}

    def stop(self) -> dict:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        self.stats = json.loads(out.strip().splitlines()[-1])
        return self.stats


def build_data(out: Path) -> Path:
    """Planning samples of the ScenarioNet nuScenes-mini scenes (``dsdrive build``), into ``out``."""
    from data_builders.build import main as build_main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = build_main(["--source", "scenarionet", "--input", str(SCENARIONET), "--out", str(out)])
    if rc != 0:
        raise RuntimeError(f"dsdrive build --source scenarionet --input {SCENARIONET} failed with exit code {rc}")
    return out


def one_run(data: Path, out: Path, concurrency: int, a: argparse.Namespace) -> dict:
    """One ``run_annotate`` over the first ``a.samples`` samples against a fresh test server."""
    from dsdrive.annotation.annotate import build_parser, run_annotate
    from dsdrive.annotation.annotators.openai_api import OpenAIAnnotator
    from dsdrive.annotation.store import iter_records

    server = TestServer(a.latency, a.drop_every, a.mix)
    try:
        args = build_parser().parse_args(["--teacher", "openai", "--data", str(data), "--out", str(out), "--limit", str(a.samples),
                                          "--batch-size", str(a.batch_size), "--shard-size", str(a.shard_size)])
        annotator = OpenAIAnnotator("fake-vlm", base_url=server.base_url, concurrency=concurrency, max_retries=a.max_retries,
                                    timeout=a.timeout, backoff_s=a.backoff)
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run_annotate(args, annotator=annotator)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        stats = server.stop()
    per_id = Counter(item.sample_id for _, _, item in iter_records(out))
    expected = set(_ids(data, a.samples))
    return {
        "wall_s": wall, "client_cpu_s": cpu, "done": summary["done"], "failed": summary["failed"], "server_requests": stats["requests"],
        "answered": stats["by_status"].get("200", 0), "dropped": stats["by_status"].get("0", 0),
        "http_errors": sum(v for k, v in stats["by_status"].items() if k not in ("0", "200")),
        "lost": len(expected - set(per_id)), "doubled": sum(per_id.values()) - len(per_id), "unexpected": len(set(per_id) - expected),
    }


def _ids(data: Path, n: int) -> list[str]:
    from dsdrive.data.dataset import load_dataset_dir

    return list(load_dataset_dir(data)["sample_id"])[:n]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="planning dataset folder; default: built from the ScenarioNet scenes")
    p.add_argument("--samples", type=int, default=32, help="first N samples of the dataset")
    p.add_argument("--concurrency", default="1,4,8,16", help="comma-separated; the first is the baseline of the ratios")
    p.add_argument("--latency", type=float, default=0.5, help="seconds the server sleeps before every answer")
    p.add_argument("--drop-every", type=int, default=7, help="the server drops every k-th request's connection (0: never)")
    p.add_argument("--no-mix", dest="mix", action="store_false", help="every answer valid (no re-asks, 429/500 or failures)")
    p.add_argument("--batch-size", type=int, default=64, help="dsdrive annotate --batch-size (samples per annotator call)")
    p.add_argument("--shard-size", type=int, default=8, help="dsdrive annotate --shard-size")
    p.add_argument("--max-retries", type=int, default=5)
    p.add_argument("--backoff", type=float, default=1.0, help="first retry wait in seconds (the annotator's default)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--repeats", type=int, default=2, help="interleaved passes over the concurrency list (median kept)")
    a = p.parse_args(argv)
    levels = [int(c) for c in a.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(a.data) if a.data else build_data(tmp / "planning")
        n = len(_ids(data, a.samples))
        print(f"config: {n} samples of {data if a.data else 'ScenarioNet nuScenes-mini (dsdrive build), BEV images'} | "
              f"server: tests/helpers_vlm.py in its own process, latency {a.latency} s, drops the connection of 1 request in {a.drop_every}, "
              f"mix {a.mix} | runner: dsdrive annotate --batch-size {a.batch_size} --shard-size {a.shard_size} | "
              f"annotator: max_retries {a.max_retries}, backoff {a.backoff} s, timeout {a.timeout} s | "
              f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, Python {platform.python_version()}")
        runs: dict[int, list[dict]] = {c: [] for c in levels}
        for r in range(a.repeats):
            for c in levels:
                runs[c].append(one_run(data, tmp / f"ann-c{c}-r{r}", c, a))
    base = statistics.median(x["wall_s"] for x in runs[levels[0]])
    print(f"{'concurrency':>11} | {'wall s (median)':>15} | {'samples/s':>9} | {'requests/s':>10} | {'vs ' + str(levels[0]):>6} | "
          f"client CPU s | ok | failed | requests: answered / HTTP errors / dropped | lost | doubled")
    for c in levels:
        wall = statistics.median(x["wall_s"] for x in runs[c])
        last = runs[c][-1]
        req = statistics.median(x["server_requests"] for x in runs[c])
        cpu = statistics.median(x["client_cpu_s"] for x in runs[c])
        print(f"{c:>11} | {wall:>15.2f} | {n / wall:>9.2f} | {req / wall:>10.2f} | {base / wall:>5.2f}x | {cpu:>12.1f} | "
              f"{last['done']:>2} | {last['failed']:>6} | "
              f"{last['server_requests']}: {last['answered']} / {last['http_errors']} / {last['dropped']} | "
              f"{max(x['lost'] for x in runs[c])} | {max(x['doubled'] for x in runs[c])}")
    bad = [(c, x) for c in levels for x in runs[c] if x["lost"] or x["doubled"] or x["unexpected"]]
    if bad:
        print(f"ERROR: records lost or doubled: {bad}", file=sys.stderr)
        return 1
    print(f"all {sum(len(v) for v in runs.values())} runs: every sample has exactly one record (nothing lost, nothing doubled)")
    return 0


if __name__ == "__main__":
    # one log line per retry otherwise; set here, not in main(), so an in-process caller keeps its logging
    logging.getLogger("dsdrive.annotation.annotators.openai_api").setLevel(logging.ERROR)
    sys.exit(main())
