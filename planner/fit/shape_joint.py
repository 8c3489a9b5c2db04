"""A JOINT shape law across parameterizations: shared scale terms, per-parameterization
amplitude and a multiplicative shape penalty.

    L_p(P, r) = E + A_p·(P/P_ref)^(−a)·(1 + pen_p(r, P)),
    pen_p = k_p·(ln r − μ0_p − μ1_p·ln(P/P_ref))²      (k_deep_p / k_wide_p on either side of the
                                                        optimum for the asymmetric form)

E and a are SHARED: the parameterizations are parallel power laws in P that differ by a
constant factor A_p (Dey et al. 2025, Fig. 1 and §5: CompleteP's advantage is a roughly constant
compute multiplier), and the shape penalty scales the reducible loss rather than adding to it
(so it shrinks with scale as the reducible loss does). Under this form the compute one
parameterization needs to match another at a fixed N:L is, with E small, a constant factor
((A_o(1+pen_o))/(A_r(1+pen_r)))^(1/a) in P, so savings extrapolate sanely; separately fitted
exponents diverge (a 10⁴× extrapolation turns an exponent difference of 0.03 into a factor 1.3
in loss) and an additive penalty never shrinks.

Forms as in :mod:`planner.fit.shape` (``quad-fixed``, ``quad-drift``, ``asym-drift``), reported
as ``joint-mult-<form>`` and chosen by held-out error with the same rule (simplest within 5% of
the best N:L-profile error). Held out: each parameterization's LARGEST size at once
(leave-largest-size-out); the refit keeps the others (a parameterization left with one size
gets μ1 fixed at 0 there), E is fixed at 0 in the refit when fewer than 3 sizes remain.
Tokens: only fixed tokens/param (or fixed tokens) runs: the D term is folded into the P term as
in the per-parameterization law; runs with varying tokens/param are refused (fit separately).
Bootstrap: runs are resampled within each (parameterization, size) and the law is refitted
jointly, so bootstrap refit b of every parameterization's result is the SAME refit (paired
intervals for savings, :mod:`planner.savings`).

:func:`fit_shape_joint` returns ordinary per-parameterization
:class:`~planner.fit.result.FitResult` objects (law ``shape``) whose ``meta['joint']`` records
the joint fit; ``ShapeLaw.predict_values`` evaluates them.
"""

from __future__ import annotations

import math

import numpy as np

from planner.errors import CpPlanError
from planner.fit import common
from planner.fit.result import FitResult
from planner.fit.shape import (BOUNDS, EXPONENT_STARTS, FORMS, SHARED, ShapeData, _vertex_guess, design_for,
                               group_columns, group_value_names, joint_theta_names, joint_to_values_fn,
                               joint_value_names, prepare, unbracketed_optimum)

MU_MARGIN = 2.0  # ln units (a factor e² ≈ 7.4 in N:L) the optimum may lie beyond the sampled N:L


