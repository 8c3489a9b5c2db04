"""The ``compute`` law: L(C) = E + A·C^(−a), loss against training FLOPs along one family of
runs (one parameterization and N:L), e.g. the fitted frontier of Cerebras-GPT (Dey et al.
2023, eq. 1) or Porian et al. 2024's saturating loss fit ln L* = LSE(ln A − a ln C, ln E).

Fitted in log space: ln L̂ = LSE(ln A' − a·ln(C/C_ref), ln E) with C_ref the geometric mean of
the budgets (for conditioning; A = A'·C_ref^a is reported), least squares by default or Huber
with ``delta``. With ``frontier`` (default) only the lowest loss at each FLOP level is kept —
the compute-efficient frontier — so off-optimal runs (an LR sweep) do not drag the curve.
Needs 4 FLOP levels; with 3, E is fixed at 0 (a pure power law) and a warning says so.
Bootstrap: residual resampling (fixed design), since each level holds a single point.
"""

from __future__ import annotations

import numpy as np

from planner.errors import CpPlanError
from planner.fit import common
from planner.fit.result import FitResult

NAMES = ("E", "A", "a")
EXPONENTS = np.array([0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8, 1.2, 2.0])


def _model_full(theta, X):
    x = X["x"]
    e, la, a = (theta[:, k:k + 1] for k in range(3))
    u1 = la - a * x
    u2 = np.broadcast_to(e, u1.shape)
    m = np.maximum(u1, u2)
    x1, x2 = np.exp(u1 - m), np.exp(u2 - m)
    s = x1 + x2
    p1, p2 = x1 / s, x2 / s
    pred = m + np.log(s)
    jac = np.stack([p2, p1, -p1 * x], axis=-1)
    return pred, jac


def _model_no_e(theta, X):
    x = X["x"]
    la, a = theta[:, 0:1], theta[:, 1:2]
    pred = la - a * x
    jac = np.stack([np.ones_like(pred), -np.broadcast_to(x, pred.shape)], axis=-1)
    return pred, jac


def _to_values(theta: np.ndarray, ln_c_ref: float, fixed_e: bool) -> np.ndarray:
    if fixed_e:
        la, a = theta[:, 0], theta[:, 1]
        e_val = np.zeros_like(a)
    else:
        e, la, a = theta.T
        e_val = np.exp(e)
    with np.errstate(over="ignore"):
        return np.stack([e_val, np.exp(la + a * ln_c_ref), a], axis=1)


def prepare(df, frontier: bool = True, gap_decades: float = 0.15) -> tuple[np.ndarray, np.ndarray, dict]:
    """(flops, loss, meta) of the points to fit (the per-level minima with ``frontier``)."""
    common.require_columns(df, ["flops", "loss"], "compute")
    c = common.positive_array(df, "flops", "compute")
    loss = common.positive_array(df, "loss", "compute")
    meta: dict = {"frontier": bool(frontier), "n_runs": int(len(c))}
    if frontier:
        levels = common.scale_levels(c, gap_decades)
        keep = np.array([np.flatnonzero(levels == k)[np.argmin(loss[levels == k])] for k in range(levels.max() + 1)])
        c, loss = c[keep], loss[keep]
        meta["frontier_note"] = f"lowest loss at each of {keep.size} FLOP levels (levels {gap_decades:g} decades apart)"
    if "flop_convention" in df.columns:
        conv = sorted({str(v) for v in df["flop_convention"].dropna()})
        if conv:
            meta["flop_convention"] = conv
    return c, loss, meta


