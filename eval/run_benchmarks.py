"""Rerun every benchmark row of README's "Benchmarks" table with exactly its command; print one summary.

Run as (from the repository root, on a quiet machine; about 21 min on 2 cores, see ``ROWS``):
    .venv/bin/python eval/run_benchmarks.py                          # every row, logs under outputs/benchmarks/<time>/
    .venv/bin/python eval/run_benchmarks.py --rows student-tiny,camera-tiny   # some rows
    .venv/bin/python eval/run_benchmarks.py --list                   # the rows and their commands, nothing run
    .venv/bin/python eval/run_benchmarks.py --student-checkpoint DIR # + the closed-loop student row

Each row runs in its own process, one after the other (never two at once: they would load each
other), with the environment this script was started with. Before each row the 1-minute load
average is read (``/proc/loadavg``; what the row's figures were measured under), after it the wall
time and the CPU seconds the row used (children's user + system: single-threaded rows take about
their wall time when the machine is quiet; a wall well above the CPU seconds means the row waited
for the CPU or, for the API row, for the simulated server). The summary prints, per row, the
figure lines the benchmark printed (the ratio lines, without their bracketed configuration: that
stays in the log), the command, the load, the wall and the CPU seconds, as a Markdown table, and
writes it to ``OUT/summary.md`` with every row's full output in ``OUT/<row>.log`` and everything
as ``OUT/summary.json``.

``bench_metrics.py`` needs a planning dataset: ``dsdrive build`` of the ScenarioNet nuScenes-mini
scenes of ``../shared/data`` into ``OUT/planning`` first (its command and wall are printed too).
The closed-loop student row needs a trained student (``--student-checkpoint``; a fresh clone has
none): without it the row is listed as skipped.

Exit status: 0 when every row that ran exited 0, else 1 (the failing rows are named).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIONET = ROOT.parent / "shared" / "data" / "nuscenes-mini-scenarionet"
PY = ".venv/bin/python"
"""How README writes the interpreter; the rows run with this script's own interpreter (``sys.executable``)."""


@dataclass(frozen=True)
class Row:
    """One README benchmark row: ``name``, its command (arguments after the interpreter, a
    ``str.format`` template: ``{data}`` is the planning dataset built first, ``{student}`` the
    ``--student-checkpoint``, literal braces doubled), a regular
    expression picking the figure lines of its output, and its expected wall on a quiet 2-core machine."""

    name: str
    args: str
    figures: str
    minutes: float


RATIO = r"\d\.?\d*x\b|x\d"
ROWS = [
    Row("metrics", "eval/bench_metrics.py --data {data}", r"speed-up", 0.5),
    Row("student-tiny", "eval/bench_student.py --only latency,step", RATIO, 0.8),
    Row("student-0.5b-latency", "eval/bench_student.py --shape qwen2.5-0.5b --only latency --samples 1 --reps 2", RATIO, 2.0),
    Row("student-0.5b-step", "eval/bench_student.py --shape qwen2.5-0.5b --only step --batch_size 1 --reps 1", RATIO, 3.5),
    Row("student-0.5b-memory", "eval/bench_student.py --shape qwen2.5-0.5b --only memory --batch_size 2", RATIO, 1.5),
    Row("camera-tiny", "eval/bench_camera_student.py --only latency,step", RATIO, 1.0),
    Row("camera-3b-reduced-latency", "eval/bench_camera_student.py --only latency --shape qwen2.5-vl-3b-reduced --samples 1 --reps 1",
        RATIO, 3.0),
    Row("camera-memory-b1", "eval/bench_camera_student.py --only memory", RATIO, 1.0),
    Row("camera-memory-b2", "eval/bench_camera_student.py --only memory --batch_size 2", RATIO, 1.5),
    Row("vlm-batching", "eval/bench_vlm_batching.py --variants batched,stock --repeats 5 --max-new-tokens 128",
        r"^\s*(batched|stock) \|", 2.5),
    Row("openai-concurrency", "eval/bench_openai_concurrency.py", r"^\s*\d+ \||lost|doubled", 3.5),
    Row("closed-loop", "eval/bench_closed_loop.py --planner constant_velocity log_waypoints", r"^(log_replay|constant_velocity|log_waypoints) ",
        1.0),
    Row("closed-loop-student", "eval/bench_closed_loop.py --planner student student_checked --checkpoint student={student} "
        "student_checked={student} --no-explain", r"^(log_replay|student|student_checked) ", 2.0),
]
"""README's rows in its order. ``minutes``: metrics, student-tiny, openai-concurrency and closed-loop
as measured at load 18-23 scaled to their CPU seconds (the API row mostly waits for the simulated
server: 3.8 min at load 20 with 0.9 min of CPU); the others estimated from their README figures
(steps x seconds per step + model building). Sum about 21 min without the student row."""


def build_command(data: Path) -> list[str]:
    """``dsdrive build`` of the ScenarioNet nuScenes-mini scenes into ``data`` (bench_metrics' dataset)."""
    return [str(Path(sys.executable).with_name("dsdrive")), "build", "--source", "scenarionet", "--input", str(SCENARIONET),
            "--out", str(data)]


