"""The parameterization gap: how much more reducible loss μP, SP or depth-α has than the
reference parameterization (CompleteP) at the same shape, as a function of how far the shape is
from the base shape the hyperparameters were tuned at.

    L_p(P, D, N, L) = E + (L_ref(P, D, N:L) − E) · exp(g_p(u, v)),   u = ln m_L = ln(L / L_base),
                                                                      v = ln m_N = ln(N / N_base)

Dey et al. 2025 (§3, §5, Figs. 1 and 4): at the base shape every parameterization builds the same
network with the same hyperparameters, so the gap vanishes at m_L = m_N = 1; μP's hyperparameters
stop transferring as depth grows (its gap grows with m_L), SP's also as width grows. Because the
gap is a function of the multipliers and not of N:L alone, at a fixed N:L it grows with scale (the
depth of an N:L-r model grows as P^(1/3)): savings extrapolate through the mechanism, not flat.
The gap multiplies the *reducible* loss, so a constant gap is a constant compute multiplier.

Candidate forms (linear in their coefficients, γ by a grid):

- ``depth``:        g = c_L·u
- ``depth-offset``: g = c_0 + c_L·u          (a gap already at the base shape, e.g. SP's attention scale)
- ``depth-width``:  g = c_L·u + c_N·v        (v − u = ln(N:L) − const, so this also covers N:L dependence)
- ``depth-quad``:   g = c_L·u + c_Q·u²
- ``depth-pow``:    g = c_P·sign(u)·|u|^γ     (γ in [0.5, 3])

Observations: g_obs = ln((L_p − E)/(L_ref − E)), with L_ref the reference run of the same shape,
size and tokens where the database has one (paired: shared data order and seed noise partly
cancel), else the reference law's prediction. Forms are scored by held-out error (each form refitted
without the largest size, predicting it; leave-one-out with one size) and *averaged*, not picked:
weight w_f ∝ e_f^(−n_out) (the Gaussian held-out likelihood with each form's own error variance), so
forms the held-out data cannot tell apart share the samples and their disagreement far from the
data widens the intervals. Bootstrap: per reference sample b (its own E and law), a form drawn by
weight, refitted to g_obs + noise, the noise a parametric residual draw whose scale is at least the
seed-to-seed noise of the runs (from replicates, else residuals), so intervals carry seed noise even
where a few points happen to fit well.

Every form is stored in one coefficient layout, ``COEFS``, zeros where a form has no term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import CpPlanError

COEFS = ("c0", "cL", "cN", "cQ", "cP", "gamma")
GAP_FORMS = ("depth", "depth-offset", "depth-width", "depth-quad", "depth-pow")
GAMMAS = np.round(np.linspace(0.5, 3.0, 26), 3)
WEIGHT_FLOOR = 1e-3  # forms below this share of the weight get no samples


def features(u: np.ndarray, v: np.ndarray, form: str, gamma: float = 1.0) -> np.ndarray:
    """Design matrix (n, k) of ``form`` at depth/width log-multipliers u, v."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    if form == "depth":
        return u[:, None]
    if form == "depth-offset":
        return np.stack([np.ones_like(u), u], axis=1)
    if form == "depth-width":
        return np.stack([u, v], axis=1)
    if form == "depth-quad":
        return np.stack([u, u * u], axis=1)
    if form == "depth-pow":
        return (np.sign(u) * np.abs(u) ** gamma)[:, None]
    raise CpPlanError(f"unknown gap form {form!r}; choose one of {', '.join(GAP_FORMS)}")


