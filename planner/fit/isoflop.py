"""The ``isoflop`` law: Chinchilla approach 2 (Hoffmann et al. 2022, §3.2).

Runs are grouped by FLOP budget C. In each budget the loss is fitted by a parabola in ln N
(and separately in ln D) and its vertex is the budget's optimum N*(C) (D*(C)); then
N* = n_coef·C^a and D* = d_coef·C^b by least squares in log-log space.

Two guards, both recorded in ``meta['budgets']``:
- A budget whose lowest loss sits at the smallest or largest sampled size has no interior
  minimum: its vertex would be an extrapolation, so the budget is refused (with a warning).
  Fewer than 2 usable budgets is an error.
- The parabola is a local approximation of the IsoFLOP profile; far from the optimum the
  profile is asymmetric and a parabola through every point biases N* (Porian et al. 2024,
  App. on IsoFLOP interpolation). By default it is fitted to the lowest-loss point and its
  ``window`` = 3 neighbours on each side (``window=None``: all points).
Where several runs share a budget and size (an LR sweep), the lowest loss is used, as Porian
et al. do. Bootstrap: runs are resampled within each budget and the whole procedure repeated.
"""

from __future__ import annotations

import math

import numpy as np

from planner.errors import CpPlanError
from planner.fit import common
from planner.fit.result import FitResult

NAMES = ("a", "b", "n_coef", "d_coef")


def _budgets(df, gap_decades: float):
    common.require_columns(df, ["flops", "n_params", "loss"], "isoflop")
    c = common.positive_array(df, "flops", "isoflop")
    n = common.positive_array(df, "n_params", "isoflop")
    loss = common.positive_array(df, "loss", "isoflop")
    if "n_tokens" in df.columns and df["n_tokens"].notna().all():
        d = common.positive_array(df, "n_tokens", "isoflop")
        tokens_from = "n_tokens"
    else:
        d = c / (6.0 * n)
        tokens_from = "flops / (6 n_params)"
    levels = common.scale_levels(c, gap_decades)
    budgets = []
    for lev in range(levels.max() + 1):
        m = np.flatnonzero(levels == lev)
        ln_n = np.log(n[m])
        # one point per size: the lowest loss (several runs at one size = an LR or seed sweep)
        keys = np.round(ln_n, 6)
        keep = np.array([m[keys == k][np.argmin(loss[m][keys == k])] for k in np.unique(keys)])
        order = keep[np.argsort(n[keep], kind="stable")]
        budgets.append(dict(flops=float(np.exp(np.mean(np.log(c[m])))), ln_n=np.log(n[order]),
                            ln_d=np.log(d[order]), loss=loss[order], n_runs=int(m.size)))
    return budgets, tokens_from


def _vertices(x: np.ndarray, loss: np.ndarray, w: np.ndarray, window: int | None):
    """Parabola vertices for B weight rows at once. x, loss: (m,) sorted by x; w: (B, m) counts.

    Returns (vertex (B,), ok (B,), reason (B,) codes: 0 ok, 1 too few points, 2 minimum at an
    edge, 3 not convex, 4 vertex outside the window)."""
    b, m = w.shape
    present = w > 0
    masked = np.where(present, loss[None, :], np.inf)
    i_min = np.argmin(masked, axis=1)
    first = np.argmax(present, axis=1)
    last = m - 1 - np.argmax(present[:, ::-1], axis=1)
    edge = (i_min == first) | (i_min == last)
    if window is None:
        in_win = present
    else:
        # window counted in sampled points: rank of each present point among present points
        rank = np.cumsum(present, axis=1) - 1
        r_min = rank[np.arange(b), i_min][:, None]
        in_win = present & (np.abs(rank - r_min) <= window)
    ww = np.where(in_win, w, 0.0)
    n_pts = in_win.sum(axis=1)
    basis = np.stack([np.ones(m), x, x * x], axis=1)  # (m, 3)
    xtwx = np.einsum("bm,mi,mj->bij", ww, basis, basis)
    xtwy = np.einsum("bm,mi,m->bi", ww, basis, loss)
    coef = np.full((b, 3), np.nan)
    solvable = n_pts >= 3
    if solvable.any():
        with np.errstate(all="ignore"):
            coef[solvable] = _batched_solve(xtwx[solvable], xtwy[solvable])
    c1, c2 = coef[:, 1], coef[:, 2]
    with np.errstate(all="ignore"):
        vertex = -c1 / (2 * c2)
    lo = np.where(in_win, x[None, :], np.inf).min(axis=1)
    hi = np.where(in_win, x[None, :], -np.inf).max(axis=1)
    reason = np.zeros(b, dtype=int)
    reason[~(c2 > 0)] = 3
    reason[(c2 > 0) & ~((vertex > lo) & (vertex < hi))] = 4
    reason[edge] = 2
    reason[~solvable] = 1
    return vertex, reason == 0, reason