def figure_lines(stdout: str, pattern: str) -> list[str]:
    """The lines of ``stdout`` before its JSON report (a line that is exactly ``{``) matching
    ``pattern``, each without its trailing `` [configuration]`` and with runs of spaces squeezed."""
    out = []
    for line in stdout.splitlines():
        if line.strip() == "{":
            break
        if re.search(pattern, line):
            out.append(re.sub(r" {2,}", " ", re.sub(r" \[[^\[]*\]$", "", line.rstrip())).strip())
    return out


def load1() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_row(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` in the repository root, output to ``log``; its exit status, wall, CPU seconds and loads."""
    l0, c0, t0 = load1(), children_cpu(), time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(proc.stdout)
    return {"rc": proc.returncode, "wall_s": time.perf_counter() - t0, "cpu_s": children_cpu() - c0, "load_start": l0,
            "load_end": load1(), "stdout": proc.stdout}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default=None, help=f"comma-separated row names (default: all): {', '.join(r.name for r in ROWS)}")
    p.add_argument("--out", default=None, help="log folder (default outputs/benchmarks/<YYYYmmdd-HHMMSS>)")
    p.add_argument("--student-checkpoint", default=None, help="a trained student folder for the closed-loop student row")
    p.add_argument("--list", action="store_true", help="print the rows and their commands, run nothing")
    a = p.parse_args(argv)
    names = [r.name for r in ROWS]
    wanted = names if a.rows is None else [n.strip() for n in a.rows.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        p.error(f"--rows: unknown row(s) {unknown}; rows are {names}")
    out = Path(a.out) if a.out else ROOT / "outputs" / "benchmarks" / time.strftime("%Y%m%d-%H%M%S")
    data = out / "planning"
    rows = [r for r in ROWS if r.name in wanted]

    def shown(row: Row) -> str:
        rel = data.relative_to(ROOT) if data.is_relative_to(ROOT) else data
        return f"{PY} " + row.args.format(data=rel, student=a.student_checkpoint or "DIR")

    if a.list:
        for r in rows:
            print(f"{r.name:<26} ~{r.minutes:.1f} min  {shown(r)}")
        runs = [r for r in rows if a.student_checkpoint or "{student}" not in r.args]
        print(f"total ~{sum(r.minutes for r in runs):.1f} min on a quiet 2-core machine (+ the dsdrive build for 'metrics')"
              + ("" if a.student_checkpoint else "; closed-loop-student is skipped without --student-checkpoint"))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    env_keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "MKL_CBWR")
    header = (f"run_benchmarks: {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} CPUs, load {load1():.2f} at start, "
              f"{sys.executable}; env " + ", ".join(f"{k}={os.environ.get(k, '-')}" for k in env_keys))
    print(header, flush=True)
    results = []
    if any("{data}" in r.args for r in rows):
        cmd = build_command(data)
        res = run_row(cmd, out / "build.log")
        print(f"[build] rc {res['rc']}, {res['wall_s']:.0f} s: {shlex.join(cmd)}", flush=True)
        if res["rc"] != 0:
            print(f"run_benchmarks: the dataset build failed (see {out / 'build.log'})", file=sys.stderr)
            return 1
    for r in rows:
        if "{student}" in r.args and not a.student_checkpoint:
            results.append({"row": r.name, "command": shown(r), "skipped": "needs --student-checkpoint (a trained student)"})
            print(f"[{r.name}] skipped: needs --student-checkpoint", flush=True)
            continue
        cmd = [sys.executable] + shlex.split(r.args.format(data=data, student=a.student_checkpoint or ""))
        print(f"[{r.name}] {shown(r)} ...", flush=True)
        res = run_row(cmd, out / f"{r.name}.log")
        figs = figure_lines(res.pop("stdout"), r.figures)
        results.append({"row": r.name, "command": shown(r), "figures": figs, **res})
        print(f"[{r.name}] rc {res['rc']}, wall {res['wall_s']:.0f} s, cpu {res['cpu_s']:.0f} s, load {res['load_start']:.1f}"
              + "".join(f"\n    {f}" for f in figs), flush=True)
    lines = [header, "", "| row | figure | command (prefix from the repository root) | load at start | wall s | cpu s |", "|---|---|---|---|---|---|"]
    for x in results:
        if "skipped" in x:
            lines.append(f"| {x['row']} | skipped: {x['skipped']} | `{x['command']}` | | | |")
            continue
        fig = "<br>".join(f.replace("|", "/") for f in x["figures"]) or f"(no figure line; exit {x['rc']}, see {x['row']}.log)"
        lines.append(f"| {x['row']} | {fig} | `{x['command']}` | {x['load_start']:.1f} | {x['wall_s']:.0f} | {x['cpu_s']:.0f} |")
    total = sum(x.get("wall_s", 0.0) for x in results)
    lines.append(f"\ntotal wall {total / 60:.1f} min; logs in {out}")
    summary = "\n".join(lines)
    print("\n" + summary)
    (out / "summary.md").write_text(summary + "\n")
    (out / "summary.json").write_text(json.dumps({"header": header, "rows": results, "rows_defined": [asdict(r) for r in ROWS]}, indent=2))
    failed = [x["row"] for x in results if x.get("rc", 0) != 0]
    if failed:
        print(f"run_benchmarks: rows that failed: {failed} (logs in {out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
