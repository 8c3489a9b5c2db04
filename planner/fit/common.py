"""Shared machinery of the parametric laws: input checks, scale levels, and the fitting
pipeline (multi-start solve, bootstrap, asymptotic covariance, held-out error, warnings).

A law form describes itself as a :class:`Spec` (a model of ln L in an internal, mostly
unconstrained parameterization θ, its box, its starts, and the map θ -> reported values);
:func:`fit_spec` turns a spec into a :class:`~planner.fit.result.FitResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from planner.errors import CpPlanError
from planner.fit import solver
from planner.fit.result import FitResult

# ---------------------------------------------------------------------- input checks


def param_key(parameterization, alpha) -> str:
    """Group key of a parameterization; a depth-α other than the presets carries its α."""
    p = "all" if parameterization is None or (isinstance(parameterization, float) and math.isnan(parameterization)) \
        else str(parameterization)
    if p == "depth-alpha" and alpha is not None and not (isinstance(alpha, float) and math.isnan(alpha)):
        return f"depth-alpha:{float(alpha):g}"
    return p


def require_columns(df, columns: list[str], law: str, hint: str = "") -> None:
    """Refuse a frame that lacks a column the law needs."""
    if df is None or not hasattr(df, "columns"):
        raise CpPlanError(f"the {law} law needs a pandas DataFrame of runs, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CpPlanError(
            f"the {law} law needs column(s) {', '.join(missing)}; the runs have "
            f"{', '.join(map(str, df.columns)) or 'no columns'}" + (f"; {hint}" if hint else ""))


def _ids(df, mask, k: int = 5) -> str:
    idx = np.nonzero(np.asarray(mask))[0]
    if "run_id" in df.columns:
        labels = [str(v) for v in df["run_id"].to_numpy()[idx[:k]]]
    else:
        labels = [f"row {i}" for i in idx[:k]]
    more = f" and {idx.size - k} more" if idx.size > k else ""
    return ", ".join(labels) + more


def positive_array(df, column: str, law: str) -> np.ndarray:
    """Column as float64; refuses NaN, inf and values ≤ 0 naming the runs."""
    try:
        x = df[column].to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError):
        raise CpPlanError(f"column {column!r} holds non-numeric values; the {law} law needs numbers") from None
    bad = ~(np.isfinite(x) & (x > 0))
    if bad.any():
        raise CpPlanError(
            f"{int(bad.sum())} run(s) have a missing, non-finite or non-positive {column} "
            f"({_ids(df, bad)}); drop them (e.g. --where status=done, or fix the import) and refit")
    return x


def scale_levels(x: np.ndarray, gap_decades: float = 0.15) -> np.ndarray:
    """Integer level per point (0 = smallest): sorted log10 values are split wherever two
    neighbours are more than ``gap_decades`` apart, so runs of one nominal size (whose exact
    counts differ by rounding) share a level."""
    lx = np.log10(np.asarray(x, float))
    order = np.argsort(lx, kind="stable")
    levels = np.empty(lx.size, dtype=int)
    level = 0
    for j, i in enumerate(order):
        if j and lx[i] - lx[order[j - 1]] > gap_decades:
            level += 1
        levels[i] = level
    return levels


def too_few(law: str, n: int, need: int, what: str, fix: str) -> CpPlanError:
    return CpPlanError(f"the {law} law needs at least {need} {what}, got {n}; {fix}")


# Largest batch of (problems × points) solved at once: about 16 MB per float64 temporary, so a
# fit's memory stays bounded (well under 1 GB) whatever the number of runs.
MAX_BATCH_ELEMENTS = 500_000

# A table with more runs than this is bootstrapped m-out-of-n (m = BOOT_MAX_ROWS draws per
# replicate, deviations from the full-data optimum rescaled by √(m/n); Bickel, Götze & van Zwet
# 1997) when its law is pointwise: at 100k runs a replicate then costs a tenth of the work, and
# the spread it estimates is the same for a smooth M-estimator. The fit itself uses every run.
BOOT_MAX_ROWS = 10_000

# ---------------------------------------------------------------------- spec


@dataclass
class Spec:
    """One law form on one data set, in the internal parameterization θ.

    ``fn(theta (S, p), X) -> (pred (S, n), jac (S, n, p))`` models ln L at the points ``X``;
    ``to_values(theta (S, p)) -> (S, len(names))`` gives the reported parameters (fixed ones
    included at their fixed value). ``scale`` orders points for the held-out split;
    ``strata`` (or None) labels the groups a bootstrap resamples within.
    """

    law: str
    names: tuple[str, ...]
    theta_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    fn: Callable[[np.ndarray, dict], tuple[np.ndarray, np.ndarray]]
    to_values: Callable[[np.ndarray], np.ndarray]
    X: dict
    y: np.ndarray
    starts: np.ndarray
    delta: float | None
    scale: np.ndarray
    meta: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    strata: np.ndarray | None = None
    bootstrap_kind: str = "pairs"  # pairs | stratified | residual
    checks: Callable[[np.ndarray, dict], list[str]] | None = None  # law-specific warnings
    value_of_theta: dict = field(default_factory=dict)  # theta name -> reported name (for bound warnings)
    max_alternates: int = 2  # other local optima each bootstrap replicate also starts from
    # fn is elementwise in the points, so X's arrays may be (S, n), one row of points per problem
    # (each bootstrap replicate its own resample): allows the m-out-of-n bootstrap of large tables
    pointwise: bool = False

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def p(self) -> int:
        return len(self.theta_names)

    def model(self, X: dict | None = None):
        X = self.X if X is None else X
        return lambda theta: self.fn(theta, X)


@dataclass(frozen=True)
class Solved:
    theta: np.ndarray
    fun: float
    converged: bool
    message: str
    optima: np.ndarray  # distinct local optima (k, p), best first
    optima_fun: np.ndarray


def solve(spec: Spec, w: np.ndarray | None = None, starts: np.ndarray | None = None,
          polish: bool = True) -> Solved:
    """Multi-start fit: batched IRLS-LM from every start, the best polished to a tight tolerance."""
    w = np.ones(spec.n) if w is None else w
    starts = spec.starts if starts is None else starts
    res = solver.irls_lm_chunked(spec.model(), starts, spec.y, w, spec.delta, spec.lower, spec.upper,
                                 max_elements=MAX_BATCH_ELEMENTS)
    ok = np.isfinite(res.fun)
    if not ok.any():
        raise CpPlanError(f"the {spec.law} law could not be evaluated at any start (non-finite predictions); "
                          "check the runs for extreme values")
    order = np.argsort(np.where(ok, res.fun, np.inf), kind="stable")
    order = order[ok[order]]
    theta, fun, conv = res.theta[order[0]], float(res.fun[order[0]]), bool(res.converged[order[0]])
    message = "IRLS-LM converged" if conv else f"IRLS-LM stopped at {res.n_iter} iterations"
    if polish:
        # continue the winner alone to a tight tolerance: the fixed point of IRLS-LM satisfies
        # Jᵀψ(r) = 0, the exact stationarity condition of the Huber (or least-squares) objective
        fin = solver.irls_lm(spec.model(), theta[None, :], spec.y, w, spec.delta, spec.lower, spec.upper,
                             max_iter=5000, rtol=1e-15, xtol=1e-14)
        if fin.fun[0] <= fun:
            theta, fun = fin.theta[0], float(fin.fun[0])
            conv = conv or bool(fin.converged[0])
            message += f"; polished in {fin.n_iter} iterations"
    # distinct optima: greedy, by objective, more than 1% apart in some coordinate
    kept, kept_f = [theta], [fun]
    for i in order[1:]:
        t = res.theta[i]
        if all(np.max(np.abs(t - k) / np.maximum(np.abs(k), 1e-2)) > 1e-2 for k in kept):
            kept.append(t)
            kept_f.append(float(res.fun[i]))
        if len(kept) >= 6:
            break
    return Solved(theta=theta, fun=fun, converged=conv, message=message,
                  optima=np.array(kept), optima_fun=np.array(kept_f))


def predict_log(spec: Spec, theta: np.ndarray, X: dict | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        return spec.fn(np.atleast_2d(theta), spec.X if X is None else X)[0]


def asymptotic_cov(spec: Spec, theta: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Covariance of θ̂ (used when there is no bootstrap, and for parametric prediction draws).

    Least squares: s²(JᵀJ)⁻¹ with s² = RSS/(n − p). Huber: the M-estimator sandwich
    H⁻¹MH⁻¹·n/(n − p) with H = Σ ψ'(r_i) J_iJ_iᵀ (only points with |r| ≤ δ) and
    M = Σ ψ(r_i)² J_iJ_iᵀ (Huber 1967; Huber 1981 §7.6). When fewer than p points lie within δ
    H is singular and the least-squares form is used instead. On Epoch's data this sandwich
    gives SEs of the bootstrap's order; the bootstrap is still the better estimate.
    """
    w = np.ones(spec.n) if w is None else w
    with np.errstate(all="ignore"):
        pred, jac = spec.fn(theta[None, :], spec.X)
    r, j = spec.y - pred[0], jac[0]
    n, p = spec.n, spec.p
    dof = max(n - p, 1)

    def least_squares():
        h = (j * w[:, None]).T @ j
        return float(np.sum(w * r * r)) / dof * np.linalg.pinv(h)

    if spec.delta is None:
        cov = least_squares()
    else:
        inside = w * (np.abs(r) <= spec.delta)
        h = (j * inside[:, None]).T @ j
        if np.count_nonzero(inside) < p or np.linalg.matrix_rank(h) < p:
            cov = least_squares()
        else:
            ps = solver.psi(r, spec.delta)
            m = (j * (w * ps * ps)[:, None]).T @ j
            hi = np.linalg.inv(h)
            cov = hi @ m @ hi * n / dof
    return 0.5 * (cov + cov.T)


