"""The ``shape`` law: loss over non-embedding parameters P, tokens D and width:depth r = N:L for
one parameterization, so the planner can price a shape it never trained at a larger scale.

    L = E + A·(P/P_ref)^(−a) + B·(D/D_ref)^(−b) + k·(ln r − μ0 − μ1·ln(P/P_ref))²

The first three terms are Hoffmann et al. 2022's eq. 2 (with P and D normalised by their
geometric means P_ref, D_ref for conditioning: A and B are losses at the reference scale). The
last is a shape penalty: loss is flat near an optimal N:L and rises quadratically in log N:L
away from it (Kaplan et al. 2020, §3.1 and Fig. 5 show the bowl; its centre moves with P,
hence the drift μ1). Three candidate forms:

- ``quad-fixed``: symmetric penalty, optimum independent of P (μ1 = 0);
- ``quad-drift``: symmetric penalty, optimum ln r* = μ0 + μ1·ln(P/P_ref);
- ``asym-drift``: drifting optimum, separate curvatures on the deep side (r < r*, ``k_deep``)
  and the wide side (``k_wide``): CompleteP's claim is that the deep side is flatter.

The form is chosen by held-out error, preferring the simpler form within 5%: with ≥ 3 sizes,
leave-largest-scale-out, scoring how well each form predicts the loss *profile over N:L* at the
held-out size (its mean offset removed: the offset comes from the P term all forms share, and
with one size fewer E may be fixed, which would swamp the difference between penalties);
with 2 sizes, leave-one-out. The choice and every candidate's error are in
``meta['selection']``; ``heldout_error`` is the full (offset included) leave-largest-scale-out
error of the chosen form.

Identifiability, detected from the data and recorded in ``meta`` with a warning:
- tokens-per-parameter constant (fixed TPP sweeps): B·D^(−b) = B·(tpp·P)^(−b) is another power
  of P, not separately identifiable from A·P^(−a), so the two are folded into one P term; the law
  then prices only that TPP;
- a single token count: B·D^(−b) is a constant, folded into E;
- fewer than 3 sizes: E is not identifiable beside A and a and is fixed at 0 (pure power law);
- one size: refused (nothing to extrapolate from).
Fitted by least squares on ln L (``delta`` for Huber); bootstrap resamples runs within each size.

With 2+ parameterizations the planner fits :mod:`planner.fit.shape_joint` instead (shared E and
exponent, multiplicative penalty); its results are evaluated here (``meta['terms']['mult']``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import CpPlanError
from planner.fit import common, solver
from planner.fit.result import FitResult

FORMS = ("quad-fixed", "quad-drift", "asym-drift")
EXPONENT_STARTS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.8)
TPP_CONSTANT = math.log(1.1)  # tokens/param within ±10% of each other counts as constant
TPP_PREDICT_TOL = math.log(1.25)  # a folded law predicts within 25% of the fitted TPP
BOUNDS = {"ln_E": (-20.0, 5.0), "ln_A": (-20.0, 5.0), "a": (0.0, 5.0), "ln_B": (-20.0, 5.0), "b": (0.0, 5.0),
          "ln_k": (-25.0, 5.0), "ln_k_deep": (-25.0, 5.0), "ln_k_wide": (-25.0, 5.0),
          "mu0": (-5.0, 15.0), "mu1": (-3.0, 3.0)}
VALUE_OF = {"ln_E": "E", "ln_A": "A", "a": "a", "ln_B": "B", "b": "b", "ln_k": "k", "ln_k_deep": "k_deep",
            "ln_k_wide": "k_wide", "mu0": "mu0", "mu1": "mu1"}


@dataclass(frozen=True)
class Form:
    """Which terms a candidate has."""

    name: str
    has_e: bool
    has_b: bool
    drift: bool
    asym: bool

    @property
    def theta_names(self) -> tuple[str, ...]:
        out = (["ln_E"] if self.has_e else []) + ["ln_A", "a"] + (["ln_B", "b"] if self.has_b else [])
        out += ["ln_k_deep", "ln_k_wide"] if self.asym else ["ln_k"]
        out += ["mu0"] + (["mu1"] if self.drift else [])
        return tuple(out)

    @property
    def names(self) -> tuple[str, ...]:
        """Reported names; E is always reported (0 when fixed)."""
        out = ["E", "A", "a"] + (["B", "b"] if self.has_b else [])
        out += ["k_deep", "k_wide"] if self.asym else ["k"]
        return tuple(out + ["mu0"] + (["mu1"] if self.drift else []))

    def terms(self) -> dict:
        return {"has_E": self.has_e, "has_B": self.has_b, "drift": self.drift, "asym": self.asym}


def make_form(name: str, has_e: bool, has_b: bool) -> Form:
    if name not in FORMS:
        raise CpPlanError(f"unknown shape form {name!r}; choose one of {', '.join(FORMS)}")
    return Form(name, has_e, has_b, drift=name != "quad-fixed", asym=name == "asym-drift")


def _terms(theta: np.ndarray, X: dict, form: Form, jac: bool):
    x, z, rho = X["x"], X["z"], X["rho"]
    cols = {n: theta[:, i:i + 1] for i, n in enumerate(form.theta_names)}
    parts = {}
    total = 0.0
    if form.has_e:
        e = np.exp(cols["ln_E"]) * np.ones_like(x)
        total = total + e
        parts["ln_E"] = e
    ta = np.exp(cols["ln_A"] - cols["a"] * x)
    total = total + ta
    parts["ln_A"], parts["a"] = ta, -x * ta
    if form.has_b:
        tb = np.exp(cols["ln_B"] - cols["b"] * z)
        total = total + tb
        parts["ln_B"], parts["b"] = tb, -z * tb
    delta = rho - cols["mu0"] - (cols["mu1"] * x if form.drift else 0.0)
    if form.asym:
        deep = delta < 0
        k = np.where(deep, np.exp(cols["ln_k_deep"]), np.exp(cols["ln_k_wide"]))
        pen = k * delta * delta
        parts["ln_k_deep"] = np.where(deep, pen, 0.0)
        parts["ln_k_wide"] = np.where(deep, 0.0, pen)
    else:
        k = np.exp(cols["ln_k"]) * np.ones_like(delta)
        pen = k * delta * delta
        parts["ln_k"] = pen
    total = total + pen
    parts["mu0"] = -2.0 * k * delta
    if form.drift:
        parts["mu1"] = -2.0 * k * delta * x
    if not jac:
        return total, None
    return total, np.stack([parts[n] for n in form.theta_names], axis=-1)


def model_fn(form: Form):
    def fn(theta, X):
        total, d = _terms(theta, X, form, jac=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(total), d / total[..., None]
    return fn


def to_values_fn(form: Form):
    idx = {n: i for i, n in enumerate(form.theta_names)}

    def to_values(theta: np.ndarray) -> np.ndarray:
        out = []
        for name in form.names:
            t = "ln_" + name if "ln_" + name in idx else name
            if name == "E" and not form.has_e:
                out.append(np.zeros(theta.shape[0]))
            elif t.startswith("ln_"):
                out.append(np.exp(theta[:, idx[t]]))
            else:
                out.append(theta[:, idx[t]])
        return np.stack(out, axis=1)
    return to_values


# ---------------------------------------------------------------------- data


@dataclass(frozen=True)
class ShapeData:
    p: np.ndarray
    d: np.ndarray
    ratio: np.ndarray
    loss: np.ndarray
    levels: np.ndarray  # size level of each run
    meta: dict

    @property
    def n(self) -> int:
        return int(self.loss.size)

    def subset(self, mask: np.ndarray) -> "ShapeData":
        kept = np.unique(self.levels[mask], return_inverse=True)[1]  # renumber 0..k-1, order kept
        return ShapeData(self.p[mask], self.d[mask], self.ratio[mask], self.loss[mask], kept, self.meta)


def size_levels(df, p: np.ndarray, gap_decades: float) -> tuple[np.ndarray, str]:
    """Size level of each run (0 = smallest). A fixed-P sweep realizes P only approximately
    (widths and depths are rounded, so a very wide shape at a tiny P can miss it by tens of
    percent, and neighbouring sizes' runs can interleave); its runs share a ``sweep_id``, so
    when every run has one, sweeps are the units: sweeps whose median P lie within
    ``gap_decades`` of each other are one size. Otherwise P is clustered by gaps."""
    if "sweep_id" in df.columns and df["sweep_id"].notna().all() and len(df):
        ids = df["sweep_id"].astype(str).to_numpy()
        uniq, inv = np.unique(ids, return_inverse=True)
        med = np.array([np.exp(np.median(np.log(p[inv == k]))) for k in range(uniq.size)])
        return common.scale_levels(med, gap_decades)[inv], "sweep_id (runs of one sweep share a size)"
    return common.scale_levels(p, gap_decades), f"n_params clustered ({gap_decades:g}-decade gaps)"


def prepare(df, gap_decades: float = 0.15) -> ShapeData:
    hint = "a shape law needs width and depth (n_embd, n_layer) or a ratio column per run"
    common.require_columns(df, ["n_params", "n_tokens", "loss"], "shape", hint)
    p = common.positive_array(df, "n_params", "shape")
    d = common.positive_array(df, "n_tokens", "shape")
    loss = common.positive_array(df, "loss", "shape")
    if {"n_embd", "n_layer"} <= set(df.columns) and df[["n_embd", "n_layer"]].notna().all().all():
        ratio = common.positive_array(df, "n_embd", "shape") / common.positive_array(df, "n_layer", "shape")
    elif "ratio" in df.columns:
        ratio = common.positive_array(df, "ratio", "shape")
    else:
        common.require_columns(df, ["n_embd", "n_layer"], "shape", hint)
        raise CpPlanError("some runs lack n_embd or n_layer; " + hint)
    levels, how = size_levels(df, p, gap_decades)
    meta: dict = {"size_levels_from": how}
    if "flop_convention" in df.columns:
        conv = sorted({str(v) for v in df["flop_convention"].dropna()})
        if conv:
            meta["flop_convention"] = conv
    return ShapeData(p, d, ratio, loss, levels, meta)


@dataclass(frozen=True)
class Design:
    """What the data identify: the terms every candidate form gets."""

    has_e: bool
    has_b: bool
    folded: str | None  # None | "tpp" | "tokens"
    notes: tuple[str, ...]
    meta: dict


def design_for(data: ShapeData) -> Design:
    n_levels = int(data.levels.max()) + 1
    if n_levels < 2:
        raise CpPlanError(
            f"the shape law needs runs at 2 or more sizes (n_params) to extrapolate; all runs fall in one size "
            f"(n_params {data.p.min():.3g} to {data.p.max():.3g}); run `cp-plan sweep shape` at another --params "
            "(each sweep's runs share a sweep_id, which keeps sizes apart)")
    distinct_ratios = np.unique(np.round(np.log(data.ratio), 2)).size
    if distinct_ratios < 3:
        raise common.too_few("shape", distinct_ratios, 3, "distinct N:L ratios",
                             "run the shape sweep with more --ratios (e.g. 8,16,32,64)")
    ln_tpp = np.log(data.d / data.p)
    ln_d = np.log(data.d)
    notes, meta = [], {}
    if np.ptp(ln_d) <= 2 * TPP_CONSTANT:
        folded, has_b = "tokens", False
        meta["n_tokens_fixed"] = float(np.exp(np.mean(ln_d)))
        notes.append(f"every run saw ≈{meta['n_tokens_fixed']:.3g} tokens: B·D^(-b) is a constant, folded into E; "
                     "the law prices only that token count")
    elif np.ptp(ln_tpp) <= 2 * TPP_CONSTANT:
        folded, has_b = "tpp", False
        meta["tokens_per_param"] = float(np.exp(np.mean(ln_tpp)))
        notes.append(f"tokens per parameter is constant (≈{meta['tokens_per_param']:.3g}) in the runs: "
                     "A·P^(-a) and B·D^(-b) are not separately identifiable and are folded into one term "
                     "A·(P/P_ref)^(-a); the law prices only that tokens-per-parameter ratio")
    else:
        folded, has_b = None, True
    n_d_levels = int(common.scale_levels(data.d).max()) + 1
    has_e = n_levels >= 3 and (not has_b or n_d_levels >= 3)
    if not has_e:
        notes.append(f"only {n_levels} sizes{'' if not has_b else f' and {n_d_levels} token counts'}: the "
                     "irreducible loss E is not identifiable and is fixed at 0 (a pure power law, which "
                     "extrapolates optimistically); add a third size to fit it")
    meta.update(n_sizes=n_levels, folded=folded)
    return Design(has_e, has_b, folded, tuple(notes), meta)


def _vertex_guess(data: ShapeData, x: np.ndarray, rho: np.ndarray) -> tuple[float, float, float]:
    """(μ0, μ1, k) from a parabola in ln r at each size."""
    verts, xs, curv = [], [], []
    for lev in np.unique(data.levels):
        m = data.levels == lev
        if np.unique(np.round(rho[m], 3)).size < 3:
            continue
        c2, c1, _ = np.polyfit(rho[m], data.loss[m], 2)
        if c2 <= 0:
            continue
        v = -c1 / (2 * c2)
        verts.append(float(np.clip(v, rho[m].min() - 1.0, rho[m].max() + 1.0)))
        xs.append(float(np.mean(x[m])))
        curv.append(float(c2))
    if not verts:
        i = int(np.argmin(data.loss))
        return float(rho[i]), 0.0, 0.01 * float(np.mean(data.loss))
    if len(verts) >= 2 and np.ptp(xs) > 0:
        mu1, mu0 = np.polyfit(xs, verts, 1)
    else:
        mu0, mu1 = float(np.mean(verts)), 0.0
    return float(mu0), float(np.clip(mu1, -2.9, 2.9)), float(np.median(curv))


def build_spec(data: ShapeData, form_name: str, design: Design, delta: float | None = None) -> common.Spec:
    form = make_form(form_name, design.has_e, design.has_b)
    p_ref = float(np.exp(np.mean(np.log(data.p))))
    d_ref = float(np.exp(np.mean(np.log(data.d))))
    X = {"x": np.log(data.p / p_ref), "z": np.log(data.d / d_ref), "rho": np.log(data.ratio)}
    y = np.log(data.loss)
    if data.n < len(form.theta_names) + 2:
        raise common.too_few("shape", data.n, len(form.theta_names) + 2,
                             f"runs for the {form_name} form ({len(form.theta_names)} parameters + 2)",
                             "add shapes or sizes")
    mu0, mu1, k0 = _vertex_guess(data, X["x"], X["rho"])
    if not form.drift:
        mu1 = 0.0
    rows = []
    b_grid = EXPONENT_STARTS[1::2] if form.has_b else (None,)
    for mu_shift in (0.0, -0.5, 0.5):
        m0 = mu0 + mu_shift
        dl = X["rho"] - m0 - mu1 * X["x"]
        for a in EXPONENT_STARTS:
            for b in b_grid:
                cols = ([np.ones_like(y)] if form.has_e else []) + [np.exp(-a * X["x"])]
                cols += [np.exp(-b * X["z"])] if form.has_b else []
                cols += [dl * dl]
                coef, *_ = np.linalg.lstsq(np.stack(cols, axis=1), data.loss, rcond=None)
                i = 0
                row = []
                if form.has_e:
                    row.append(math.log(max(coef[0], 1e-3 * data.loss.min())))
                    i = 1
                row += [math.log(max(coef[i], 1e-3 * data.loss.min())), a]
                i += 1
                if form.has_b:
                    row += [math.log(max(coef[i], 1e-3 * data.loss.min())), b]
                    i += 1
                k = max(coef[i], 1e-4 * float(np.mean(data.loss)), k0 * 1e-2)
                row += [math.log(k)] * (2 if form.asym else 1)
                row += [m0] + ([mu1] if form.drift else [])
                rows.append(row)
    lower = np.array([BOUNDS[n][0] for n in form.theta_names])
    upper = np.array([BOUNDS[n][1] for n in form.theta_names])
    starts = np.clip(np.array(rows), lower, upper)
    meta = dict(data.meta)
    meta.update(design.meta)
    meta.update(form=form_name, terms=form.terms(), value_names=list(form.names), n_params_ref=p_ref,
                n_tokens_ref=d_ref, inputs={"P": "n_params", "D": "n_tokens", "r": "n_embd / n_layer"},
                equation=_equation(form), notes=list(design.notes),
                reference="Hoffmann et al. 2022 eq. 2 (P, D terms); Kaplan et al. 2020 §3.1 (shape bowl)")

    def checks(theta, values):
        out = []
        k_max = max(values.get("k", 0.0), values.get("k_deep", 0.0), values.get("k_wide", 0.0))
        dl = X["rho"] - values["mu0"] - values.get("mu1", 0.0) * X["x"]
        if k_max * float(np.max(dl * dl)) < 1e-3 * float(np.min(data.loss)):
            out.append("loss barely depends on N:L over the sampled ratios (penalty < 0.1% of the loss): the "
                       "optimum N:L is not identified; widen --ratios")
        for lev in np.unique(data.levels):
            m = data.levels == lev
            r_star = math.exp(values["mu0"] + values.get("mu1", 0.0) * float(np.mean(X["x"][m])))
            note = unbracketed_optimum(r_star, data.ratio[m], data.p[m])
            if note:
                out.append(note)
        return out

    return common.Spec(
        law="shape", names=form.names, theta_names=form.theta_names, lower=lower, upper=upper,
        fn=model_fn(form), to_values=to_values_fn(form), X=X, y=y, starts=starts, delta=delta,
        scale=data.p, meta=meta, fixed={} if form.has_e else {"E": 0.0}, strata=data.levels,
        bootstrap_kind="stratified", checks=checks, value_of_theta=VALUE_OF,
    )


def _equation(form: Form) -> str:
    eq = ("E + " if form.has_e else "") + "A*(P/P_ref)^(-a)" + (" + B*(D/D_ref)^(-b)" if form.has_b else "")
    center = "mu0 + mu1*ln(P/P_ref)" if form.drift else "mu0"
    k = "(k_deep if ln r < center else k_wide)" if form.asym else "k"
    return f"L = {eq} + {k}*(ln r - ({center}))^2"


# ---------------------------------------------------------------------- selection


def loo_error(spec: common.Spec, theta: np.ndarray) -> float:
    """Leave-one-out RMS log-error: n refits at once (weight 0 on one point each), warm-started."""
    n = spec.n
    w = 1.0 - np.eye(n)
    res = solver.irls_lm(spec.model(), np.repeat(theta[None, :], n, axis=0), spec.y, w, spec.delta,
                         spec.lower, spec.upper, rtol=1e-9)
    pred = common.predict_log(spec, res.theta)  # (n, n): row i = refit without point i
    err = spec.y - np.diag(pred)
    return float(np.sqrt(np.mean(err * err)))


def heldout_for(data: ShapeData, form_name: str, spec: common.Spec, delta, gap_decades: float):
    """Leave-largest-scale-out for one form: (RMS log-error, info). ``info['profile_error']`` is
    the same error after removing its mean at each held-out size: how well the form predicts
    the *shape* of the loss over N:L at the new size, which is what the forms differ in (the
    level error is shared by all forms through the common P term)."""
    mask, why = common.heldout_split(data.p, gap_decades, levels=data.levels)
    info = {"method": "leave-largest-scale-out", "note": why}
    if mask is None:
        return float("nan"), info
    train = data.subset(~mask)
    try:
        sub = build_spec(train, form_name, design_for(train), delta)
        sol = common.solve(sub, polish=False)
    except CpPlanError as exc:
        info["note"] = f"refit without the largest size failed: {exc}"
        return float("nan"), info
    pred = common.predict_log(sub, sol.theta, {
        "x": np.log(data.p[mask] / sub.meta["n_params_ref"]), "z": np.log(data.d[mask] / sub.meta["n_tokens_ref"]),
        "rho": np.log(data.ratio[mask])})[0]
    err = spec.y[mask] - pred
    held_levels = data.levels[mask]
    centred = err - np.array([err[held_levels == lev].mean() for lev in held_levels])
    info.update(n_heldout=int(mask.sum()), n_train=int((~mask).sum()), bias=float(np.mean(err)),
                profile_error=float(np.sqrt(np.mean(centred * centred))),
                n_params_min_heldout=float(data.p[mask].min()), train_fixed=dict(sub.fixed))
    return float(np.sqrt(np.mean(err * err))), info


class ShapeLaw:
    """Registry entry for ``shape``."""

    name = "shape"
    inputs = ("n_params", "n_tokens", "ratio", "n_embd", "n_layer")

    def fit(self, df, bootstrap: int = 0, seed: int = 0, level: float = 0.95, *, form: str | None = None,
            delta: float | None = None, gap_decades: float = 0.15) -> FitResult:
        """Fit to one parameterization's runs (n_params, n_tokens, n_embd, n_layer, loss). ``form``
        forces one of FORMS instead of choosing by held-out error."""
        data = prepare(df, gap_decades)
        design = design_for(data)
        names = FORMS if form is None else (form,)
        if form is not None:
            make_form(form, True, True)  # validates the name
        candidates, errors, failures = {}, {}, {}
        levels_ok = common.heldout_split(data.p, gap_decades, levels=data.levels)[0] is not None
        for name in names:
            try:
                spec = build_spec(data, name, design, delta)
                sol = common.solve(spec)
            except CpPlanError as exc:
                failures[name] = str(exc)
                continue
            held = heldout_for(data, name, spec, delta, gap_decades)
            sel_err = held[1].get("profile_error", float("nan")) if levels_ok else loo_error(spec, sol.theta)
            candidates[name] = (spec, sol, held)
            errors[name] = sel_err
        if not candidates:
            raise CpPlanError("no shape-law form could be fitted: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
        finite = {k: v for k, v in errors.items() if np.isfinite(v)}
        if finite:
            best = min(finite.values())
            # the simplest form within 5% of the best held-out error wins (FORMS is simplest first)
            chosen = next(k for k in FORMS if k in finite and finite[k] <= 1.05 * best + 1e-12)
        else:
            chosen = next(k for k in FORMS if k in candidates)
        spec, sol, held = candidates[chosen]
        spec.meta["selection"] = {
            "by": ("leave-largest-scale-out, error of the N:L profile (mean offset at the held-out size removed)"
                   if levels_ok else "leave-one-out (fewer than 3 sizes)"),
            "errors": {k: float(v) for k, v in errors.items()}, "chosen": chosen,
            "rule": "lowest error; the simplest form within 5% of it", "failed": failures,
            "aic": {k: common.information_criteria(c[0].y - common.predict_log(c[0], c[1].theta)[0], c[0].p)[0]
                    for k, c in candidates.items()},
        }
        warnings = list(design.notes)
        if not levels_ok:
            warnings.append(f"held-out error not computed ({held[1]['note']}); the law's extrapolation in P is "
                            "untested: add a third size")
        return common.fit_spec(spec, bootstrap_n=bootstrap, seed=seed, level=level, heldout=held,
                               solved=sol, extra_warnings=warnings)

    def predict_values(self, values: np.ndarray, meta: dict, inputs: dict) -> np.ndarray:
        x = common.input_arrays("shape", inputs, self.inputs)
        if "ratio" in x:
            ratio = x["ratio"]
        elif "n_embd" in x and "n_layer" in x:
            ratio = x["n_embd"] / x["n_layer"]
        else:
            raise CpPlanError("the shape law predicts from n_params, n_tokens and ratio (or n_embd and n_layer)")
        if "n_params" not in x:
            raise CpPlanError("the shape law needs n_params to predict")
        p = x["n_params"]
        terms = meta.get("terms") or {}
        folded = meta.get("folded")
        d = x.get("n_tokens")
        if folded == "tpp" and d is not None:
            tpp = float(meta["tokens_per_param"])
            off = np.abs(np.log(d / p / tpp))
            if np.any(off > TPP_PREDICT_TOL):
                bad = float((d / p)[np.argmax(off)])
                raise CpPlanError(
                    f"this shape law was fitted on runs at ≈{tpp:.3g} tokens per parameter and cannot price "
                    f"{bad:.3g}; plan at {tpp:.3g} tokens/param (--tpp), or train runs at other token counts")
        if folded == "tokens" and d is not None:
            fixed = float(meta["n_tokens_fixed"])
            off = np.abs(np.log(d / fixed))
            if np.any(off > TPP_PREDICT_TOL):
                raise CpPlanError(f"this shape law was fitted on runs that all saw ≈{fixed:.3g} tokens; it cannot "
                                  f"price {float(d[np.argmax(off)]):.3g}; train runs at other token counts")
        if terms.get("has_B") and d is None:
            raise CpPlanError("this shape law has a token term; pass n_tokens")
        names = list(meta["value_names"])
        v = np.atleast_2d(values)
        col = {n: v[:, i:i + 1] for i, n in enumerate(names)}
        xx = np.log(p / float(meta["n_params_ref"]))
        with np.errstate(all="ignore"):
            amp = col["A"] * np.exp(-col["a"] * xx)
            total = col["E"] + amp
            if terms.get("has_B"):
                total = total + col["B"] * np.exp(-col["b"] * np.log(d / float(meta["n_tokens_ref"])))
            dl = np.log(ratio) - col["mu0"] - (col["mu1"] * xx if "mu1" in col else 0.0)
            k = np.where(dl < 0, col["k_deep"], col["k_wide"]) if "k_deep" in col else col["k"]
            if terms.get("mult"):  # joint law (planner.fit.shape_joint): the penalty scales A·P^(−a)
                return total + amp * k * dl * dl
            return total + k * dl * dl

    def parametric_samples(self, result: FitResult, n: int) -> np.ndarray:
        if isinstance(result.meta.get("joint"), dict):
            return joint_parametric_samples(result, n)
        terms = result.meta.get("terms") or {}
        form = Form(result.meta.get("form", "quad-drift"), bool(terms.get("has_E")), bool(terms.get("has_B")),
                    bool(terms.get("drift")), bool(terms.get("asym")))
        return common.parametric_samples(result, to_values_fn(form), n)


# ---------------------------------------------------------------------- joint-law value names
# The names and value mapping of planner.fit.shape_joint's results live here, so that this module
# evaluates and samples them without importing shape_joint (which builds on this one).

SHARED = ("E", "a")


def pen_names(form: str) -> tuple[str, ...]:
    out = ("k_deep", "k_wide") if form == "asym-drift" else ("k",)
    return out + ("mu0",) + (("mu1",) if form != "quad-fixed" else ())


def group_value_names(form: str) -> tuple[str, ...]:
    """Reported names of one parameterization's law (the order of ``Form.names``)."""
    return ("E", "A", "a") + pen_names(form)


def joint_theta_names(groups, form: str, has_e: bool) -> tuple[str, ...]:
    out = (["ln_E"] if has_e else []) + ["a"]
    for g in groups:
        out.append(f"ln_A[{g}]")
        for n in pen_names(form):
            out.append(f"ln_{n}[{g}]" if n.startswith("k") else f"{n}[{g}]")
    return tuple(out)


def joint_value_names(groups, form: str) -> tuple[str, ...]:
    out = ["E", "a"]
    for g in groups:
        out += [f"A[{g}]"] + [f"{n}[{g}]" for n in pen_names(form)]
    return tuple(out)


def joint_to_values_fn(groups, form: str, has_e: bool):
    """θ (S, p) -> joint reported values (S, q): exp of the ln_ parameters, E = 0 when fixed."""
    tn = joint_theta_names(groups, form, has_e)
    idx = {n: i for i, n in enumerate(tn)}

    def to_values(theta: np.ndarray) -> np.ndarray:
        theta = np.atleast_2d(theta)
        cols = []
        for name in joint_value_names(groups, form):
            if name == "E" and not has_e:
                cols.append(np.zeros(theta.shape[0]))
            elif "ln_" + name in idx:
                cols.append(np.exp(theta[:, idx["ln_" + name]]))
            else:
                cols.append(theta[:, idx[name]])
        return np.stack(cols, axis=1)
    return to_values


def group_columns(groups, form: str, g: str) -> list[int]:
    """Positions in the joint value vector of group ``g``'s law, in ``group_value_names`` order."""
    jn = joint_value_names(groups, form)
    pos = {n: i for i, n in enumerate(jn)}
    return [pos[n] if n in SHARED else pos[f"{n}[{g}]"] for n in group_value_names(form)]


def joint_parametric_samples(result: FitResult, n: int) -> np.ndarray:
    """Asymptotic draws of the JOINT θ mapped to this parameterization's values: same seed, same
    draws for every parameterization of one joint fit (paired, like the bootstrap)."""
    j = result.meta["joint"]
    groups, form = tuple(j["parameterizations"]), j["form"]
    full = common.parametric_samples(result, joint_to_values_fn(groups, form, bool(j["has_E"])), n)
    if full.shape[1] != len(j["names"]):  # no θ recorded: the point values repeated
        return full
    return full[:, list(j["columns"])]


def unbracketed_optimum(r_star: float, ratios, params) -> str | None:
    """The warning for a fitted optimum N:L ``r_star`` outside the N:L range the runs of one size
    sampled (``ratios``, ``params``: theirs), naming the sweep that would bracket it; None inside."""
    lo, hi = float(np.min(ratios)), float(np.max(ratios))
    if lo <= r_star <= hi:
        return None
    p = float(np.median(params))
    return (f"the fitted optimum N:L {r_star:.3g} at P≈{p:.3g} lies outside the sampled ratios [{lo:.3g}, {hi:.3g}]: "
            f"the runs do not bracket the optimum; add shapes {'deeper' if r_star < lo else 'wider'} than N:L "
            f"{lo if r_star < lo else hi:.3g} at that size (e.g. cp-plan sweep shape --params {p:.3g} --ratios "
            f"{max(r_star, 1.0):.2g})")