def _batched_solve(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, y[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(ai, yi, rcond=None)[0] for ai, yi in zip(a, y)])


REASONS = {1: "fewer than 3 sizes", 2: "lowest loss at the smallest or largest sampled size (no interior minimum)",
           3: "profile not convex", 4: "parabola vertex outside the sampled sizes"}


def _power_law(ln_c: np.ndarray, ln_y: np.ndarray, ok: np.ndarray):
    """Least-squares slope and intercept of ln y on ln C per row over the ok budgets.
    ln_c (k,), ln_y (B, k), ok (B, k) -> slope, intercept (B,), valid (B,)."""
    wgt = ok.astype(float)
    cnt = wgt.sum(axis=1)
    with np.errstate(all="ignore"):
        y0 = np.where(ok, ln_y, 0.0)
        mx = (wgt * ln_c).sum(axis=1) / cnt
        my = (wgt * y0).sum(axis=1) / cnt
        dx = ln_c[None, :] - mx[:, None]
        sxx = (wgt * dx * dx).sum(axis=1)
        sxy = (wgt * dx * (y0 - my[:, None])).sum(axis=1)
        slope = sxy / sxx
        return slope, my - slope * mx, (cnt >= 2) & (sxx > 0)


class IsoflopLaw:
    """Registry entry for ``isoflop``."""

    name = "isoflop"
    inputs = ("flops",)

    def fit(self, df, bootstrap: int = 0, seed: int = 0, level: float = 0.95, *, window: int | None = 3,
            gap_decades: float = 0.05) -> FitResult:
        """Fit to runs with flops, n_params, loss (and n_tokens; else D = C/(6N)) on IsoFLOP
        profiles; see the module docstring."""
        if window is not None and (not isinstance(window, (int, np.integer)) or window < 1):
            raise CpPlanError(f"window={window!r} must be a positive integer (points each side of the minimum) or None")
        if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
            raise CpPlanError(f"bootstrap={bootstrap!r} must be a non-negative integer (e.g. 1000)")
        if not 0 < level < 1:
            raise CpPlanError(f"level={level} must be in (0, 1), e.g. 0.95")
        budgets, tokens_from = _budgets(df, gap_decades)
        k = len(budgets)
        if k < 2:
            raise common.too_few("isoflop", k, 2, "FLOP budgets",
                                 "run IsoFLOP profiles (several sizes at each of several fixed budgets)")
        ln_c = np.log([bu["flops"] for bu in budgets])

        def optima(weights: list[np.ndarray]):
            """(ln N* (B, k), ok_n, ln D* (B, k), ok_d, reasons (B, k)) for per-budget weight rows."""
            bsz = weights[0].shape[0]
            out_n, out_d = np.full((bsz, k), np.nan), np.full((bsz, k), np.nan)
            ok_n, ok_d = np.zeros((bsz, k), bool), np.zeros((bsz, k), bool)
            reasons = np.zeros((bsz, k), int)
            for j, (bu, w) in enumerate(zip(budgets, weights)):
                vn, on, rn = _vertices(bu["ln_n"], bu["loss"], w, window)
                order = np.argsort(bu["ln_d"], kind="stable")
                vd, od, _ = _vertices(bu["ln_d"][order], bu["loss"][order], w[:, order], window)
                out_n[:, j], ok_n[:, j], reasons[:, j] = vn, on, rn
                out_d[:, j], ok_d[:, j] = vd, od
            return out_n, ok_n, out_d, ok_d, reasons

        ones = [np.ones((1, bu["ln_n"].size)) for bu in budgets]
        ln_ns, ok_n, ln_ds, ok_d, reasons = optima(ones)
        ln_ns, ok_n, ln_ds, ok_d, reasons = ln_ns[0], ok_n[0], ln_ds[0], ok_d[0], reasons[0]
        warnings = []
        table = []
        for j, bu in enumerate(budgets):
            row = {"flops": bu["flops"], "n_runs": bu["n_runs"], "n_sizes": int(bu["ln_n"].size),
                   "n_star": float(np.exp(ln_ns[j])) if ok_n[j] else None,
                   "d_star": float(np.exp(ln_ds[j])) if ok_d[j] else None,
                   "used": bool(ok_n[j])}
            if not ok_n[j]:
                row["refused"] = REASONS[int(reasons[j])]
                warnings.append(f"budget C={bu['flops']:.3g} skipped: {REASONS[int(reasons[j])]}")
            table.append(row)
        if ok_n.sum() < 2:
            raise CpPlanError(
                f"only {int(ok_n.sum())} of {k} FLOP budgets have an interior loss minimum; the isoflop law needs 2 "
                "or more: add sizes on both sides of each budget's best size")
        a, ln_kn, _ = _power_law(ln_c, ln_ns[None, :], ok_n[None, :])
        b, ln_kd, valid_d = _power_law(ln_c, ln_ds[None, :], ok_d[None, :])
        a, ln_kn = float(a[0]), float(ln_kn[0])
        if not valid_d[0]:
            warnings.append("fewer than 2 budgets have an interior minimum in D: b and d_coef are not fitted")
            b_v, ln_kd_v = float("nan"), float("nan")
        else:
            b_v, ln_kd_v = float(b[0]), float(ln_kd[0])
        values = np.array([a, b_v, math.exp(ln_kn), math.exp(ln_kd_v) if np.isfinite(ln_kd_v) else float("nan")])

        resid = ln_ns[ok_n] - (ln_kn + a * ln_c[ok_n])
        m = int(ok_n.sum())
        # asymptotic OLS covariance of (a, ln n_coef), and of (b, ln d_coef)
        cov = np.full((4, 4), np.nan)
        for (ia, ic), (slope, icpt, okm, ys) in (((0, 2), (a, ln_kn, ok_n, ln_ns)), ((1, 3), (b_v, ln_kd_v, ok_d, ln_ds))):
            mm = int(okm.sum())
            if mm > 2 and np.isfinite(slope):
                xs = ln_c[okm]
                r = ys[okm] - (icpt + slope * xs)
                s2 = float(r @ r) / (mm - 2)
                design = np.stack([xs, np.ones(mm)], axis=1)
                cv = s2 * np.linalg.inv(design.T @ design)
                coef = math.exp(icpt)
                jac = np.array([[1.0, 0.0], [0.0, coef]])
                cv = jac @ cv @ jac.T
                cov[ia, ia], cov[ia, ic], cov[ic, ia], cov[ic, ic] = cv[0, 0], cv[0, 1], cv[1, 0], cv[1, 1]
        cov[0:4:2, 1:4:2] = cov[1:4:2, 0:4:2] = 0.0

        samples = None
        n_failed = 0
        meta_boot = {"n": int(bootstrap), "kind": "within-budget pairs", "seed": int(seed)}
        if bootstrap > 0:
            rng = np.random.default_rng(seed)
            weights = [rng.multinomial(bu["ln_n"].size, np.full(bu["ln_n"].size, 1.0 / bu["ln_n"].size),
                                       size=bootstrap).astype(float) for bu in budgets]
            bn, bok, bd, bokd, _ = optima(weights)
            sa, sn, va = _power_law(ln_c, bn, bok)
            sb, sd, vb = _power_law(ln_c, bd, bokd)
            with np.errstate(over="ignore"):
                samples = np.stack([sa, sb, np.exp(sn), np.exp(sd)], axis=1)
            good = va & np.isfinite(samples[:, [0, 2]]).all(axis=1)
            n_failed = int((~good).sum())
            samples = samples[good]
            if samples.shape[0] < 2:
                raise CpPlanError(f"all but {samples.shape[0]} bootstrap refits of the isoflop law lost their interior "
                                  "minima; add sizes around each budget's optimum")
            if n_failed > 0.05 * bootstrap:
                warnings.append(f"{n_failed} of {bootstrap} bootstrap refits had fewer than 2 usable budgets and were dropped")
            meta_boot.update(n_failed=n_failed, n_used=int(samples.shape[0]))
        tail = (1 - level) / 2 * 100
        if samples is not None:
            with np.errstate(all="ignore"):
                stderr = np.nanstd(samples, axis=0, ddof=1)
                lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
                ok_rows = np.isfinite(samples).all(axis=1)
                cov = np.cov(samples[ok_rows], rowvar=False) if ok_rows.sum() > 2 else cov
            method = "bootstrap-percentile"
        else:
            from statistics import NormalDist

            z = NormalDist().inv_cdf(0.5 + level / 2)
            stderr = np.sqrt(np.abs(np.diag(cov)))
            lo, hi = values - z * stderr, values + z * stderr
            method = "wald-asymptotic"
        for i, name in enumerate(NAMES[:2]):
            if np.isfinite(stderr[i]) and np.isfinite(values[i]) and stderr[i] >= abs(values[i]):
                warnings.append(f"{name} is poorly determined: standard error {stderr[i]:.3g} ≥ |{name}|")

        # held out: the largest usable budget, predicted from the others
        used = np.flatnonzero(ok_n)
        if used.size >= 3:
            top = used[np.argmax(ln_c[used])]
            rest = ok_n.copy()
            rest[top] = False
            s2, i2, _ = _power_law(ln_c, ln_ns[None, :], rest[None, :])
            held_err = float(abs(ln_ns[top] - (i2[0] + s2[0] * ln_c[top])))
            held = {"method": "leave-largest-scale-out", "note": "ln N* at the largest usable budget predicted from the others",
                    "flops_heldout": float(np.exp(ln_c[top])), "bias": float(ln_ns[top] - (i2[0] + s2[0] * ln_c[top]))}
        else:
            held_err = float("nan")
            held = {"method": "leave-largest-scale-out", "note": f"needs 3 usable budgets, found {used.size}"}
        aic, bic = common.information_criteria(resid, 2) if m > 0 else (float("nan"), float("nan"))
        meta = {
            "form": "N* = n_coef * C^a, D* = d_coef * C^b (Chinchilla approach 2)",
            "reference": "Hoffmann et al. 2022 §3.2; Porian et al. 2024",
            "window": window, "budget_gap_decades": gap_decades, "tokens_from": tokens_from,
            "budgets": table, "n_budgets_used": m, "n_runs": int(sum(bu["n_runs"] for bu in budgets)),
            "residual": "ln N* (parabola vertex) - ln N* (power law)", "interval_method": method,
            "bootstrap": meta_boot, "heldout": held, "value_names": list(NAMES),
        }
        if "flop_convention" in df.columns:
            conv = sorted({str(v) for v in df["flop_convention"].dropna()})
            if conv:
                meta["flop_convention"] = conv
        return FitResult(
            law="isoflop", names=NAMES, values=dict(zip(NAMES, values)), stderr=dict(zip(NAMES, stderr)),
            ci_low=dict(zip(NAMES, lo)), ci_high=dict(zip(NAMES, hi)), cov=cov, n=m, n_free=2,
            objective=float(resid @ resid), residuals=common.residual_stats(resid), aic=aic, bic=bic,
            heldout_error=held_err, warnings=tuple(dict.fromkeys(warnings)), meta=meta, samples=samples,
            seed=int(seed), level=level,
        )

    def predict_values(self, values: np.ndarray, meta: dict, inputs: dict) -> np.ndarray:
        """N* (default) or D* (``what="n_tokens"``) at ``flops``."""
        inputs = dict(inputs)
        what = inputs.pop("what", "n_params")
        if what not in ("n_params", "n_tokens"):
            raise CpPlanError(f"what={what!r}: the isoflop law predicts n_params (N*) or n_tokens (D*)")
        x = common.input_arrays("isoflop", inputs, self.inputs)
        if "flops" not in x:
            raise CpPlanError("the isoflop law predicts from flops=")
        v = np.atleast_2d(values)
        exp_, coef = (v[:, 0:1], v[:, 2:3]) if what == "n_params" else (v[:, 1:2], v[:, 3:4])
        with np.errstate(all="ignore"):
            return coef * x["flops"] ** exp_

    def parametric_samples(self, result: FitResult, n: int) -> np.ndarray:
        """Normal draws of (a, b) with their coefficients from the asymptotic covariance."""
        rng = np.random.default_rng(result.seed + 1)
        v = np.array([result.values[k] for k in NAMES])
        cov = np.where(np.isfinite(result.cov), result.cov, 0.0)
        out = rng.multivariate_normal(np.nan_to_num(v), cov, size=n, method="eigh", check_valid="ignore")
        out[:, ~np.isfinite(v)] = np.nan
        return out
