"""The error that extrapolation itself adds, as a random function that grows with the distance
from the data, added to every law sample so that every interval downstream (savings, band edges,
the pick, the loss) carries it.

A fitted form can agree with every run and still be wrong beyond them: a gap that grows as a
steeper power of ln m_L than any candidate form, a width term that only switches on above the base
width, a shape optimum that drifts faster than the sizes showed. Bootstrap refits and form
averaging measure how well the data pin the forms down, not how wrong the forms can be away from
the data, so both stay narrow exactly where the plan needs them widest (Dey et al. 2025 plan
at 50-5000× the largest sweep).

**Gap** (μP, SP, depth-α against the reference): per sample b,

    g_b(u, v) += z_b · κ · S · h(d(u, v)),   h(d) = d + d²/2,

with d the distance of (u, v) = (ln m_L, ln m_N) from the convex hull of the parameterization's
runs (zero inside: a shape both deeper and wider than any run is outside even when each
multiplier alone was trained), S the size of the gap the forms predict there (plus two noise
standard deviations of the measured gaps: the error is relative to the gap), z_b a Student-t draw (few degrees of freedom: κ itself is
estimated from little), and κ learned from **backtests inside the runs**: the gap forms are fitted
without the largest size (and without the two largest), predict the held-out runs, and each
fold's error beyond seed noise, per S·h(d) of its distance, is one estimate κ_f; read against the
calibration family's typical κ_ref, they scale the prior κ₀ (:func:`gap_kappa`).

**Reference** (the shape law of CompleteP or whichever is the reference): per sample b,

    ln(L_b − E_b) += c·((w − s_b)² − w²) + z3_b·κ_curv·τ·c·w²,   s_b = z2_b·κ_opt·τ,
    L_b += z1_b·κ_level·τ·R_max,    τ = ln(P / P_max)⁺,  w = ln(N:L) − ln r_c,

a random move of the optimum (by s_b in ln N:L) and of the penalty's curvature c (fitted at the
largest size around its optimum r_c), and a random level error in the loss's own units, as a share
of the reducible loss R_max at the largest run: a power law fitted over a narrow range trades its
exponent against E (two power terms look like one with a higher E), an error that does not shrink
with the reducible loss. Each grows linearly with the e-folds τ that P lies beyond the largest run.

The priors (κ₀ and the κ's of the reference) were set on a calibration family of simulated worlds
(``bench/worlds.py`` with other seeds than the judged 60) and are constants of the method, not of
any one world; the judged family reports the coverage they reach.
"""

from __future__ import annotations

import math

import numpy as np

GAP_KAPPA_PRIOR = 0.045  # κ₀: extrapolation error per unit of S·h(d), calibration family
GAP_KAPPA_BACKTEST = 0.115  # κ_ref: the calibration family's median backtest κ_f
GAP_T_DOF = 4.0
REF_KAPPA_LEVEL = 0.008  # loss, as a share of the reducible loss at the largest run, per e-fold beyond it
REF_KAPPA_OPT = 0.012  # ln N:L of the optimum per e-fold
REF_KAPPA_CURV = 0.025  # relative change of the penalty's curvature per e-fold
REF_T_DOF = 4.0


def hull_distance(points: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query point (m, 2) from the convex hull of ``points`` (n, 2);
    0 inside. Collinear or too few points: the distance from the segment they span."""
    pts = np.asarray(points, float).reshape(-1, 2)
    q = np.asarray(query, float).reshape(-1, 2)
    pts = np.unique(np.round(pts, 9), axis=0)
    if len(pts) >= 3:
        verts = convex_hull(pts)
        if len(verts) >= 3:
            return _polygon_distance(verts, q)
    if len(pts) == 1:
        return np.linalg.norm(q - pts[0], axis=1)
    c = pts.mean(axis=0)
    axis = np.linalg.svd(pts - c)[2][0]
    s = (pts - c) @ axis
    a, b = c + s.min() * axis, c + s.max() * axis
    return _segment_distance(a, b, q)


def convex_hull(pts: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of 2-D points, counter-clockwise (Andrew's monotone chain; numpy
    only, so planning never loads scipy). Collinear points give 2 vertices."""
    p = sorted(map(tuple, np.asarray(pts, float)))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for x in p:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], x) <= 1e-12:
            lower.pop()
        lower.append(x)
    for x in reversed(p):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], x) <= 1e-12:
            upper.pop()
        upper.append(x)
    return np.array(lower[:-1] + upper[:-1])