def _model_fn(groups, form: str, has_e: bool):
    """ln L and its Jacobian in θ, batched over the leading axis of θ."""
    tn = joint_theta_names(groups, form, has_e)
    idx = {n: i for i, n in enumerate(tn)}
    ng = len(groups)
    i_a = np.array([idx[f"ln_A[{g}]"] for g in groups])
    asym, drift = form == "asym-drift", form != "quad-fixed"
    if asym:
        i_kd = np.array([idx[f"ln_k_deep[{g}]"] for g in groups])
        i_kw = np.array([idx[f"ln_k_wide[{g}]"] for g in groups])
    else:
        i_k = np.array([idx[f"ln_k[{g}]"] for g in groups])
    i_m0 = np.array([idx[f"mu0[{g}]"] for g in groups])
    i_m1 = np.array([idx[f"mu1[{g}]"] for g in groups]) if drift else None
    assert ng == i_a.size

    def fn(theta, X):
        theta = np.atleast_2d(theta)
        x, rho, gi = X["x"], X["rho"], X["gi"]
        s, n = theta.shape[0], x.size
        rows = np.arange(n)
        jac = np.zeros((s, n, theta.shape[1]))
        a = theta[:, idx["a"]][:, None]
        base = np.exp(theta[:, i_a[gi]] - a * x)  # A_p·(P/P_ref)^(−a), (S, n)
        delta = rho - theta[:, i_m0[gi]] - (theta[:, i_m1[gi]] * x if drift else 0.0)
        if asym:
            deep = delta < 0
            k = np.where(deep, np.exp(theta[:, i_kd[gi]]), np.exp(theta[:, i_kw[gi]]))
        else:
            k = np.exp(theta[:, i_k[gi]])
        pen = k * delta * delta
        red = base * (1.0 + pen)
        total = red
        if has_e:
            e = np.exp(theta[:, idx["ln_E"]])[:, None] * np.ones_like(x)
            total = total + e
            jac[:, :, idx["ln_E"]] = e
        jac[:, :, idx["a"]] = -x * red
        jac[:, rows, i_a[gi]] = red
        if asym:
            jac[:, rows, i_kd[gi]] = np.where(deep, base * pen, 0.0)
            jac[:, rows, i_kw[gi]] = np.where(deep, 0.0, base * pen)
        else:
            jac[:, rows, i_k[gi]] = base * pen
        dmu = -2.0 * base * k * delta
        jac[:, rows, i_m0[gi]] = dmu
        if drift:
            jac[:, rows, i_m1[gi]] = dmu * x
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(total), jac / total[..., None]
    return fn


# ---------------------------------------------------------------------- data


class JointData:
    """Runs of several parameterizations on one global size scale."""

    def __init__(self, data: ShapeData, gi: np.ndarray, groups: tuple[str, ...]):
        self.data, self.gi, self.groups = data, np.asarray(gi, int), tuple(groups)

    def subset(self, mask: np.ndarray) -> "JointData":
        return JointData(self.data.subset(mask), self.gi[mask], self.groups)

    def group_levels(self, g: int) -> np.ndarray:
        return np.unique(self.data.levels[self.gi == g])


def _eligible(df, keys: np.ndarray, gap_decades: float, skipped: dict) -> list[str]:
    """Groups with ≥ 2 sizes and ≥ 3 distinct N:L of their own; the others are skipped (why)."""
    ok = []
    for g in sorted(set(keys.tolist())):
        sub = df[keys == g].reset_index(drop=True)
        try:
            design_for(prepare(sub, gap_decades))
        except CpPlanError as exc:
            skipped[g] = str(exc)
            continue
        ok.append(g)
    return ok