def make_spec(c: np.ndarray, loss: np.ndarray, meta: dict, delta: float | None = None) -> common.Spec:
    levels = np.unique(np.round(np.log10(c), 3)).size
    if levels < 3:
        raise common.too_few("compute", levels, 3, "distinct FLOP budgets",
                             "train the family at more scales (each scale adds a budget)")
    fixed_e = levels < 4
    ln_c_ref = float(np.mean(np.log(c)))
    X = {"x": np.log(c) - ln_c_ref}
    y = np.log(loss)
    if fixed_e:
        coef = np.polyfit(-X["x"], y, 1)
        starts = np.array([[coef[1], max(coef[0], 0.0)]])
        lower, upper = np.array([-20.0, 0.0]), np.array([20.0, 5.0])
        fn, theta_names = _model_no_e, ("ln_A_ref", "a")
    else:
        rows = []
        for a in EXPONENTS:
            design = np.stack([np.ones_like(y), np.exp(-a * X["x"])], axis=1)
            (e_lin, a_lin), *_ = np.linalg.lstsq(design, loss, rcond=None)
            if a_lin <= 0:
                continue
            e_lin = max(e_lin, 1e-3 * loss.min())
            rows.append([np.log(e_lin), np.log(a_lin), a])
        rows.append([np.log(0.5 * loss.min()), np.log(0.5 * loss.min()), 0.1])
        starts = np.array(rows)
        lower, upper = np.array([-20.0, -20.0, 0.0]), np.array([5.0, 20.0, 5.0])
        fn, theta_names = _model_full, ("e", "ln_A_ref", "a")
    starts = np.clip(starts, lower, upper)
    m = dict(meta)
    m.update(form="E + A*C^(-a)", inputs={"C": "flops"}, flops_ref=float(np.exp(ln_c_ref)),
             n_levels=int(levels), reference="Dey et al. 2023 eq. 1; Porian et al. 2024")
    return common.Spec(
        law="compute", names=NAMES, theta_names=theta_names, lower=lower, upper=upper, fn=fn,
        to_values=lambda t: _to_values(t, ln_c_ref, fixed_e), X=X, y=y, starts=starts, delta=delta,
        scale=c, meta=m, fixed={"E": 0.0} if fixed_e else {}, bootstrap_kind="residual",
        value_of_theta={"e": "E", "ln_A_ref": "A", "a": "a"},
    )


class ComputeLaw:
    """Registry entry for ``compute``."""

    name = "compute"
    inputs = ("flops",)

    def fit(self, df, bootstrap: int = 0, seed: int = 0, level: float = 0.95, *, frontier: bool = True,
            delta: float | None = None, gap_decades: float = 0.15, heldout: bool = True) -> FitResult:
        """Fit to runs with flops and loss (one family); see the module docstring."""
        c, loss, meta = prepare(df, frontier, gap_decades)
        spec = make_spec(c, loss, meta, delta)
        warnings = []
        if spec.fixed:
            warnings.append(f"only {meta.get('n_levels', spec.meta['n_levels'])} FLOP levels: E is fixed at 0 "
                            "(pure power law), which extrapolates optimistically; add a 4th scale to fit E")
        held = None
        if heldout:
            def builder(mask):
                return make_spec(c[mask], loss[mask], meta, delta)
            held = common.heldout_error(builder, spec, gap_decades)
        return common.fit_spec(spec, bootstrap_n=bootstrap, seed=seed, level=level, heldout=held,
                               extra_warnings=warnings)

    def predict_values(self, values: np.ndarray, meta: dict, inputs: dict) -> np.ndarray:
        x = common.input_arrays("compute", inputs, self.inputs)
        if "flops" not in x:
            raise CpPlanError("the compute law predicts from flops=")
        v = np.atleast_2d(values)
        e, a_coef, a = v[:, 0:1], v[:, 1:2], v[:, 2:3]
        with np.errstate(all="ignore"):
            return e + a_coef * x["flops"] ** -a

    def parametric_samples(self, result: FitResult, n: int) -> np.ndarray:
        ln_c_ref = float(np.log(result.meta["flops_ref"]))
        fixed_e = "E" in (result.meta.get("fixed") or {})
        return common.parametric_samples(result, lambda t: _to_values(t, ln_c_ref, fixed_e), n)