def _segment_distance(a: np.ndarray, b: np.ndarray, q: np.ndarray) -> np.ndarray:
    ab = b - a
    denom = float(ab @ ab)
    t = np.clip(((q - a) @ ab) / denom, 0.0, 1.0) if denom > 0 else np.zeros(len(q))
    return np.linalg.norm(q - (a + t[:, None] * ab), axis=1)


def _polygon_distance(verts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance from a convex polygon (vertices in counter-clockwise order, as Qhull gives in 2-D)."""
    n = len(verts)
    edges = [(verts[i], verts[(i + 1) % n]) for i in range(n)]
    d = np.min(np.stack([_segment_distance(a, b, q) for a, b in edges]), axis=0)
    inside = np.ones(len(q), bool)
    for a, b in edges:
        cross = (b[0] - a[0]) * (q[:, 1] - a[1]) - (b[1] - a[1]) * (q[:, 0] - a[0])
        inside &= cross >= -1e-12
    return np.where(inside, 0.0, d)


def growth(d) -> np.ndarray:
    d = np.asarray(d, float)
    return d + 0.5 * d * d


def student_t(rng: np.random.Generator, dof: float, size) -> np.ndarray:
    return rng.standard_t(dof, size=size)


# ---------------------------------------------------------------------- gap


def gap_kappa(folds: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    """κ from backtest folds, each (errors, noise sd, distances, scales) of the held-out runs:
    every fold's error beyond seed noise per unit of S·h(d) is one estimate κ_f, read against the
    typical backtest κ_ref of the calibration family and pooled with the prior as one more fold,
    κ = κ₀·sqrt((1 + Σ (κ_f/κ_ref)²) / (1 + folds)): runs whose own backtests miss by more than
    usual get wider intervals, runs that backtest well narrower ones."""
    ests = []
    for err, noise, dist, scale in folds:
        h = growth(dist) * scale
        ok = np.isfinite(err) & (h > 1e-9)
        if not ok.any():
            continue
        excess = np.maximum(err[ok] ** 2 - np.nan_to_num(noise[ok], nan=0.0) ** 2, 0.0)
        # one systematic error per fold: its mean square beyond noise, per unit of growth
        ests.append(math.sqrt(float(np.sum(excess)) / float(np.sum(h[ok] ** 2))))
    pooled = GAP_KAPPA_PRIOR * math.sqrt((1 + sum((k / GAP_KAPPA_BACKTEST) ** 2 for k in ests)) / (1 + len(ests)))
    return pooled, ests


def gap_scale(point: np.ndarray, floor: float) -> np.ndarray:
    """S: the size of the gap the forms predict there, plus two noise standard deviations."""
    return np.abs(np.asarray(point, float)) + floor


def gap_term(extra: dict, u, v, point) -> np.ndarray:
    """The extrapolation term (S, n) of a gap law's samples at (u, v), where the forms' weighted
    point fit predicts the gap ``point`` (module docstring)."""
    u, v = np.atleast_1d(np.asarray(u, float)), np.atleast_1d(np.asarray(v, float))
    z = np.asarray(extra["z"], float)[:, None]
    d = hull_distance(np.asarray(extra["hull"], float), np.stack([u, v], axis=1))
    return z * (extra["kappa"] * gap_scale(point, extra["scale_floor"]) * growth(d))[None, :]


# ---------------------------------------------------------------------- reference


def reference_term(extra: dict, n_params, ratio) -> tuple[np.ndarray, np.ndarray]:
    """The reference's extrapolation terms at (P, N:L): (shape term (S, n) added to ln(reducible
    loss), level term (S, n) added to the loss in its units)."""
    p = np.atleast_1d(np.asarray(n_params, float))
    r = np.atleast_1d(np.asarray(ratio, float))
    tau = np.maximum(np.log(p) - extra["log_p_max"], 0.0)[None, :]
    w = (np.log(r) - extra["log_r_center"])[None, :]
    z = np.asarray(extra["z"], float)  # (S, 3)
    c = extra["curvature"]
    # The optimum moves by a·τ in ln N:L and the curvature changes by b·τ: c((w − aτ)² − w²) + bτw²,
    # written as three outer products of per-sample and per-point factors.
    a = z[:, 1:2] * extra["kappa_opt"]
    b = z[:, 2:3] * extra["kappa_curv"] * c
    shape = (c * a * a) * (tau * tau) - (2.0 * c * a) * (tau * w) + b * (tau * w * w)
    level = z[:, :1] * extra["kappa_level"] * tau * extra["reducible_at_max"]
    return shape, level