def build_spec(jd: JointData, form: str, has_e: bool, delta, p_ref: float,
               fix_mu1: tuple[int, ...] = (), frozen: dict | None = None) -> common.Spec:
    """The joint spec. ``frozen`` (θ name -> value) holds parameters fixed: their box is a point
    and their Jacobian columns are zero, so the LM step is the exact reduced step (a box-clipped
    step is not, and crawls along a bound)."""
    data, gi, groups = jd.data, jd.gi, jd.groups
    tn = joint_theta_names(groups, form, has_e)
    X = {"x": np.log(data.p / p_ref), "rho": np.log(data.ratio), "gi": gi}
    y = np.log(data.loss)
    lower = np.array([BOUNDS[n.split("[")[0]][0] for n in tn])
    upper = np.array([BOUNDS[n.split("[")[0]][1] for n in tn])
    drift = form != "quad-fixed"
    for g, name in enumerate(groups):
        # the optimum's centre is kept within MU_MARGIN (ln units) of the N:L this group sampled:
        # beyond that the bowl is unidentified (μ0 → ∞ with k → 0 mimics a linear term in ln r)
        # and the solver crawls along that valley; the bracket warning still says so
        rho_g = X["rho"][gi == g]
        i = tn.index(f"mu0[{name}]")
        lower[i] = max(lower[i], float(rho_g.min()) - MU_MARGIN)
        upper[i] = min(upper[i], float(rho_g.max()) + MU_MARGIN)
    frozen = dict(frozen or {})
    if drift:
        frozen.update({f"mu1[{groups[g]}]": 0.0 for g in fix_mu1})
    fz = np.array([n in frozen for n in tn])
    for n, v in frozen.items():
        lower[tn.index(n)] = upper[tn.index(n)] = float(v)
    n_free = int(np.sum(~fz))
    if data.n < n_free + 2:
        raise common.too_few("shape", data.n, n_free + 2,
                             f"runs for the joint {form} form ({n_free} free parameters + 2)", "add shapes or sizes")
    guesses = []
    for g in range(len(groups)):
        m = gi == g
        sub = data.subset(m)
        mu0, mu1, k_add = _vertex_guess(sub, X["x"][m], X["rho"][m])
        if not drift or g in fix_mu1:
            mu1 = 0.0
        guesses.append((mu0, mu1, max(k_add / float(np.mean(sub.loss)), 1e-4)))
    rows = []
    e_fracs = (0.1, 0.6) if has_e else (0.0,)
    for mu_shift in (0.0, -0.5, 0.5):
        for a in EXPONENT_STARTS:
            for ef in e_fracs:
                e = ef * float(data.loss.min())
                row = ([math.log(e)] if has_e else []) + [a]
                for g, (mu0, mu1, k) in enumerate(guesses):
                    m = gi == g
                    dl = X["rho"][m] - (mu0 + mu_shift) - mu1 * X["x"][m]
                    base = np.exp(-a * X["x"][m]) * (1.0 + k * dl * dl)
                    amp = max(float(np.mean((data.loss[m] - e) / base)), 1e-3 * float(data.loss.min()))
                    row.append(math.log(amp))
                    row += [math.log(k)] * (2 if form == "asym-drift" else 1)
                    row += [mu0 + mu_shift] + ([mu1] if drift else [])
                rows.append(row)
    starts = np.clip(np.array(rows), lower, upper)
    model = _model_fn(groups, form, has_e)

    def fn(theta, X):
        pred, jac = model(theta, X)
        if fz.any():
            jac[..., fz] = 0.0
        return pred, jac

    vn = joint_value_names(groups, form)
    meta = dict(data.meta)

    def checks(theta, values):
        out = []
        for g, name in enumerate(groups):
            m = gi == g
            mu0, mu1 = values[f"mu0[{name}]"], values.get(f"mu1[{name}]", 0.0)
            for lev in np.unique(data.levels[m]):
                mm = m & (data.levels == lev)
                r_star = math.exp(mu0 + mu1 * float(np.mean(X["x"][mm])))
                note = unbracketed_optimum(r_star, data.ratio[mm], data.p[mm])
                if note:
                    out.append(f"[{name}] {note}")
        return out

    return common.Spec(
        law="shape", names=vn, theta_names=tn, lower=lower, upper=upper, fn=fn,
        to_values=joint_to_values_fn(groups, form, has_e), X=X, y=y, starts=starts, delta=delta,
        scale=data.p, meta=meta, fixed={} if has_e else {"E": 0.0}, strata=gi * 10_000 + data.levels,
        bootstrap_kind="stratified", checks=checks,
        value_of_theta={n: n.replace("ln_", "") for n in tn},
    )