def values_cov(spec: Spec, theta: np.ndarray, cov_theta: np.ndarray) -> np.ndarray:
    """Delta method: covariance of the reported values from that of θ (numeric Jacobian)."""
    v0 = spec.to_values(theta[None, :])[0]
    jac = np.zeros((v0.size, theta.size))
    for k in range(theta.size):
        h = 1e-6 * max(1.0, abs(theta[k]))
        tp, tm = theta.copy(), theta.copy()
        tp[k] += h
        tm[k] -= h
        jac[:, k] = (spec.to_values(tp[None, :])[0] - spec.to_values(tm[None, :])[0]) / (2 * h)
    cov = jac @ cov_theta @ jac.T
    return 0.5 * (cov + cov.T)


def residual_stats(r: np.ndarray) -> dict:
    a = np.abs(r)
    return {"rms": float(np.sqrt(np.mean(r * r))), "mean": float(np.mean(r)), "mae": float(np.mean(a)),
            "median_abs": float(np.median(a)), "max_abs": float(np.max(a))}


def information_criteria(r: np.ndarray, k: int) -> tuple[float, float]:
    """AIC and BIC of a Gaussian model of the log-loss residuals, constants dropped
    (Burnham & Anderson 2002, eq. 2.13): n·ln(RSS/n) + 2k and n·ln(RSS/n) + k·ln n."""
    n = r.size
    rss = max(float(np.sum(r * r)), 1e-300)
    ll = n * math.log(rss / n)
    return ll + 2 * k, ll + k * math.log(n)