def to_layout(form: str, beta: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """A form's coefficients in the common ``COEFS`` layout."""
    out = np.zeros(len(COEFS))
    idx = {"depth": ("cL",), "depth-offset": ("c0", "cL"), "depth-width": ("cL", "cN"),
           "depth-quad": ("cL", "cQ"), "depth-pow": ("cP",)}[form]
    for name, b in zip(idx, np.atleast_1d(beta)):
        out[COEFS.index(name)] = b
    out[COEFS.index("gamma")] = gamma if form == "depth-pow" else 1.0
    return out


def gap_values(coefs: np.ndarray, u, v) -> np.ndarray:
    """g for coefficient rows ``coefs`` (S, len(COEFS)) at points u, v (n,): array (S, n)."""
    c = np.atleast_2d(np.asarray(coefs, float))
    u = np.asarray(u, float)[None, :]
    v = np.asarray(v, float)[None, :]
    col = {n: c[:, i:i + 1] for i, n in enumerate(COEFS)}
    powu = np.zeros((c.shape[0], u.shape[1]))
    used = col["cP"][:, 0] != 0
    gammas = col["gamma"][:, 0]
    with np.errstate(all="ignore"):
        for g in np.unique(gammas[used]):  # a few exponents (GAMMAS): one power per exponent, not per row
            powu[used & (gammas == g)] = np.sign(u) * np.abs(u) ** g
    # the linear part as one product: [c0 cL cN cQ] @ [1; u; v; u²]
    lin = np.stack([col["c0"][:, 0], col["cL"][:, 0], col["cN"][:, 0], col["cQ"][:, 0]], axis=1)
    feats = np.concatenate([np.ones_like(u), u, v, u * u], axis=0)
    return lin @ feats + col["cP"] * powu


def _lstsq(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Least squares; None when X is rank-deficient (the form is not identified by these points)."""
    if X.shape[0] <= X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        return None
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    sse = float(np.sum((y - X @ beta) ** 2))
    return beta, sse


def fit_form(form: str, u, v, y) -> tuple[np.ndarray, float] | None:
    """(coefficients in COEFS layout, SSE) of ``form`` fitted to y, or None when not identified."""
    if form != "depth-pow":
        got = _lstsq(features(u, v, form), y)
        return None if got is None else (to_layout(form, got[0]), got[1])
    best = None
    for g in GAMMAS:
        got = _lstsq(features(u, v, form, g), y)
        if got is not None and (best is None or got[1] < best[1]):
            best = (to_layout(form, got[0], g), got[1])
    return best


def heldout_errors(form: str, u, v, y, levels) -> tuple[float, int, str]:
    """RMS error of ``form`` predicting the largest size from the others (leave-one-out with a
    single size); (NaN, 0, why) when it cannot be scored."""
    u, v, y, levels = (np.asarray(a) for a in (u, v, y, levels))
    if np.unique(levels).size >= 2:
        out = levels == levels.max()
        got = fit_form(form, u[~out], v[~out], y[~out])
        if got is None:
            return float("nan"), 0, "not identified without the largest size"
        err = y[out] - gap_values(got[0], u[out], v[out])[0]
        return float(np.sqrt(np.mean(err ** 2))), int(out.sum()), "leave-largest-size-out"
    errs = []
    for i in range(y.size):
        keep = np.arange(y.size) != i
        got = fit_form(form, u[keep], v[keep], y[keep])
        if got is None:
            return float("nan"), 0, "not identified with a point left out"
        errs.append(y[i] - gap_values(got[0], u[i:i + 1], v[i:i + 1])[0, 0])
    return float(np.sqrt(np.mean(np.square(errs)))), int(y.size), "leave-one-out (one size)"


def form_weights(errors: dict[str, float], n_out: dict[str, int]) -> dict[str, float]:
    """w_f ∝ e_f^(−n_out): the held-out Gaussian likelihood with each form's own error variance.
    Forms without a held-out error get no weight unless none has one (then equal weights)."""
    ok = {k: e for k, e in errors.items() if np.isfinite(e) and n_out.get(k, 0) > 0}
    if not ok:
        return {k: 1.0 / len(errors) for k in errors} if errors else {}
    floor = 1e-12
    logw = {k: -n_out[k] * math.log(max(e, floor)) for k, e in ok.items()}
    top = max(logw.values())
    w = {k: math.exp(lw - top) for k, lw in logw.items()}
    total = sum(w.values())
    w = {k: v / total for k, v in w.items()}
    w = {k: (v if v >= WEIGHT_FLOOR else 0.0) for k, v in w.items()}
    total = sum(w.values())
    return {k: w.get(k, 0.0) / total for k in errors}


def allocate(weights: dict[str, float], n: int) -> list[str]:
    """``n`` sample slots shared by weight (largest remainder), listed form by form."""
    names = [k for k in weights if weights[k] > 0]
    raw = np.array([weights[k] * n for k in names])
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts))[: n - int(counts.sum())]:
        counts[i] += 1
    return [k for k, c in zip(names, counts) for _ in range(int(c))]


@dataclass(frozen=True)
class GapObservations:
    """One parameterization's runs, expressed against the reference."""

    u: np.ndarray  # ln(L / L_base)
    v: np.ndarray  # ln(N / N_base)
    loss: np.ndarray  # the parameterization's final loss
    ref_loss: np.ndarray  # the paired reference run's loss (NaN: unpaired, use the law)
    levels: np.ndarray  # size level (0 = smallest)

    @property
    def n(self) -> int:
        return int(self.loss.size)


def observed_gap(obs: GapObservations, e: float, ref_pred: np.ndarray) -> np.ndarray:
    """g_obs = ln((L_p − E)/(L_ref − E)), L_ref the paired run or else ``ref_pred``."""
    ref = np.where(np.isfinite(obs.ref_loss), obs.ref_loss, ref_pred)
    with np.errstate(all="ignore"):
        return np.log((obs.loss - e) / (ref - e))


def gap_noise(obs: GapObservations, e: float, ref_pred: np.ndarray, sigma_loss: float) -> np.ndarray:
    """Standard deviation of g_obs from seed noise σ on each measured loss (delta method)."""
    ref = np.where(np.isfinite(obs.ref_loss), obs.ref_loss, ref_pred)
    paired = np.isfinite(obs.ref_loss).astype(float)
    with np.errstate(all="ignore"):
        return sigma_loss * np.sqrt(1.0 / (obs.loss - e) ** 2 + paired / (ref - e) ** 2)


def fit_gap(obs: GapObservations, e_point: float, ref_point: np.ndarray, e_samples: np.ndarray,
            ref_samples: np.ndarray, sigma_loss: float, seed: int = 0,
            forms: tuple[str, ...] = GAP_FORMS) -> dict:
    """Fit every gap form at the reference's point values, weight them by held-out error and draw
    one coefficient row per reference sample (module docstring). Returns plain JSON: ``forms``
    (per form: coefficients, held-out error, weight, in-sample RMS), ``samples`` (S, len(COEFS))
    paired with the reference samples, ``sample_forms``, ``noise`` and notes."""
    if obs.n < 2:
        raise CpPlanError(f"the gap law needs at least 2 runs of the parameterization, got {obs.n}")
    y = observed_gap(obs, e_point, ref_point)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        raise CpPlanError("the gap law found no run whose loss lies above the reference's irreducible loss E")
    u, v, lev = obs.u[ok], obs.v[ok], obs.levels[ok]
    yk = y[ok]
    fitted, errors, n_out, how = {}, {}, {}, ""
    for f in forms:
        got = fit_form(f, u, v, yk)
        if got is None:
            continue
        fitted[f] = got
        errors[f], n_out[f], how = heldout_errors(f, u, v, yk, lev)
    if not fitted:
        raise CpPlanError("no gap form is identified by these runs (they need at least 2 distinct depths)")
    weights = form_weights(errors, n_out)
    s = int(e_samples.size)
    rng = np.random.default_rng(seed)
    # shuffled, so that which gap form meets which reference sample (itself ordered form by form)
    # is random, not an artifact of list order
    slots = [str(f) for f in rng.permutation(allocate(weights, s))]
    noise_point = gap_noise(GapObservations(u, v, obs.loss[ok], obs.ref_loss[ok], lev), e_point, ref_point[ok], sigma_loss)
    samples = np.zeros((s, len(COEFS)))
    samples[:, COEFS.index("gamma")] = 1.0
    n_collapsed, n_dropped = 0, 0
    for b, f in enumerate(slots):
        yb = observed_gap(obs, float(e_samples[b]), ref_samples[b])[ok]
        good = np.isfinite(yb)
        n_dropped += int((~good).sum())
        if good.sum() < 2:
            samples[b] = fitted[f][0]
            n_collapsed += 1
            continue
        coef_b = fit_form(f, u[good], v[good], yb[good])
        if coef_b is None:
            samples[b] = fitted[f][0]
            continue
        resid = yb[good] - gap_values(coef_b[0], u[good], v[good])[0]
        dof = max(good.sum() - np.count_nonzero(coef_b[0][:-1]), 1)
        rms = math.sqrt(float(np.sum(resid ** 2)) / dof)
        scale = np.maximum(rms, np.nan_to_num(noise_point[good], nan=rms))
        y_star = gap_values(coef_b[0], u[good], v[good])[0] + rng.normal(0.0, 1.0, good.sum()) * scale
        again = fit_form(f, u[good], v[good], y_star)
        samples[b] = (again or coef_b)[0]
    extra = _extrapolation(fitted, weights, u, v, yk, lev, noise_point, s, rng)
    info = {}
    for f, (coef, sse) in fitted.items():
        k = int(np.count_nonzero(coef[:-1])) + (1 if f == "depth-pow" else 0)
        info[f] = {"coefs": dict(zip(COEFS, map(float, coef))), "heldout_error": errors[f],
                   "n_heldout": n_out[f], "weight": weights.get(f, 0.0),
                   "rms": math.sqrt(sse / max(yk.size - k, 1)), "n_coefs": k}
    return {
        "model": "gap/1",
        "equation": "L_p = E + (L_ref - E)*exp(g), g = c0 + cL*u + cN*v + cQ*u^2 + cP*sign(u)|u|^gamma, "
                    "u = ln(L/L_base), v = ln(N/N_base)",
        "forms": info, "heldout": how, "weight_rule": "w_f ∝ heldout_error_f^(-n_heldout), floor "
                                                      f"{WEIGHT_FLOOR:g}",
        "samples": samples.tolist(), "sample_forms": slots, "extrapolation": extra,
        "n": int(yk.size), "n_paired": int(np.isfinite(obs.ref_loss[ok]).sum()),
        "n_below_e": int((~ok).sum()), "mean_dropped_per_sample": n_dropped / max(s, 1),
        "n_collapsed_samples": n_collapsed,
        "n_sizes": int(np.unique(lev).size), "sigma_loss": float(sigma_loss),
        "u_range": [float(u.min()), float(u.max())], "v_range": [float(v.min()), float(v.max())],
    }


def _weighted_prediction(fitted_sub: dict, weights: dict, u, v) -> np.ndarray:
    total = sum(weights.get(f, 0.0) for f in fitted_sub)
    if total <= 0:
        return np.full(np.size(u), np.nan)
    return sum(weights.get(f, 0.0) / total * gap_values(c, u, v)[0] for f, (c, _) in fitted_sub.items())


def _extrapolation(fitted: dict, weights: dict, u, v, y, levels, noise, n_samples: int, rng) -> dict:
    """The extrapolation-error term of the gap (planner.fit.extrapolation): backtests that fit
    the forms without the largest (and the two largest) sizes and predict the held-out runs, the
    forms' weighted point fit (the scale S), the runs' (u, v) hull and one Student-t draw per
    sample."""
    from planner.fit import extrapolation as ex

    noise = np.nan_to_num(np.asarray(noise, float), nan=0.0)
    floor = 2.0 * float(np.median(noise)) if noise.size else 0.0
    folds, fold_info = [], []
    lv = np.unique(levels)
    for k in (1, 2):
        if lv.size <= k:
            break
        test = levels >= lv[-k]
        sub = {}
        for f in fitted:
            got = fit_form(f, u[~test], v[~test], y[~test])
            if got is not None:
                sub[f] = got
        if not sub:
            continue
        pred = _weighted_prediction(sub, weights, u[test], v[test])
        dist = ex.hull_distance(np.stack([u[~test], v[~test]], axis=1), np.stack([u[test], v[test]], axis=1))
        err = y[test] - pred
        folds.append((err, noise[test], dist, ex.gap_scale(pred, floor)))
        fold_info.append({"held_out_sizes": k, "n": int(test.sum()), "rms_error": float(np.sqrt(np.mean(err ** 2))),
                          "mean_distance": float(np.mean(dist))})
    kappa, ests = ex.gap_kappa(folds)
    for info, est in zip(fold_info, ests):
        info["kappa"] = est
    z = ex.student_t(rng, ex.GAP_T_DOF, n_samples)
    total = sum(weights.get(f, 0.0) for f in fitted) or 1.0
    point = [[weights.get(f, 0.0) / total, c.tolist()] for f, (c, _) in fitted.items() if weights.get(f, 0.0) > 0]
    return {"kappa": kappa, "kappa_prior": ex.GAP_KAPPA_PRIOR, "folds": fold_info, "scale_floor": floor,
            "point": point, "growth": "d + d^2/2", "dof": ex.GAP_T_DOF,
            "hull": np.stack([u, v], axis=1).round(6).tolist(), "z": z.tolist()}