def solve_active(jd: JointData, form: str, has_e: bool, delta, p_ref: float, fix_mu1=(), rounds: int = 3):
    """Multi-start solve, then parameters that end on a bound are frozen there and the rest
    re-solved (an active-set step): a projected LM step crawls along an active bound and stops
    at max_iter, which would drop most bootstrap refits as unconverged. The frozen parameters
    stay flagged by the bound warning; the bootstrap refits the others."""
    spec = build_spec(jd, form, has_e, delta, p_ref, fix_mu1)
    sol = common.solve(spec)
    frozen: dict = {}
    for _ in range(rounds):
        span = spec.upper - spec.lower
        at = (span > 0) & ((np.abs(sol.theta - spec.lower) <= 1e-6 * np.maximum(1.0, span))
                           | (np.abs(sol.theta - spec.upper) <= 1e-6 * np.maximum(1.0, span)))
        if not at.any():
            break
        frozen.update({spec.theta_names[i]: float(sol.theta[i]) for i in np.nonzero(at)[0]})
        old_bounds = (spec.lower, spec.upper)
        spec = build_spec(jd, form, has_e, delta, p_ref, fix_mu1, frozen=frozen)
        sol = common.solve(spec, starts=np.clip(sol.theta[None, :], spec.lower, spec.upper))
        spec.meta["frozen_at_bound"] = {n: {"value": v, "bounds": [float(old_bounds[0][spec.theta_names.index(n)]),
                                                                   float(old_bounds[1][spec.theta_names.index(n)])]}
                                        for n, v in frozen.items()}
    return spec, sol


def _heldout(jd: JointData, form: str, delta, p_ref: float, spec: common.Spec) -> tuple[dict, dict]:
    """Leave-largest-size-out: every parameterization's largest size held out at once."""
    data, gi = jd.data, jd.gi
    mask = np.zeros(data.n, bool)
    for g in range(len(jd.groups)):
        m = gi == g
        mask |= m & (data.levels == data.levels[m].max())
    info: dict = {"method": "leave-largest-size-out (each parameterization's largest size, refitted jointly)"}
    train = jd.subset(~mask)
    n_train_levels = int(np.unique(train.data.levels).size)
    if n_train_levels < 2:
        info["note"] = ("needs the other sizes to span at least 2 sizes after holding out each parameterization's "
                        f"largest, found {n_train_levels}: the shared exponent cannot be refitted")
        return {}, info
    one_level = tuple(g for g in range(len(jd.groups)) if np.unique(train.data.levels[train.gi == g]).size < 2)
    has_e = n_train_levels >= 3
    try:
        sub, sol = solve_active(train, form, has_e, delta, p_ref, fix_mu1=one_level)
    except CpPlanError as exc:
        info["note"] = f"refit without the largest sizes failed: {exc}"
        return {}, info
    X_out = {"x": spec.X["x"][mask], "rho": spec.X["rho"][mask], "gi": gi[mask]}
    err = spec.y[mask] - common.predict_log(sub, sol.theta, X_out)[0]
    hg, hl = gi[mask], data.levels[mask]
    centred = err.copy()
    for g in np.unique(hg):
        for lev in np.unique(hl[hg == g]):
            mm = (hg == g) & (hl == lev)
            centred[mm] -= err[mm].mean()
    per = {}
    for g, name in enumerate(jd.groups):
        mm = hg == g
        if mm.any():
            per[name] = {"error": float(np.sqrt(np.mean(err[mm] ** 2))), "bias": float(np.mean(err[mm])),
                         "profile_error": float(np.sqrt(np.mean(centred[mm] ** 2))), "n_heldout": int(mm.sum()),
                         "n_params_min_heldout": float(data.p[mask][mm].min())}
    info.update(note=f"held out {int(mask.sum())} runs (each parameterization's largest size)",
                n_heldout=int(mask.sum()), n_train=int((~mask).sum()),
                error=float(np.sqrt(np.mean(err * err))), bias=float(np.mean(err)),
                profile_error=float(np.sqrt(np.mean(centred * centred))),
                train_fixed={} if has_e else {"E": 0.0},
                train_mu1_fixed=[jd.groups[g] for g in one_level] if form != "quad-fixed" else [])
    return per, info


