"""k-means anchors of trajectories, the one clustering behind the planning and motion vocabularies.

SparseDrive / DistillDrive cluster training futures with k-means (``kmeans_plan`` /
``kmeans_motion``) to anchor their multi-mode queries. :mod:`dsdrive.distilldrive.planning_vocabulary`
(ego futures per command) and :mod:`dsdrive.distilldrive.motion_vocabulary` (agent futures per
class) both call :func:`kmeans_anchors`; it sits below both so neither imports the other.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans


def kmeans_anchors(trajectories: np.ndarray, modes: int, seed: int = 0, decimals: int = 3) -> np.ndarray:
    """k-means centroids of trajectories, sorted by final x, always ``modes`` of them.

    Args:
        trajectories: (N, T, 2) ego- or agent-frame x, y (m), N >= 1.
        modes: number of anchors wanted.
        seed: k-means ``random_state`` (scikit-learn, n_init=10).
        decimals: rounding used to count distinct trajectories; with fewer distinct ones than
            ``modes`` the centroids are repeated cyclically.

    Returns:
        (modes, T, 2) float32 anchors.

    Raises:
        ValueError: ``trajectories`` is not (N >= 1, T, 2), or ``modes`` < 1.
    """
    data = np.asarray(trajectories, np.float64)
    if data.ndim != 3 or data.shape[0] < 1 or data.shape[2] != 2 or modes < 1:
        raise ValueError(f"kmeans_anchors: expected (N>=1, T, 2) trajectories and modes >= 1, got {data.shape} and modes={modes}")
    n, steps = data.shape[:2]
    flat = data.reshape(n, -1)
    k = min(modes, len(np.unique(flat.round(decimals), axis=0)))
    centres = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(flat).cluster_centers_.reshape(k, steps, 2)
    centres = centres[np.argsort(centres[:, -1, 0])]  # by travelled distance, for readability
    if k < modes:
        centres = np.concatenate([centres, centres[np.arange(modes - k) % k]], axis=0)
    return centres.astype(np.float32)