# ---------------------------------------------------------------------- bootstrap


def bootstrap(spec: Spec, solved: Solved, n_boot: int, rng: np.random.Generator,
              max_alternates: int | None = None) -> tuple[np.ndarray, int]:
    """Refit ``n_boot`` resamples at once; returns (values (B, q), number failed).

    Each replicate starts from the full-data optimum and from up to ``max_alternates`` other
    local optima the multi-start found (objective within 25% of the best), keeping the best,
    so a replicate may change basin when its data prefer another one.
    """
    max_alternates = spec.max_alternates if max_alternates is None else max_alternates
    starts = [solved.theta]
    for t, f in zip(solved.optima[1:], solved.optima_fun[1:]):
        if len(starts) > max_alternates:
            break
        if f <= 1.25 * solved.fun + 1e-300:
            starts.append(t)
    k = len(starts)
    n = spec.n
    if uses_m_of_n(spec):
        return _bootstrap_m_of_n(spec, solved, np.array(starts), n_boot, rng)
    if spec.bootstrap_kind == "residual":
        fitted = predict_log(spec, solved.theta)[0]
        resid = spec.y - fitted
        resid = (resid - resid.mean()) * math.sqrt(n / max(n - spec.p, 1))
    # Replicates go in batches whose (replicates × starts × points) stays within
    # MAX_BATCH_ELEMENTS, so memory is bounded for any number of points. A table small enough
    # for one batch (every published one) draws exactly as before.
    per = max(1, MAX_BATCH_ELEMENTS // max(n * k, 1))
    kept, n_bad = [], 0
    for b0 in range(0, n_boot, per):
        nb = min(per, n_boot - b0)
        if spec.bootstrap_kind == "residual":
            draw = rng.integers(0, n, size=(nb, n))
            y = fitted[None, :] + resid[draw]
            w = np.ones((nb, n))
        else:
            strata = spec.strata if spec.bootstrap_kind == "stratified" else None
            w = solver.bootstrap_counts(n, nb, rng, strata)
            y = np.broadcast_to(spec.y, (nb, n))
        theta0 = np.repeat(np.array(starts), nb, axis=0)  # start-major: [s0 × B, s1 × B, ...]
        res = solver.irls_lm(spec.model(), theta0, np.tile(y, (k, 1)), np.tile(w, (k, 1)), spec.delta,
                             spec.lower, spec.upper, rtol=1e-9)
        fun = res.fun.reshape(k, nb)
        best = np.argmin(np.where(np.isfinite(fun), fun, np.inf), axis=0)
        theta = res.theta.reshape(k, nb, -1)[best, np.arange(nb)]
        conv = res.converged.reshape(k, nb)[best, np.arange(nb)]
        ok = np.isfinite(fun[best, np.arange(nb)]) & conv
        values = spec.to_values(theta)
        ok &= np.isfinite(values).all(axis=1)
        kept.append(values[ok])
        n_bad += int((~ok).sum())
    return np.concatenate(kept), n_bad


def uses_m_of_n(spec: Spec) -> bool:
    """Whether :func:`bootstrap` resamples BOOT_MAX_ROWS of the runs per replicate (m-out-of-n)."""
    return spec.pointwise and spec.n > BOOT_MAX_ROWS and spec.bootstrap_kind != "residual"


def _m_of_n_draws(spec: Spec, m: int, nb: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices (nb, m) of nb resamples of m runs drawn with replacement; within each stratum
    (stratified bootstrap) in proportion to its size, at least one run each."""
    if spec.bootstrap_kind != "stratified" or spec.strata is None:
        return rng.integers(0, spec.n, size=(nb, m))
    parts = []
    for label in np.unique(spec.strata):
        members = np.nonzero(spec.strata == label)[0]
        take = max(1, round(m * members.size / spec.n))
        parts.append(members[rng.integers(0, members.size, size=(nb, take))])
    return np.concatenate(parts, axis=1)


def _bootstrap_m_of_n(spec: Spec, solved: Solved, starts: np.ndarray, n_boot: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """:func:`bootstrap` for a large table of a pointwise law (BOOT_MAX_ROWS): each replicate
    refits m resampled runs from the same starts, and its deviation from the full-data optimum
    θ̂ is shrunk by √(m/n) (√m(θ*ₘ − θ̂) estimates the law of √n(θ̂ − θ))."""
    m, n, k = BOOT_MAX_ROWS, spec.n, len(starts)
    shrink = math.sqrt(m / n)
    per = max(1, MAX_BATCH_ELEMENTS // max(m * k, 1))
    kept, n_bad = [], 0
    for b0 in range(0, n_boot, per):
        nb = min(per, n_boot - b0)
        idx = np.tile(_m_of_n_draws(spec, m, nb, rng), (k, 1))  # start-major, as in bootstrap()
        X = {name: np.asarray(v)[idx] for name, v in spec.X.items()}
        y = spec.y[idx]
        theta0 = np.repeat(starts, nb, axis=0)
        res = solver.irls_lm(lambda th, rows: spec.fn(th, {name: v[rows] for name, v in X.items()}), theta0, y,
                             np.ones_like(y), spec.delta, spec.lower, spec.upper, rtol=1e-9, by_rows=True)
        fun = res.fun.reshape(k, nb)
        best = np.argmin(np.where(np.isfinite(fun), fun, np.inf), axis=0)
        theta = res.theta.reshape(k, nb, -1)[best, np.arange(nb)]
        ok = np.isfinite(fun[best, np.arange(nb)]) & res.converged.reshape(k, nb)[best, np.arange(nb)]
        theta = np.clip(solved.theta + shrink * (theta - solved.theta), spec.lower, spec.upper)
        values = spec.to_values(theta)
        ok &= np.isfinite(values).all(axis=1)
        kept.append(values[ok])
        n_bad += int((~ok).sum())
    return np.concatenate(kept), n_bad


# ---------------------------------------------------------------------- pipeline


def heldout_split(scale: np.ndarray, gap_decades: float = 0.15, min_fraction: float = 0.05,
                  levels: np.ndarray | None = None) -> tuple[np.ndarray | None, str]:
    """Mask of the points at the largest scale, or (None, reason) when that would leave fewer
    than two scale levels to fit on (one level says nothing about extrapolation).

    Discrete scales (sweeps at a few sizes or budgets): levels from :func:`scale_levels`; the
    top level is held out, joined by the next ones while it holds fewer than
    max(1, ``min_fraction``·n) points. Continuous scales (published runs spread over many
    budgets, where gaps never separate 3 levels): the largest 10% of runs by scale. ``levels``
    (0 = smallest) overrides the gap clustering when the caller knows them.
    """
    caller_levels = levels
    levels = scale_levels(scale, gap_decades) if levels is None else np.asarray(levels)
    n_levels = int(levels.max()) + 1
    need = max(1, math.ceil(min_fraction * levels.size))
    top = n_levels - 1
    while top > 0 and np.sum(levels >= top) < need:
        top -= 1
    if top >= 2:
        return levels >= top, f"held out the largest {n_levels - top} of {n_levels} scale levels"
    distinct = np.unique(np.round(np.log10(scale), 2)).size
    if caller_levels is None and distinct >= 10:
        cut = np.quantile(scale, 0.9)
        mask = scale >= cut
        if 0 < mask.sum() < scale.size:
            return mask, f"held out the largest 10% of runs by scale (scale ≥ {cut:.3g}; scales are continuous)"
    return None, f"needs at least 3 scale levels (2 to fit, 1 to predict), found {n_levels}"


def heldout_error(spec_builder: Callable[[np.ndarray], Spec], spec: Spec,
                  gap_decades: float = 0.15) -> tuple[float, dict]:
    """Leave-largest-scale-out: refit on the other levels, RMS log-error on the held-out ones."""
    mask, why = heldout_split(spec.scale, gap_decades)
    info = {"method": "leave-largest-scale-out", "note": why}
    if mask is None:
        return float("nan"), info
    try:
        sub = spec_builder(~mask)
        sol = solve(sub, polish=False)
    except CpPlanError as exc:
        info["note"] = f"refit without the largest scale failed: {exc}"
        return float("nan"), info
    X_out = {k: np.asarray(v)[mask] for k, v in spec.X.items()}
    pred = predict_log(sub, sol.theta, X_out)[0]
    err = spec.y[mask] - pred
    info.update(n_heldout=int(mask.sum()), n_train=int((~mask).sum()),
                scale_min_heldout=float(spec.scale[mask].min()), bias=float(np.mean(err)))
    if sub.fixed:
        info["train_fixed"] = dict(sub.fixed)
    return float(np.sqrt(np.mean(err * err))), info


WALD_FALLBACK_BOOTSTRAP = 100  # refits behind the interval of a positive coefficient whose Wald interval crosses 0


def fit_spec(spec: Spec, *, bootstrap_n: int = 0, seed: int = 0, level: float = 0.95,
             heldout: tuple[float, dict] | None = None, solved: Solved | None = None,
             extra_warnings: list[str] | None = None) -> FitResult:
    """Solve ``spec`` (unless ``solved`` is given), bootstrap it, and assemble a FitResult."""
    if not 0 < level < 1:
        raise CpPlanError(f"level={level} must be in (0, 1), e.g. 0.95")
    if not isinstance(bootstrap_n, (int, np.integer)) or bootstrap_n < 0:
        raise CpPlanError(f"bootstrap={bootstrap_n!r} must be a non-negative integer (e.g. 1000)")
    sol = solved if solved is not None else solve(spec)
    theta = sol.theta
    values = spec.to_values(theta[None, :])[0]
    names = spec.names
    warnings = list(extra_warnings or [])
    if not sol.converged:
        warnings.append(f"the optimizer did not converge ({sol.message}); treat the values with care")

    # bound and identifiability checks
    span = spec.upper - spec.lower
    for k, tn in enumerate(spec.theta_names):
        for side, b in (("lower", spec.lower[k]), ("upper", spec.upper[k])):
            if np.isfinite(b) and abs(theta[k] - b) <= 1e-6 * max(1.0, abs(span[k]) if np.isfinite(span[k]) else 1.0):
                shown = spec.value_of_theta.get(tn, tn)
                warnings.append(
                    f"{shown} is at its {side} bound ({tn} = {b:g}): the data do not pin it down; "
                    "the fit is degenerate in that direction (add runs over a wider range)")
    cov_theta = asymptotic_cov(spec, theta)
    with np.errstate(all="ignore"):
        sd = np.sqrt(np.abs(np.diag(cov_theta)))
        corr = cov_theta / np.outer(sd, sd)
    if np.all(np.isfinite(corr)) and sd.min() > 0:
        ev = np.linalg.eigvalsh(0.5 * (corr + corr.T))
        cond = ev.max() / max(ev.min(), 1e-300)
        if cond > 1e8:
            warnings.append(f"several parameter combinations fit these runs about equally well (correlation "
                            f"condition number {cond:.1e}): read the predictions, not single coefficients; runs "
                            "at more sizes or shapes pin them down")
    for t, f in zip(sol.optima[1:], sol.optima_fun[1:]):
        if f <= sol.fun * (1 + 1e-6) + 1e-15:
            warnings.append("degenerate solution: distinct parameter sets reach the same objective "
                            f"({f:.6g}); the reported one is the first found")
            break
    if spec.checks is not None:
        warnings.extend(spec.checks(theta, dict(zip(names, values))))

    # uncertainty
    samples = None
    n_failed = 0
    meta = dict(spec.meta)
    z = _normal_quantile(0.5 + level / 2)
    if bootstrap_n > 0:
        rng = np.random.default_rng(seed)
        samples, n_failed = bootstrap(spec, sol, int(bootstrap_n), rng)
        if samples.shape[0] < 2:
            raise CpPlanError(f"all but {samples.shape[0]} of {bootstrap_n} bootstrap refits of the {spec.law} "
                              "law failed; the law cannot be fitted reliably to these runs (add runs)")
        if n_failed > 0.05 * bootstrap_n:
            warnings.append(f"{n_failed} of {bootstrap_n} bootstrap refits failed to converge and were dropped")
        stderr = samples.std(axis=0, ddof=1)
        tail = (1 - level) / 2 * 100
        lo, hi = np.percentile(samples, [tail, 100 - tail], axis=0)
        cov = np.cov(samples, rowvar=False).reshape(len(names), len(names))
        meta["interval_method"] = "bootstrap-percentile"
    else:
        cov = values_cov(spec, theta, cov_theta)
        stderr = np.sqrt(np.abs(np.diag(cov)))
        lo, hi = values - z * stderr, values + z * stderr
        meta["interval_method"] = "wald-asymptotic"
        # A positive coefficient (fitted on the log scale: E, A, B, k, ...) whose Wald interval
        # crosses 0 gets the interval of its own fitted scale instead: percentiles of draws
        # θ ~ N(θ̂, Σθ) mapped through to_values (exp(ln A ± z·se) for a log parameter), which
        # stay positive and follow the skew the linear Wald interval ignores.
        neg = (values > 0) & (lo <= 0) & np.isfinite(stderr)
        if neg.any() and np.all(np.isfinite(cov_theta)):
            rng = np.random.default_rng(seed + 7)
            draws = rng.multivariate_normal(theta, cov_theta, size=4000, method="eigh", check_valid="ignore")
            with np.errstate(all="ignore"):
                mapped = spec.to_values(draws)
                mapped = np.where(np.isfinite(mapped), mapped, np.nan)
                tail = (1 - level) / 2 * 100
                plo, phi = np.nanpercentile(mapped, [tail, 100 - tail], axis=0)
            fixed_idx = [i for i in np.nonzero(neg)[0] if np.isfinite(plo[i]) and plo[i] > 0]
            for i in fixed_idx:
                lo[i], hi[i] = plo[i], phi[i]
            if fixed_idx:
                meta["interval_method"] = ("wald-asymptotic; on the fitted (log) scale for "
                                           + ", ".join(names[i] for i in fixed_idx) + ", whose Wald interval crossed 0")
        # a positive coefficient fitted on a linear scale (an exponent, say) that still crosses 0:
        # its interval from a small bootstrap
        still = [i for i in np.nonzero((values > 0) & (lo <= 0) & np.isfinite(stderr))[0] if names[i] not in spec.fixed]
        if still:
            boot, _ = bootstrap(spec, sol, WALD_FALLBACK_BOOTSTRAP, np.random.default_rng(seed + 11))
            if boot.shape[0] >= WALD_FALLBACK_BOOTSTRAP // 5:
                tail = (1 - level) / 2 * 100
                blo, bhi = np.percentile(boot, [tail, 100 - tail], axis=0)
                for i in still:
                    lo[i], hi[i] = blo[i], bhi[i]
                meta["interval_method"] += ("; bootstrap percentile (" + str(boot.shape[0]) + " refits) for "
                                            + ", ".join(names[i] for i in still) + ", whose Wald interval crossed 0")
    for name in spec.fixed:
        i = names.index(name)
        stderr[i], lo[i], hi[i] = 0.0, values[i], values[i]
        cov[i, :] = cov[:, i] = 0.0
    for i, name in enumerate(names):
        if name in spec.fixed or not np.isfinite(stderr[i]):
            continue
        if stderr[i] >= abs(values[i]) and values[i] != 0:
            warnings.append(f"{name} is poorly determined: standard error {stderr[i]:.3g} ≥ |{name}| = {abs(values[i]):.3g}")

    r = spec.y - predict_log(spec, theta)[0]
    k = spec.p
    aic, bic = information_criteria(r, k)
    held = heldout if heldout is not None else (float("nan"), {"method": "leave-largest-scale-out", "note": "not computed"})
    meta.update(
        theta_names=list(spec.theta_names), theta=theta.tolist(), theta_cov=cov_theta.tolist(),
        objective="huber" if spec.delta is not None else "least-squares", huber_delta=spec.delta,
        residual="ln(loss) - ln(predicted loss)", fixed=dict(spec.fixed), optimizer=sol.message,
        n_starts=int(len(spec.starts)), heldout=held[1],
        bootstrap={"n": int(bootstrap_n), "kind": spec.bootstrap_kind, "seed": int(seed), "n_failed": n_failed,
                   "n_used": 0 if samples is None else int(samples.shape[0]),
                   **({"m_out_of_n": BOOT_MAX_ROWS, "note": f"m-out-of-n: {BOOT_MAX_ROWS} of {spec.n} runs per "
                       "replicate, deviations from the full-data fit scaled by √(m/n)"}
                      if samples is not None and uses_m_of_n(spec) else {})},
    )
    return FitResult(
        law=spec.law, names=names, values=dict(zip(names, values)), stderr=dict(zip(names, stderr)),
        ci_low=dict(zip(names, lo)), ci_high=dict(zip(names, hi)), cov=cov, n=spec.n, n_free=k,
        objective=sol.fun, residuals=residual_stats(r), aic=aic, bic=bic, heldout_error=held[0],
        warnings=tuple(dict.fromkeys(warnings)), meta=meta, samples=samples, seed=int(seed), level=level,
    )


def parametric_samples(result: FitResult, to_values: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Draws θ ~ N(θ̂, Σ_θ) mapped to reported values: the stand-in for bootstrap refits when a
    fit has none (seeded with the fit's seed)."""
    theta = np.asarray(result.meta.get("theta"), float)
    cov = np.asarray(result.meta.get("theta_cov"), float)
    if theta.ndim != 1 or cov.shape != (theta.size, theta.size):
        v = np.array([[result.values[k] for k in result.names]])
        return np.repeat(v, n, axis=0)
    rng = np.random.default_rng(result.seed + 1)
    cov = np.where(np.isfinite(cov), cov, 0.0)
    draws = rng.multivariate_normal(theta, cov, size=n, method="eigh", check_valid="ignore")
    return to_values(draws)


def _normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


# ---------------------------------------------------------------------- prediction inputs


def input_arrays(law: str, inputs: dict, allowed: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Prediction inputs as equal-length float arrays; refuses unknown names and values that
    are not positive and finite."""
    unknown = sorted(set(inputs) - set(allowed))
    if unknown:
        raise CpPlanError(f"the {law} law predicts from {', '.join(allowed)}; unknown input(s) {', '.join(unknown)}")
    names = list(inputs)
    try:
        arrays = np.broadcast_arrays(*[np.atleast_1d(np.asarray(inputs[k], dtype=float)) for k in names])
    except ValueError as exc:
        raise CpPlanError(f"the {law} law's inputs {', '.join(names)} have incompatible lengths ({exc})") from None
    out = {}
    for k, a in zip(names, arrays):
        a = np.ravel(a)
        if not np.all(np.isfinite(a) & (a > 0)):
            bad = a[~(np.isfinite(a) & (a > 0))][0]
            raise CpPlanError(f"{k}={bad!r} must be a positive finite number")
        out[k] = a
    return out