def fit_shape_joint(df, bootstrap: int = 0, seed: int = 0, level: float = 0.95, *, form: str | None = None,
                    delta: float | None = None, gap_decades: float = 0.15, group_col: str | None = None,
                    skipped: dict | None = None, min_groups: int = 2) -> dict[str, FitResult]:
    """Fit the joint law (module docstring) to the runs of several parameterizations and return
    one ordinary ``shape`` FitResult per parameterization. Groups are ``df[group_col]`` or, by
    default, :func:`planner.fit.common.param_key` (parameterization, with α for a custom depth-α).
    Parameterizations that cannot take part (one size, < 3 N:L) are left out and named in
    ``skipped`` (a dict filled in place); fewer than ``min_groups`` left is an error (fit
    separately). With ``min_groups=1`` one parameterization gets the multiplicative-penalty form
    on its own (the planner's reference law, :mod:`planner.planlaws`)."""
    skipped = {} if skipped is None else skipped
    if form is not None and form not in FORMS:
        raise CpPlanError(f"unknown shape form {form!r}; choose one of {', '.join(FORMS)}")
    common.require_columns(df, ["n_params", "n_tokens", "loss"], "shape")
    if group_col is None:
        alphas = df["alpha"].tolist() if "alpha" in df.columns else [None] * len(df)
        params = df["parameterization"].tolist() if "parameterization" in df.columns else [None] * len(df)
        keys = np.array([common.param_key(p, a) for p, a in zip(params, alphas)], dtype=object)
    else:
        keys = df[group_col].astype(str).to_numpy(dtype=object)
    groups = tuple(_eligible(df, keys, gap_decades, skipped))
    if len(groups) < min_groups:
        if min_groups == 1:
            raise CpPlanError(next(iter(skipped.values()), "no runs for the shape law"))
        raise CpPlanError(f"the joint shape law needs 2 or more parameterizations with runs at 2+ sizes and 3+ N:L; "
                          f"got {len(groups)} ({', '.join(groups) or 'none'}); fit them separately (--separate)")
    keep = np.isin(keys, groups)
    df = df[keep].reset_index(drop=True)
    keys = keys[keep]
    gi = np.array([groups.index(k) for k in keys])
    data = prepare(df, gap_decades)  # global size levels: sizes shared across parameterizations
    design = design_for(data)
    if design.has_b:
        raise CpPlanError("the joint shape law folds the token term into the P term, so it needs runs at a fixed "
                          "tokens per parameter (or a fixed token count); these runs vary both: fit them separately "
                          "(--separate)")
    jd = JointData(data, gi, groups)
    p_ref = float(np.exp(np.mean(np.log(data.p))))
    names = FORMS if form is None else (form,)
    candidates, errors, failures = {}, {}, {}
    for name in names:
        try:
            spec, sol = solve_active(jd, name, design.has_e, delta, p_ref)
        except CpPlanError as exc:
            failures[name] = str(exc)
            continue
        per, info = _heldout(jd, name, delta, p_ref, spec)
        candidates[name] = (spec, sol, per, info)
        errors[name] = info.get("profile_error", float("nan"))
    if not candidates:
        raise CpPlanError("no joint shape-law form could be fitted: " + "; ".join(f"{k}: {v}" for k, v in failures.items()))
    finite = {k: v for k, v in errors.items() if np.isfinite(v)}
    by = "leave-largest-size-out, error of the N:L profile (mean offset per parameterization and size removed)"
    if not finite:  # no held-out split: leave-one-out over runs
        from planner.fit.shape import loo_error

        by = "leave-one-out (too few sizes to hold the largest out)"
        finite = errors = {k: loo_error(c[0], c[1].theta) for k, c in candidates.items()}
    best = min(finite.values())
    chosen = next(k for k in FORMS if k in finite and finite[k] <= 1.05 * best + 1e-12)
    spec, sol, per, info = candidates[chosen]
    selection = {"by": by, "errors": {k: float(v) for k, v in errors.items()}, "chosen": "joint-mult-" + chosen,
                 "rule": "lowest error; the simplest form within 5% of it", "failed": failures}
    warnings = list(design.notes)
    if not per:
        warnings.append(f"held-out error not computed ({info.get('note')}); the law's extrapolation in P is untested")
    spec.meta.update(design.meta)
    joint = common.fit_spec(spec, bootstrap_n=bootstrap, seed=seed, level=level,
                            heldout=(info.get("error", float("nan")), info), solved=sol, extra_warnings=warnings)
    return split(joint, jd, chosen, design, p_ref, per, selection)


