"""Where ``StudentModel.plan()``'s time goes, part by part, beside the text decoding it is compared with.

Run as:
    python eval/profile_student_plan.py                                # tiny shape, 20 reps
    python eval/profile_student_plan.py --shape qwen2.5-0.5b --reps 2  # Qwen2.5-0.5B shape, random weights
    python eval/profile_student_plan.py --torch-profiler              # + torch.profiler's top operators of plan()

The same student, data and text side as ``eval/bench_student.py`` (its ``build``, ``prepare_data``
and ``trajectory_text``; batch 1, the first annotated sample), timed part by part in CPU seconds of
this thread (``time.thread_time``, 1 torch thread: a loaded machine inflates it far less than the
wall), each part run ``--reps`` times in turn after one warm-up, medians reported in ms:

* ``plan`` / ``plan_no_risk``: ``plan()`` and ``plan(risk_map=False)``;
* ``prefix_with_bev`` / ``prefix_no_bev``: the sequence assembly with and without the BEV
  (scene encoder, projections, prompt embedding, planning queries);
* ``scene_encoder_tokens``: the scene encoder's tokens only; ``bev_splat_conv``: its BEV splat and
  convolutions; ``risk_head``: the RiskHead on that BEV;
* ``llm_forward_plan_seq``: the backbone's decoder over [scene][prompt][queries];
* ``heads``: waypoint / mode / meta-action heads and the plan selection (no RiskHead);
* ``processor``: ``StudentProcessor`` on one ``PlanningInputs``;
* ``text_prefill``: the backbone's prompt pass (logits of the last token only) and
  ``text_decode``: ``generate`` of the trajectory's token count (greedy, KV cache), the text side
  of ``bench_student.py``'s ratio.

Prints one line per part and the ratios, then the parts as JSON (``--out`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_student as bs  # noqa: E402

from dsdrive.data.dataset import load_samples  # noqa: E402
from dsdrive.student.modeling_student import SCENE_KEYS  # noqa: E402


def profile(model, proc, sample, reps: int) -> tuple[dict, dict]:
    """(median thread-CPU ms per part, sequence lengths) for one sample, batch 1."""
    model.eval()
    batch = proc([sample.inputs])
    b = model._as_batch(batch, None)
    n_new = len(proc.tokenizer(bs.trajectory_text(sample), add_special_tokens=False)["input_ids"])
    ids, mask = batch["prompt_ids"], batch["prompt_mask"]
    pad = proc.tokenizer.pad_token_id
    with torch.no_grad():
        embeds, emask, bev, q0, _ = model._prefix(b)
        tokens, _, _ = model.scene_encoder(*(b[k] for k in SCENE_KEYS))
        hidden, _ = model._decode(embeds, emask)

    def nograd(fn):
        def run():
            with torch.no_grad():
                return fn()
        return run

    parts = {
        "plan": lambda: model.plan(batch),
        "plan_no_risk": lambda: model.plan(batch, risk_map=False),
        "prefix_with_bev": nograd(lambda: model._prefix(b)),
        "prefix_no_bev": nograd(lambda: model._prefix(b, with_bev=False)),
        "scene_encoder_tokens": nograd(lambda: model.scene_encoder(*(b[k] for k in SCENE_KEYS), with_bev=False)),
        "bev_splat_conv": nograd(lambda: model.scene_encoder._bev(tokens, b["agents"], b["agents_mask"], b["map_points"], b["map_mask"])),
        "risk_head": nograd(lambda: model.risk_head(bev)),
        "llm_forward_plan_seq": nograd(lambda: model._decode(embeds, emask)),
        "heads": nograd(lambda: model._plan_from(hidden, q0, None, b["command"], b["ego"])),
        "processor": lambda: proc([sample.inputs]),
        "text_prefill": nograd(lambda: model.backbone(input_ids=ids, attention_mask=mask, logits_to_keep=1)),
        "text_decode": nograd(lambda: model.backbone.generate(input_ids=ids, attention_mask=mask, do_sample=False, min_new_tokens=n_new,
                                                              max_new_tokens=n_new, pad_token_id=pad, use_cache=True)),
    }
    for fn in parts.values():
        fn()
    times = {k: [] for k in parts}
    for _ in range(reps):
        for k, fn in parts.items():
            t = time.thread_time()
            fn()
            times[k].append(time.thread_time() - t)
    lengths = {"plan_sequence": int(emask.sum()), "prompt_tokens": int(mask.sum()), "generated_tokens": n_new}
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}, lengths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="outputs/main/planning_annotated", help="annotated planning dataset (built when absent)")
    p.add_argument("--shape", default="tiny", choices=sorted(bs.SHAPES))
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--torch-profiler", action="store_true", help="also print torch.profiler's top 15 operators of 5 plan() calls")
    p.add_argument("--out", default=None, help="write the parts as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    shape = bs.shape_of(a)
    with tempfile.TemporaryDirectory() as tmp:
        data, _ = bs.prepare_data(a.data, tmp)
        samples = [s for s in load_samples(data) if s.annotation][:4]
    model, proc, _ = bs.build(samples, shape)
    ms, n = profile(model, proc, samples[0], a.reps)
    print(f"{bs.describe(shape, sum(x.numel() for x in model.backbone.parameters()))}; batch 1; plan sequence {n['plan_sequence']} tokens, "
          f"prompt {n['prompt_tokens']}, {n['generated_tokens']} generated; thread CPU ms, median of {a.reps}; 1 thread; "
          f"load average {os.getloadavg()[0]:.2f}")
    for k, v in ms.items():
        print(f"  {k:<22} {v:10.1f}")
    step = (ms["text_decode"] - ms["text_prefill"]) / max(n["generated_tokens"], 1)
    print(f"text / plan {ms['text_decode'] / ms['plan']:.2f}x, text / plan(risk_map=False) {ms['text_decode'] / ms['plan_no_risk']:.2f}x, "
          f"LLM forward {100 * ms['llm_forward_plan_seq'] / ms['plan']:.0f} % of plan; bound if plan cost only its LLM forward: "
          f"{ms['text_decode'] / ms['llm_forward_plan_seq']:.2f}x; a decoded token ~{step:.1f} ms = "
          f"{step / (ms['text_prefill'] / n['prompt_tokens']):.1f} prompt tokens of the prefill")
    if a.torch_profiler:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        batch = proc([samples[0].inputs])
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                model.plan(batch)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    report = {"parts_ms": ms, "lengths": n, "shape": a.shape}
    if a.out:
        Path(a.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
