"""Uncertainty of open-loop figures: 95 % confidence intervals by a bootstrap over scenes.

Why by scene: consecutive samples of one scene are 0.5 s apart and share the road, the traffic
and the driver, so they are strongly correlated; a bootstrap that resamples samples as if they
were independent gives intervals that are far too narrow. The scene is the independent unit
(``shared/research/wave2.md``, "Statistics"; cluster / hierarchical bootstrap, Davison & Hinkley,
*Bootstrap Methods and their Application*, 1997, §3.8; Field & Welsh, JRSS-B 2007).

Method (:func:`scene_bootstrap_ci`), for values ``x_i`` of samples ``i`` with scene ``s(i)``:

1. Drop samples with a non-finite value (NaN: not scored, e.g. an incomplete ground-truth future);
   the count is reported as ``num_excluded``.
2. The point estimate is the pooled mean over the kept samples (every sample weighs the same, as
   the usual open-loop table does).
3. Each of ``n_boot`` replicates draws as many scenes as there are, with replacement; then, for
   each drawn scene, as many of its samples as it has, with replacement (two-stage resampling,
   "resample scenes, then their samples"; ``resample_within=False`` keeps each drawn scene's
   samples as they are, Davison & Hinkley's cluster-only strategy). The replicate's statistic is
   the pooled mean of the drawn samples.
4. The interval is the percentile interval: the ``(1 - confidence) / 2`` and
   ``(1 + confidence) / 2`` quantiles of the replicates (Efron & Tibshirani 1993, ch. 13).

A paired difference (:func:`paired_difference_ci`) between planners A and B evaluated on the same
samples is ``d_i = a_i - b_i`` per sample, then the same bootstrap over scenes of ``d``: the scene
effect common to both planners cancels, so the interval is much narrower than that of either
mean. Identical planners give ``d = 0`` and the interval ``[0, 0]`` exactly.

Edge cases: a metric that is 0 everywhere gives mean 0 and ``[0, 0]``; one scene gives an
interval from within-scene resampling only (it cannot show scene-to-scene variation:
``single_scene`` is set and the note says so); no finite sample gives NaN figures. Everything is
numpy, seeded (``numpy.random.default_rng(seed)``), so a result is reproducible bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_N_BOOT = 2000
"""Bootstrap replicates (percentile intervals at 95 % are stable to ~0.5 % of their width)."""
DEFAULT_CONFIDENCE = 0.95
METHOD = ("percentile bootstrap over scenes (resample scenes with replacement, then each drawn scene's samples "
          "with replacement; statistic = pooled mean over samples)")
"""One-line description of :func:`scene_bootstrap_ci`, stored with every result."""


@dataclass
class BootstrapCI:
    """A pooled mean with its bootstrap percentile interval, for one or several metrics at once.

    Attributes:
        mean: (K,) pooled mean over the kept samples (or a float for one metric).
        low, high: (K,) interval ends (same units as the values).
        num_samples: samples kept (finite in every metric).
        num_excluded: samples dropped for a non-finite value.
        num_scenes: distinct scenes among the kept samples.
        n_boot, confidence, seed, resample_within: the settings used.
        single_scene: True when ``num_scenes == 1`` (the interval ignores scene-to-scene variation).
        replicates: (n_boot, K) replicate means, kept only when asked for.
    """

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    num_samples: int
    num_excluded: int
    num_scenes: int
    n_boot: int
    confidence: float
    seed: int
    resample_within: bool
    single_scene: bool
    replicates: np.ndarray | None = field(default=None, repr=False)

    def includes_zero(self) -> np.ndarray | bool:
        """Whether each interval contains 0 (for a difference: no measurable difference)."""
        return (self.low <= 0) & (self.high >= 0)

    def to_dict(self, names: list[str] | None = None) -> dict:
        """JSON-ready dict; with ``names`` (K metric names) ``mean``/``ci`` are keyed by name."""
        def vec(a):
            a = np.atleast_1d(np.asarray(a, np.float64))
            vals = [None if not np.isfinite(v) else float(v) for v in a]
            return dict(zip(names, vals)) if names is not None else (vals[0] if a.size == 1 and np.ndim(self.mean) == 0 else vals)
        lo, hi = np.atleast_1d(self.low), np.atleast_1d(self.high)
        ci = [[None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b)] for a, b in zip(lo, hi)]
        out = {"mean": vec(self.mean),
               "ci": dict(zip(names, ci)) if names is not None else (ci[0] if np.ndim(self.mean) == 0 else ci),
               "num_samples": self.num_samples, "num_excluded": self.num_excluded, "num_scenes": self.num_scenes,
               "n_boot": self.n_boot, "confidence": self.confidence, "seed": self.seed, "resample_within": self.resample_within,
               "method": METHOD if self.resample_within else METHOD.replace(", then each drawn scene's samples with replacement", "")}
        if self.single_scene:
            out["note"] = "one scene only: the interval comes from resampling its samples and cannot show scene-to-scene variation"
        return out


def _check(values, scene_ids, where: str) -> tuple[np.ndarray, np.ndarray, bool]:
    x = np.asarray(values, np.float64)
    scalar = x.ndim == 1
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{where}: values must be (N,) or (N, K), got shape {np.shape(values)}")
    s = np.asarray(scene_ids, dtype=object)
    if s.shape != (x.shape[0],):
        raise ValueError(f"{where}: scene_ids has shape {s.shape}, expected ({x.shape[0]},) (one scene id per sample)")
    return x, s, scalar


def scene_bootstrap_ci(values, scene_ids, n_boot: int = DEFAULT_N_BOOT, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                       resample_within: bool = True, keep_replicates: bool = False, chunk: int = 250) -> BootstrapCI:
    """Pooled mean and percentile CI by the two-stage bootstrap over scenes (module docstring).

    Args:
        values: (N,) or (N, K) per-sample metric values (e.g. L2 in metres, collision in %); a
            sample with a non-finite value in any column is excluded from all K (counted).
        scene_ids: (N,) scene id of each sample.
        n_boot: replicates (>= 1). confidence: in (0, 1). seed: numpy Generator seed.
        resample_within: also resample each drawn scene's samples (two-stage); False = scenes only.
        keep_replicates: keep the (n_boot, K) replicate means in the result.
        chunk: replicates computed at once (bounds memory at chunk x scenes x largest scene x K).

    Returns:
        :class:`BootstrapCI`; ``mean``, ``low``, ``high`` are floats for (N,) input, (K,) arrays
        for (N, K). With no finite sample every figure is NaN.

    Raises:
        ValueError: shapes disagree, ``n_boot < 1`` or ``confidence`` outside (0, 1).
    """
    x, s, scalar = _check(values, scene_ids, "scene_bootstrap_ci")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"scene_bootstrap_ci: n_boot={n_boot!r} must be an integer >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"scene_bootstrap_ci: confidence={confidence!r} must be in (0, 1)")
    keep = np.isfinite(x).all(axis=1)
    x, s = x[keep], s[keep]
    k = x.shape[1]
    scenes, inverse = np.unique(s.astype(str), return_inverse=True)
    settings = dict(n_boot=int(n_boot), confidence=float(confidence), seed=int(seed), resample_within=bool(resample_within))
    if len(scenes) == 0:
        nan = np.full(k, np.nan)
        out = BootstrapCI(nan, nan.copy(), nan.copy(), 0, int((~keep).sum()), 0, single_scene=False, **settings)
        return _squeeze(out) if scalar else out
    # padded (S, n_max, K) table of each scene's samples
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse, minlength=len(scenes))
    n_max = int(sizes.max())
    table = np.zeros((len(scenes), n_max, k))
    rank = np.arange(len(x)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # position within its scene
    table[inverse[order], rank] = x[order]
    rng = np.random.default_rng(seed)
    n_s = len(scenes)
    reps = np.empty((n_boot, k))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        drawn = rng.integers(0, n_s, size=(b, n_s))  # scenes drawn, (b, S)
        n_drawn = sizes[drawn]  # (b, S)
        if resample_within:
            u = rng.random((b, n_s, n_max))
            idx = np.minimum((u * n_drawn[..., None]).astype(np.int64), n_drawn[..., None] - 1)  # uniform in [0, n)
        else:
            idx = np.broadcast_to(np.arange(n_max), (b, n_s, n_max))
        valid = np.arange(n_max)[None, None, :] < n_drawn[..., None]  # (b, S, n_max)
        picked = table[drawn[..., None], idx]  # (b, S, n_max, K)
        total = (picked * valid[..., None]).sum(axis=(1, 2))
        reps[start : start + b] = total / n_drawn.sum(axis=1)[:, None]
    alpha = 1.0 - confidence
    low, high = np.quantile(reps, [alpha / 2, 1 - alpha / 2], axis=0)
    mean = x.mean(axis=0)
    # a replicate mean of identical values can differ from them in the last bit; clip to the data range
    low, high = np.maximum(low, x.min(axis=0)), np.minimum(high, x.max(axis=0))
    out = BootstrapCI(mean, low, high, int(len(x)), int((~keep).sum()), n_s, single_scene=n_s == 1,
                      replicates=reps if keep_replicates else None, **settings)
    return _squeeze(out) if scalar else out


def _squeeze(r: BootstrapCI) -> BootstrapCI:
    r.mean, r.low, r.high = float(r.mean[0]), float(r.low[0]), float(r.high[0])
    if r.replicates is not None:
        r.replicates = r.replicates[:, 0]
    return r


def paired_difference_ci(a, b, scene_ids, **kw) -> BootstrapCI:
    """Mean and CI of the per-sample difference ``a - b`` between two planners on the SAME samples,
    bootstrapped by scene (:func:`scene_bootstrap_ci`; keyword arguments are passed on).

    Args:
        a, b: (N,) or (N, K) per-sample values of planners A and B, row i = the same sample.
        scene_ids: (N,) scene id of each sample.

    Returns:
        :class:`BootstrapCI` of ``a - b`` (> 0: A larger, e.g. A's L2 worse). A sample that is
        non-finite in either planner is excluded (counted in ``num_excluded``).

    Raises:
        ValueError: ``a`` and ``b`` differ in shape.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference_ci: a has shape {a.shape}, b {b.shape}; a paired difference needs the same samples in the same order")
    return scene_bootstrap_ci(a - b, scene_ids, **kw)


def naive_bootstrap_ci(values, **kw) -> BootstrapCI:
    """The per-sample (i.i.d.) bootstrap that ignores scenes: every sample is its own cluster.
    Too narrow on correlated samples; kept to show how much the scene bootstrap matters."""
    n = np.asarray(values).shape[0]
    kw.setdefault("resample_within", False)
    return scene_bootstrap_ci(values, np.arange(n), **kw)