def split(joint: FitResult, jd: JointData, form: str, design, p_ref: float, per: dict, selection: dict) -> dict:
    """Per-parameterization FitResults from the joint one (shared E and a in each)."""
    groups = jd.groups
    y = np.log(jd.data.loss)
    to_values = joint_to_values_fn(groups, form, design.has_e)
    theta = np.asarray(joint.meta["theta"], float)
    ln_pred = _model_fn(groups, form, design.has_e)(
        theta[None, :], {"x": np.log(jd.data.p / p_ref), "rho": np.log(jd.data.ratio), "gi": jd.gi})[0][0]
    assert np.allclose(to_values(theta[None, :])[0], [joint.values[n] for n in joint.names])
    names_g = group_value_names(form)
    drift, asym = form != "quad-fixed", form == "asym-drift"
    out = {}
    for g, name in enumerate(groups):
        cols = group_columns(groups, form, name)
        jn = [joint.names[c] for c in cols]
        m = jd.gi == g
        others = [f"[{o}]" for o in groups if o != name]
        frozen = joint.meta.get("frozen_at_bound") or {}
        shown = {n.replace("ln_", ""): d for n, d in frozen.items()}
        warns = [w.replace(f"[{name}]", "").strip() if w.startswith(f"[{name}]") else w
                 for w in joint.warnings if not any(o in w for o in others)
                 and not any(w.startswith(f"{v} is at its ") for v in shown)]
        warns += [f"{v} ended on its bound ({'ln ' if v.startswith(('E', 'A', 'k')) else ''}{d['value']:.4g}, box "
                  f"[{d['bounds'][0]:.4g}, {d['bounds'][1]:.4g}]) and was held there, bootstrap included: the data do "
                  "not pin it down and its interval is conditional on it"
                  for v, d in shown.items() if not any(o in v for o in others)]
        held = per.get(name, {})
        meta = dict(joint.meta)
        meta.update(
            form="joint-mult-" + form, group=name, parameterization=name, value_names=list(names_g),
            terms={"has_E": design.has_e, "has_B": False, "drift": drift, "asym": asym, "mult": True},
            n_params_ref=p_ref, selection=selection,
            equation=("E + A_p*(P/P_ref)^(-a)*(1 + pen_p)" if design.has_e else "A_p*(P/P_ref)^(-a)*(1 + pen_p)")
            + ", pen_p = " + ("(k_deep_p if ln r < center else k_wide_p)" if asym else "k_p")
            + "*(ln r - (" + ("mu0_p + mu1_p*ln(P/P_ref)" if drift else "mu0_p") + "))^2; E, a shared",
            joint={"parameterizations": list(groups), "shared": list(SHARED), "form": form,
                   "has_E": design.has_e, "names": list(joint.names), "columns": cols,
                   "values": joint.values, "n": joint.n, "heldout_error": joint.heldout_error,
                   "heldout": joint.meta.get("heldout")},
            heldout={**(joint.meta.get("heldout") or {}), **({"this": held} if held else {})},
            reference="Dey et al. 2025 §5 (parallel power laws); Hoffmann et al. 2022 eq. 2; Kaplan et al. 2020 §3.1",
        )
        sub = lambda d: {n: d[j] for n, j in zip(names_g, jn)}  # noqa: E731
        out[name] = FitResult(
            law="shape", names=names_g, values=sub(joint.values), stderr=sub(joint.stderr),
            ci_low=sub(joint.ci_low), ci_high=sub(joint.ci_high), cov=joint.cov[np.ix_(cols, cols)],
            n=int(m.sum()), n_free=joint.n_free, objective=joint.objective,
            residuals=common.residual_stats(y[m] - ln_pred[m]), aic=joint.aic, bic=joint.bic,
            heldout_error=float(held.get("error", float("nan"))), warnings=tuple(warns), meta=meta,
            samples=None if joint.samples is None else joint.samples[:, cols], seed=joint.seed, level=joint.level,
        )
    return out
