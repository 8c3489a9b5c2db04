"""The laws the planner queries: a reference shape law averaged over its forms, and for every other
parameterization the reference times a gap that depends on the depth and width multipliers.

- **Reference** (CompleteP when the runs have it): a shape law fitted on the reference's runs alone
  in six forms: the penalty in ln(N:L) either scales the reducible loss,
  L = E + A·(P/P_ref)^(−a)·(1 + pen) (:mod:`planner.fit.shape_joint` on one parameterization,
  ``mult:``), or adds to the loss, L = E + A·(P/P_ref)^(−a) + pen (:mod:`planner.fit.shape`,
  ``add:``), each with a fixed optimum, a drifting one, or a drifting asymmetric one. The forms are not
  picked but averaged: weight w_f ∝ e_f^(−n_out) from the leave-largest-size-out error of the N:L
  profile (:func:`planner.fit.gap.form_weights`), and the sample set is the forms' bootstrap refits
  in proportion to their weights, so where the forms disagree (the drift of the optimum, far from
  the data) the intervals say so.
- **Others**: L_p = E + (L_ref − E)·exp(g_p(ln m_L, ln m_N)) (:mod:`planner.fit.gap`), sample b
  paired with reference sample b, so savings intervals are paired.
- **Seed noise** σ: the pooled standard deviation of final loss over replicate runs (same config,
  other seed) where the database has them, else the reference fit's residual RMS in loss units. It
  sets the floor of the gap bootstrap noise and widens the interval of a single run's loss
  (:meth:`PlanLaw.predict_run`).

Every law here has ``predict(n_params=, n_tokens=, ratio=) -> (median, low, high)`` (expected
loss: the point is the median over the samples, so it always lies inside its interval) and
``predict_samples(...) -> (S, n)``, as :mod:`planner.savings` and :mod:`planner.band` expect.

- **Beyond the runs** a reference refit whose loss rises with scale at a trained N:L is rejected
  (:meth:`ReferenceLaw._grows_beyond_runs`), and every prediction is capped at the same sample's
  loss at the largest run's size.

(Just over 600 lines on purpose: the two law classes and :func:`fit_plan_laws` share one sample
layout, the reference's rows paired with every gap's, which is easiest to keep right in one file.)
"""

from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np

from planner.errors import CpPlanError
from planner.plainjson import stored_config
from planner.fit import extrapolation
from planner.fit import gap as gapfit
from planner.fit.shape import FORMS, ShapeLaw
from planner.fitter import FitResult

PLAN_LAWS_FORMAT = "cp-plan-plan-laws/2"
REFERENCE_ORDER = ("completep",)  # preferred reference; else the parameterization with most runs
MIN_SAMPLES = 50  # with --bootstrap 0 the mixture still has this many (asymptotic) draws
MIN_BOOT = 20  # bootstrap refits per reference form that has any samples at all
GROWTH_CHECK_SIZES = 13  # P from the largest run's to 1e5x it (ReferenceLaw._grows_beyond_runs)
GROWTH_CHECK_RATIOS = 9  # N:L across the trained range
_SHAPE = ShapeLaw()


# ---------------------------------------------------------------------- seed noise


def _config_without_seed(raw) -> str | None:
    cfg = stored_config(raw)
    if cfg is None:
        return None
    cfg = {k: v for k, v in cfg.items() if k not in ("seed", "checkpoint_dir", "device", "compile", "log_every")}
    return json.dumps(cfg, sort_keys=True)


def replicate_noise(df) -> tuple[float | None, int, int]:
    """Pooled seed-to-seed standard deviation of final loss over groups of runs that differ only
    in seed: (σ or None, groups, runs in them)."""
    if "config_json" not in df.columns or len(df) == 0:
        return None, 0, 0
    keys = [_config_without_seed(r) for r in df["config_json"].tolist()]
    loss = df["loss"].to_numpy(float)
    groups: dict[str, list[float]] = {}
    for k, l in zip(keys, loss):
        if k is not None and math.isfinite(l):
            groups.setdefault(k, []).append(float(l))
    ss, dof, n_groups, n_runs = 0.0, 0, 0, 0
    for vals in groups.values():
        if len(vals) >= 2:
            a = np.asarray(vals)
            ss += float(np.sum((a - a.mean()) ** 2))
            dof += a.size - 1
            n_groups += 1
            n_runs += a.size
    if dof == 0:
        return None, 0, 0
    return math.sqrt(ss / dof), n_groups, n_runs


def nan_percentiles(s: np.ndarray, qs) -> list[np.ndarray]:
    """np.nanpercentile(s, qs, axis=0) (linear interpolation) in one sort: numpy falls back to a
    Python loop over columns as soon as one NaN is present, which cost a plan ~0.3 s."""
    s = np.asarray(s, float)
    if not np.isnan(s).any():
        return list(np.percentile(s, qs, axis=0))
    srt = np.sort(s, axis=0)  # NaN sorts last
    cnt = np.sum(~np.isnan(s), axis=0)
    cols = np.arange(s.shape[1])
    out = []
    for q in qs:
        pos = np.maximum(cnt - 1, 0) * (float(q) / 100.0)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, np.maximum(cnt - 1, 0))
        frac = pos - lo
        v = srt[lo, cols] * (1 - frac) + srt[hi, cols] * frac
        out.append(np.where(cnt > 0, v, np.nan))
    return out


# ---------------------------------------------------------------------- law objects


class PlanLaw:
    """Shared prediction interface (module docstring)."""

    name: str
    level: float = 0.95
    sigma_loss: float = 0.0

    def predict_samples(self, **inputs) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def level_samples(self, **inputs) -> np.ndarray | None:
        """An error of the loss's level that every shape shares (None: none)."""
        return None

    def predict(self, level: float | None = None, **inputs):
        """(median, low, high) of the expected loss over the samples."""
        level = self.level if level is None else float(level)
        if not 0 < level < 1:
            raise CpPlanError(f"level={level} must be in (0, 1), e.g. 0.95")
        s = self.predict_samples(**inputs)
        shift = self.level_samples(**inputs)
        if shift is not None:
            s = s + shift
        tail = (1 - level) / 2 * 100
        with np.errstate(all="ignore"):
            s = np.where(np.isfinite(s), s, np.nan)
            med, low, high = nan_percentiles(s, [50, tail, 100 - tail])
        return np.asarray(med, float), np.asarray(low, float), np.asarray(high, float)

    def predict_run(self, level: float | None = None, seed: int = 0, **inputs):
        """(median, low, high) for ONE run's final loss: the expected-loss samples plus seed noise
        N(0, σ²) (σ = ``sigma_loss``)."""
        level = self.level if level is None else float(level)
        s = self.predict_samples(**inputs)
        shift = self.level_samples(**inputs)
        if shift is not None:
            s = s + shift
        s = np.repeat(s, max(1, -(-4000 // max(len(s), 1))), axis=0)  # several noise draws per sample
        rng = np.random.default_rng(seed)
        with np.errstate(all="ignore"):
            # s·exp(σ·z/s) ≈ s + σ·z, and a loss stays positive however large σ is
            noisy = s * np.exp(rng.normal(0.0, 1.0, size=s.shape) * self.sigma_loss / s)
            noisy = np.where(np.isfinite(noisy), noisy, np.nan)
            tail = (1 - level) / 2 * 100
            med, low, high = nan_percentiles(noisy, [50, tail, 100 - tail])
        return np.asarray(np.nanmedian(s, axis=0), float), np.asarray(low, float), np.asarray(high, float)


class ReferenceLaw(PlanLaw):
    """The reference parameterization's shape law, a weighted mixture of its forms."""

    def __init__(self, name: str, forms: dict[str, FitResult], weights: dict[str, float], take: dict[str, int],
                 sigma_loss: float, meta: dict | None = None, growth_check: dict | None = None):
        self.name = name
        self.forms, self.weights, self.take = forms, weights, take
        self.sigma_loss = float(sigma_loss)
        best = max((f for f in forms if take.get(f, 0) > 0), key=lambda f: weights.get(f, 0.0))
        self.best = forms[best]
        self.level = self.best.level
        self.growth_check = growth_check
        self.rejected: dict[str, str] = {}
        self._rows = {f: self._form_rows(f, forms[f], take[f]) for f in forms if take.get(f, 0) > 0}
        self.meta = dict(self.best.meta)
        self.meta.update(meta or {})
        self.meta.update(form="mixture of " + ", ".join(f"{f} ({weights[f]:.0%})" for f in self._rows),
                         form_weights=dict(weights), law="shape", reference=True)
        if self.rejected:
            self.meta["rejected_refits"] = dict(self.rejected)
        self.n = self.best.n
        self.heldout_error = self.best.heldout_error
        self.warnings = tuple(self.best.warnings)
        self.values = dict(self.best.values)

    def _form_rows(self, form: str, fr: FitResult, k: int) -> np.ndarray:
        if fr.samples is not None and np.all(np.isfinite(fr.samples), axis=1).any():
            rows = fr.samples[np.all(np.isfinite(fr.samples), axis=1)]
        else:
            return _SHAPE.parametric_samples(fr, k)
        if self.growth_check:
            grows = self._grows_beyond_runs(fr, rows)
            if grows.any():
                self.rejected[form] = (f"{int(grows.sum())} of {len(rows)} refits predicted a larger model at a "
                                       "trained N:L to lose more than the largest run"
                                       + (": all kept, each capped at the largest run's loss" if grows.all()
                                          else "; replaced by the others"))
            if not grows.all():
                rows = rows[~grows]
        if len(rows) >= k:
            return rows[:k]
        return rows[np.arange(k) % len(rows)]  # failed or rejected refits: reuse rows, keep the weight

    def _grows_beyond_runs(self, fr: FitResult, rows: np.ndarray) -> np.ndarray:
        """Which refits predict the loss to *rise* with scale beyond the runs, at some N:L inside the
        trained range with tokens growing as P: P from the largest run's to 10⁵ times it.

        Such a refit is a form fitted over a narrow range of sizes gone wrong: its optimum drifts
        fast, and the side of the bowl the runs never reached gets a steep curvature, so at 1.5e9
        from runs up to 4e5 it predicted thousands of nats/byte. Scaling P and D up together at a
        fixed N:L does not make a model worse (Kaplan et al. 2020, Fig. 5: at a fixed aspect ratio
        the loss falls with size), so these refits are rejected, as failed refits are, and the
        form keeps its weight through its other refits: the prior that truncates the bootstrap."""
        gc = self.growth_check
        p = math.exp(gc["log_p_max"]) * np.exp(np.linspace(0.0, math.log(1e5), GROWTH_CHECK_SIZES))
        lo, hi = gc["ratio_range"]
        r = np.exp(np.linspace(math.log(lo), math.log(hi), GROWTH_CHECK_RATIOS))
        pp, rr = (a.ravel() for a in np.meshgrid(p, r, indexing="ij"))
        if fr.meta.get("folded") == "tokens":  # a law of one token count prices only that count
            d = np.full(pp.size, float(fr.meta["n_tokens_fixed"]))
        else:
            d = gc["tokens_per_param"] * pp
        with np.errstate(all="ignore"):
            v = _SHAPE.predict_values(rows, fr.meta, dict(n_params=pp, n_tokens=d, ratio=rr))
        v = v.reshape(len(rows), p.size, r.size)
        rise = np.diff(v, axis=1) > 1e-9 * np.abs(v[:, :-1])
        return np.any(rise | ~np.isfinite(v[:, 1:]), axis=(1, 2))

    @property
    def n_samples(self) -> int:
        return int(sum(len(r) for r in self._rows.values()))

    def e_samples(self) -> np.ndarray:
        out = []
        for f, rows in self._rows.items():
            names = list(self.forms[f].names)
            out.append(rows[:, names.index("E")] if "E" in names else np.zeros(len(rows)))
        return np.concatenate(out)

    _extra: dict | None = None

    @property
    def extra(self) -> dict | None:
        """The extrapolation term (planner.fit.extrapolation); None: without it."""
        return self._extra

    @extra.setter
    def extra(self, value: dict | None) -> None:
        self._extra = value
        self.__dict__.pop("_memo", None)  # remembered predictions were made without it

    def distance_from_runs(self, n_params, ratio) -> np.ndarray:
        """Distance of shapes from the convex hull of the reference's runs in (ln m_L, ln m_N)."""
        from planner.savings import continuous_shape

        if not (self.extra and self.extra.get("hull")):
            return np.zeros(np.size(ratio))
        n, l = continuous_shape(np.atleast_1d(np.asarray(n_params, float)), np.atleast_1d(np.asarray(ratio, float)))
        base = self.extra["base"]
        q = np.stack([np.log(l / base[1]), np.log(n / base[0])], axis=1)
        return extrapolation.hull_distance(np.asarray(self.extra["hull"]), q)

    def predict_samples(self, **inputs) -> np.ndarray:
        # Every gap law prices its shapes as this law times its gap, at the grids the band and the
        # savings search: remember the last few answers (read-only arrays) instead of recomputing.
        key = tuple((k, np.asarray(v, float).tobytes(), np.shape(v)) for k, v in sorted(inputs.items()))
        memo = self.__dict__.setdefault("_memo", {})
        if key in memo:
            return memo[key]
        out = self._predict_samples(**inputs)
        out.flags.writeable = False
        if len(memo) >= 8:
            memo.pop(next(iter(memo)))
        memo[key] = out
        return out

    def _forms_predict(self, inputs: dict, drifting_only: bool = False) -> np.ndarray:
        """The forms' samples stacked (S, n); ``drifting_only``: +inf for the forms whose optimum
        does not drift (their loss falls with P at every N:L, so nothing caps them)."""
        return np.concatenate([_SHAPE.predict_values(rows, self.forms[f].meta, inputs)
                               if not drifting_only or "mu1" in self.forms[f].meta["value_names"]
                               else np.full((len(rows), np.size(inputs["n_params"])), np.inf)
                               for f, rows in self._rows.items()], axis=0)

    def _at_largest_size(self, p: np.ndarray, r: np.ndarray, n_tokens) -> np.ndarray:
        """Each sample's loss at the same N:L and tokens per parameter, scaled down to the largest
        run's P: the most a shape beyond the runs may lose (:meth:`_predict_samples`). The refits
        whose loss rises with scale are already rejected on a grid of sizes and trained N:L
        (:meth:`_grows_beyond_runs`); this cap holds the same rule everywhere else (an N:L outside
        the trained range, a P beyond the grid, a form whose every refit rose). The extrapolation
        term (planner.fit.extrapolation) is added after the cap."""
        down = np.exp(np.minimum(self.extra["log_p_max"] - np.log(p), 0.0))
        at_max = {"n_params": p * down, "ratio": r}
        if n_tokens is not None:  # tokens scale with P, except in a law of one token count
            fixed = any(self.forms[f].meta.get("folded") == "tokens" for f in self._rows)
            at_max["n_tokens"] = np.broadcast_to(np.asarray(n_tokens, float), p.shape) * (1.0 if fixed else down)
        with np.errstate(all="ignore"):
            return self._forms_predict(at_max, drifting_only=True)

    def _predict_samples(self, **inputs) -> np.ndarray:
        out = self._forms_predict(inputs)
        if not self.extra:
            return out
        p = np.atleast_1d(np.asarray(inputs["n_params"], float))
        if "ratio" in inputs:
            r = np.atleast_1d(np.asarray(inputs["ratio"], float))
        else:
            r = np.atleast_1d(np.asarray(inputs["n_embd"], float)) / np.atleast_1d(np.asarray(inputs["n_layer"], float))
        p, r = np.broadcast_arrays(p, r)
        if not np.any(np.log(p) > self.extra["log_p_max"]):
            return out
        out = np.minimum(out, self._at_largest_size(p, r, inputs.get("n_tokens")), out=np.array(out))
        e = self.e_samples()[:, None]
        shape, _ = extrapolation.reference_term(self.extra, p, r)
        with np.errstate(all="ignore"):
            return e + (out - e) * np.exp(shape)

    def level_samples(self, **inputs) -> np.ndarray | None:
        """The level term of the extrapolation (S, n), in loss units: part of the predicted loss's
        interval (:meth:`PlanLaw.predict`), not of the samples that bands and savings compare,
        since an error in E shifts every shape and parameterization alike."""
        if not self.extra or "reducible_at_max" not in self.extra:
            return None
        p = np.atleast_1d(np.asarray(inputs["n_params"], float))
        return extrapolation.reference_term(self.extra, p, np.ones_like(p))[1]


class GapLaw(PlanLaw):
    """Another parameterization: the reference times exp(gap) on the reducible loss."""

    def __init__(self, name: str, reference: ReferenceLaw, gap: dict, base: tuple[float, float], meta: dict | None = None):
        self.name, self.reference, self.gap = name, reference, gap
        self.base_n_embd, self.base_n_layer = float(base[0]), float(base[1])
        self.coefs = np.asarray(gap["samples"], float)
        if self.coefs.shape[0] != reference.n_samples:
            raise CpPlanError(f"the {name} gap law has {self.coefs.shape[0]} samples but the reference has "
                              f"{reference.n_samples}; refit the laws (recommend --refit)")
        self.level = reference.level
        self.sigma_loss = reference.sigma_loss
        self._e = reference.e_samples()[:, None]
        best = max(gap["forms"], key=lambda f: gap["forms"][f]["weight"])
        self.meta = {"law": "shape", "form": "reference × gap (" + ", ".join(
            f"{f} {v['weight']:.0%}" for f, v in gap["forms"].items() if v["weight"] > 0) + ")",
            "gap": {k: v for k, v in gap.items() if k not in ("samples", "sample_forms")},
            "reference": reference.name, "base": [self.base_n_embd, self.base_n_layer], **(meta or {})}
        self.n = int(gap["n"])
        held = [v["heldout_error"] for v in gap["forms"].values() if v["weight"] > 0
                and isinstance(v["heldout_error"], (int, float)) and math.isfinite(v["heldout_error"])]
        self.heldout_error = float(min(held)) if held else float("nan")
        self.warnings = tuple(gap.get("warnings") or ())
        self.values = {f"{k}[{best}]": v for k, v in gap["forms"][best]["coefs"].items()}

    def multipliers(self, n_params, ratio) -> tuple[np.ndarray, np.ndarray]:
        """(ln m_L, ln m_N) of the continuous shape (P, N:L) against this law's base shape."""
        from planner.savings import continuous_shape

        n, l = continuous_shape(np.asarray(n_params, float), np.asarray(ratio, float))
        return np.log(l / self.base_n_layer), np.log(n / self.base_n_embd)

    def gap_samples(self, n_params, ratio) -> np.ndarray:
        u, v = self.multipliers(n_params, ratio)
        g = gapfit.gap_values(self.coefs, np.atleast_1d(u), np.atleast_1d(v))
        extra = self.gap.get("extrapolation")
        if extra:
            u1, v1 = np.atleast_1d(u), np.atleast_1d(v)
            point = sum(w * gapfit.gap_values(np.asarray(c, float), u1, v1)[0] for w, c in extra["point"])
            g = g + extrapolation.gap_term(extra, u1, v1, point)
        return g

    def level_samples(self, **inputs) -> np.ndarray | None:
        return self.reference.level_samples(**inputs)

    def distance_from_runs(self, n_params, ratio) -> np.ndarray:
        """Distance of shapes from the convex hull of this parameterization's runs in
        (ln m_L, ln m_N) (0 inside)."""
        extra = self.gap.get("extrapolation") or {}
        if not extra.get("hull"):
            return np.zeros(np.size(ratio))
        u, v = self.multipliers(n_params, ratio)
        return extrapolation.hull_distance(np.asarray(extra["hull"]), np.stack([np.atleast_1d(u), np.atleast_1d(v)], 1))

    def predict_samples(self, **inputs) -> np.ndarray:
        ref = self.reference.predict_samples(**inputs)
        p = np.atleast_1d(np.asarray(inputs["n_params"], float))
        if "ratio" in inputs:
            r = np.atleast_1d(np.asarray(inputs["ratio"], float))
        else:
            r = np.atleast_1d(np.asarray(inputs["n_embd"], float)) / np.atleast_1d(np.asarray(inputs["n_layer"], float))
        g = self.gap_samples(np.broadcast_to(p, r.shape) if p.size == 1 else p, r)
        with np.errstate(all="ignore"):
            return self._e + (ref - self._e) * np.exp(g)


# ---------------------------------------------------------------------- fitting

# The reference's candidate forms: the shape penalty scaling the reducible loss (``mult``,
# planner.fit.shape_joint on one parameterization) or added to the loss (``add``, planner.fit.shape);
# each with a fixed optimum, a drifting one, or a drifting one with separate deep/wide curvature.
REFERENCE_FORMS = tuple(f"{kind}:{f}" for kind in ("mult", "add") for f in FORMS)


def _fit_reference_form(sub, key: str, form: str, bootstrap: int, seed: int) -> FitResult:
    from planner.fit.shape_joint import fit_shape_joint

    kind, name = form.split(":", 1)
    if kind == "mult":
        return fit_shape_joint(sub, bootstrap=bootstrap, seed=seed, form=name, group_col="_law", min_groups=1)[key]
    return _SHAPE.fit(sub.drop(columns="_law"), bootstrap=bootstrap, seed=seed, form=name)



def _base_of(ctx_base: dict | None, sub) -> tuple[tuple[float, float], str]:
    if ctx_base and ctx_base.get("base_n_embd") and ctx_base.get("base_n_layer"):
        return (float(ctx_base["base_n_embd"]), float(ctx_base["base_n_layer"])), "the runs' base shape"
    n0, l0 = float(sub["n_embd"].min()), float(sub["n_layer"].min())
    return (n0, l0), (f"the runs record no base shape: multipliers taken against the narrowest width {n0:g} "
                      f"and shallowest depth {l0:g} (the gap law's extrapolation assumes the gap vanishes there)")


def _pair_key(row, with_seed: bool):
    seed = None
    if with_seed:
        seed = (stored_config(row.get("config_json")) or {}).get("seed")
    def plain(x):  # NaN (a missing value) must compare equal to itself in a key
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)

    return (int(row["n_embd"]), int(row["n_layer"]), round(math.log(float(row["n_tokens"])), 2),
            plain(row.get("seq_len")), plain(row.get("vocab_size"))) + ((seed,) if with_seed else ())


def _paired_reference(sub, ref_df) -> np.ndarray:
    """Loss of the reference run with the same shape, tokens, context and vocabulary (and seed where
    both record one; else the mean over the reference's runs of that shape); NaN when none."""
    exact: dict = {}
    loose: dict = {}
    for _, r in ref_df.iterrows():
        exact.setdefault(_pair_key(r, True), []).append(float(r["loss"]))
        loose.setdefault(_pair_key(r, False), []).append(float(r["loss"]))
    out = []
    for _, r in sub.iterrows():
        vals = exact.get(_pair_key(r, True)) or loose.get(_pair_key(r, False))
        out.append(float(np.mean(vals)) if vals else float("nan"))
    return np.asarray(out)


def fit_plan_laws(df, keys: np.ndarray, bootstrap: int = 200, seed: int = 0, *, contexts: dict,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Fit the reference (form mixture) and every other parameterization's gap to the shape runs
    ``df`` (canonical columns plus ``ratio``), ``keys`` naming each run's parameterization key.
    ``contexts`` holds each key's run context (its ``base``). Returns plain JSON for the cache."""
    from planner.fit.common import scale_levels

    say = progress or (lambda m: None)
    keys = np.asarray(keys, dtype=object)
    counts = {k: int(np.sum(keys == k)) for k in sorted(set(keys.tolist()))}
    order = list(dict.fromkeys([k for k in REFERENCE_ORDER if k in counts] + sorted(counts, key=lambda k: -counts[k])))
    reference, ref_forms, skipped, failures = None, {}, {}, {}
    for cand in order:
        sub = df[keys == cand].reset_index(drop=True).assign(_law=cand)
        forms = {}
        for f in REFERENCE_FORMS:
            try:
                forms[f] = _fit_reference_form(sub, cand, f, 0, seed)
            except CpPlanError as exc:
                failures[f"{cand}/{f}"] = str(exc)
        if forms:
            reference, ref_forms, ref_df = cand, forms, sub
            break
        skipped[cand] = "; ".join(dict.fromkeys(v for k, v in failures.items() if k.startswith(cand + "/")))
    if reference is None:
        by_reason: dict[str, list[str]] = {}
        for k, v in skipped.items():
            by_reason.setdefault(v, []).append(k)
        raise CpPlanError("could not fit a shape law to any parameterization ("
                          + "; ".join(f"{', '.join(ks)}: {why}" for why, ks in by_reason.items())
                          + "); a shape law needs runs at "
                          "several N:L at two or more sizes: add runs with `cp-plan sweep shape`")
    errors, n_out = {}, {}
    for f, r in ref_forms.items():
        held = r.meta.get("heldout") or {}
        err = held.get("profile_error")
        if err is None:  # too few sizes to hold one out: the leave-one-out error of the selection
            err = (r.meta.get("selection") or {}).get("errors", {}).get(f.split(":", 1)[1])
            n_out[f] = int(r.n)
        else:
            n_out[f] = int(held.get("n_heldout") or 0)
        errors[f] = float(err) if err is not None else float("nan")
    weights = gapfit.form_weights(errors, n_out)
    n_samples = max(int(bootstrap), MIN_SAMPLES)
    slots = gapfit.allocate(weights, n_samples)
    take = {f: slots.count(f) for f in ref_forms}
    say(f"reference {reference}: forms weighted {', '.join(f'{f} {w:.0%}' for f, w in weights.items())}; "
        f"bootstrapping {n_samples} refits")
    if bootstrap > 0:
        for f in ref_forms:
            if take[f] > 0:
                try:  # at least MIN_BOOT refits: a form with a few slots still gets a stable resample
                    ref_forms[f] = _fit_reference_form(ref_df, reference, f, max(take[f], MIN_BOOT), seed)
                except CpPlanError as exc:  # too many refits failed: asymptotic draws stand in
                    failures[f"{reference}/{f} bootstrap"] = str(exc)
    # seed noise: replicates where there are any, else the reference's residuals
    sigma, n_groups, n_rep = replicate_noise(df)
    growth_check = _scale_facts(ref_df)
    ref_obj = ReferenceLaw(reference, ref_forms, weights, take, sigma_loss=sigma or 0.0, growth_check=growth_check)
    if ref_obj.rejected:
        say(f"reference {reference}: " + "; ".join(f"{f}: {why}" for f, why in ref_obj.rejected.items()))
    ref_extra = _reference_extrapolation(ref_obj, growth_check, seed)
    ref_base, _ = _base_of((contexts.get(reference) or {}).get("base"), ref_df)
    ref_extra.update(base=list(ref_base), hull=np.stack(
        [np.log(ref_df["n_layer"].to_numpy(float) / ref_base[1]),
         np.log(ref_df["n_embd"].to_numpy(float) / ref_base[0])], axis=1).round(6).tolist())
    if sigma is None:
        pred = ref_obj.predict(n_params=ref_df["n_params"].to_numpy(float), n_tokens=ref_df["n_tokens"].to_numpy(float),
                               ratio=ref_df["ratio"].to_numpy(float))[0]
        resid = ref_df["loss"].to_numpy(float) - pred
        k = len(ref_obj.best.names)
        sigma = math.sqrt(float(np.sum(resid ** 2)) / max(len(resid) - k, 1))
        noise = {"sigma_loss": sigma, "source": f"residual RMS of the {reference} shape law ({len(resid)} runs, no "
                                                "replicate seeds in the database): an upper bound on seed noise"}
        ref_obj.sigma_loss = sigma
    else:
        noise = {"sigma_loss": sigma, "source": f"{n_groups} groups of replicate runs ({n_rep} runs) differing only in seed"}
    out = {
        "format": PLAN_LAWS_FORMAT, "reference": reference, "noise": noise,
        "reference_fit": {"forms": {f: r.to_json() for f, r in ref_forms.items()}, "weights": weights, "take": take,
                          "extrapolation": ref_extra, "growth_check": growth_check, "rejected": ref_obj.rejected,
                          "heldout_errors": errors, "n_heldout": n_out,
                          "weight_rule": "w_f ∝ heldout_profile_error_f^(-n_heldout)"},
        "gaps": {}, "skipped": skipped, "failures": failures,
    }
    e_point_rows = ref_obj.e_samples()
    e_point = float(np.median(e_point_rows))
    for key in sorted(counts):
        if key == reference:
            continue
        sub = df[keys == key].reset_index(drop=True)
        say(f"gap law for {key} ({len(sub)} runs) against {reference}")
        base, base_note = _base_of((contexts.get(key) or {}).get("base"), sub)
        paired = _paired_reference(sub, ref_df)
        inputs = dict(n_params=sub["n_params"].to_numpy(float), n_tokens=sub["n_tokens"].to_numpy(float),
                      ratio=sub["ratio"].to_numpy(float))
        ref_samples = ref_obj.predict_samples(**inputs)
        ref_point = np.nanmedian(ref_samples, axis=0)
        obs = gapfit.GapObservations(
            u=np.log(sub["n_layer"].to_numpy(float) / base[1]), v=np.log(sub["n_embd"].to_numpy(float) / base[0]),
            loss=sub["loss"].to_numpy(float), ref_loss=paired, levels=scale_levels(sub["n_params"].to_numpy(float)))
        try:
            g = gapfit.fit_gap(obs, e_point, ref_point, e_point_rows, ref_samples, sigma, seed=seed)
        except CpPlanError as exc:
            out["skipped"][key] = f"gap law not fitted: {exc}"
            continue
        g["base"] = list(base)
        g["base_note"] = base_note
        warn = []
        if g["n_below_e"]:
            warn.append(f"{g['n_below_e']} of the {key} runs lie below the reference's irreducible loss E and were "
                        "left out of its gap: the gap rests on the others")
        if g["n_collapsed_samples"] > 0.05 * len(g["samples"]):
            warn.append(f"{g['n_collapsed_samples']} of {len(g['samples'])} {key} gap samples had too few runs above "
                        "their E and repeat the point fit: the interval is too narrow")
        if g["n_sizes"] < 2:
            warn.append(f"the {key} gap is measured at one size only: its growth with depth is taken from that "
                        f"size's shapes, untested across scale; train {key} at a second size")
        if base_note != "the runs' base shape":
            warn.append(base_note)
        g["warnings"] = warn
        out["gaps"][key] = g
    return out


def _scale_facts(ref_df) -> dict:
    """The reference runs' largest P (and its ln), median tokens per parameter and trained N:L range: what
    the growth check (:meth:`ReferenceLaw._grows_beyond_runs`) and the extrapolation term share."""
    p = ref_df["n_params"].to_numpy(float)
    return {"log_p_max": float(np.log(p.max())), "n_params_max": float(p.max()),
            "tokens_per_param": float(np.median(ref_df["n_tokens"].to_numpy(float) / p)),
            "ratio_range": [float(ref_df["ratio"].min()), float(ref_df["ratio"].max())]}


def _reference_extrapolation(ref: ReferenceLaw, facts: dict, seed: int) -> dict:
    """The reference's extrapolation term (planner.fit.extrapolation): the largest run's ln P,
    the optimum N:L and the penalty's curvature there, the reducible loss at the optimum, and three
    Student-t draws per sample (``facts``: :func:`_scale_facts`)."""
    log_p_max, p_max, tpp = facts["log_p_max"], facts["n_params_max"], facts["tokens_per_param"]
    w = np.linspace(-4.0, 4.0, 81)
    r_lo, r_hi = facts["ratio_range"]
    centre = math.log(math.sqrt(r_lo * r_hi))
    grid = np.exp(centre + w)
    with np.errstate(all="ignore"):
        s = ref.predict_samples(n_params=np.full(w.size, p_max), n_tokens=np.full(w.size, tpp * p_max), ratio=grid)
        red = np.nanmedian(s - ref.e_samples()[:, None], axis=0)
    ln_red = np.log(np.where(red > 0, red, np.nan))
    ok = np.isfinite(ln_red) & (np.log(grid) >= math.log(r_lo)) & (np.log(grid) <= math.log(r_hi))
    i = int(np.nanargmin(np.where(ok, ln_red, np.inf))) if ok.any() else w.size // 2
    opt = float(np.log(grid[i]))
    j = np.clip([i - 10, i, i + 10], 0, w.size - 1)  # ±1 in ln N:L
    curv = float((ln_red[j[0]] + ln_red[j[2]]) / 2 - ln_red[j[1]]) if np.isfinite(ln_red[j]).all() else 0.0
    curv = max(curv, 0.005)
    rng = np.random.default_rng(seed + 7919)
    z = extrapolation.student_t(rng, extrapolation.REF_T_DOF, (ref.n_samples, 3))
    reducible_at_max = float(np.nanmin(np.where(ok, red, np.nan))) if ok.any() else float(np.nanmedian(red))
    return {"log_p_max": log_p_max, "log_r_center": opt, "curvature": curv,
            "reducible_at_max": reducible_at_max,
            "kappa_level": extrapolation.REF_KAPPA_LEVEL, "kappa_opt": extrapolation.REF_KAPPA_OPT,
            "kappa_curv": extrapolation.REF_KAPPA_CURV, "dof": extrapolation.REF_T_DOF, "z": z.tolist()}


def build_laws(data: dict) -> dict[str, PlanLaw]:
    """Law objects from :func:`fit_plan_laws` output (as stored in the cache)."""
    if not isinstance(data, dict) or data.get("format") != PLAN_LAWS_FORMAT:
        raise CpPlanError("the laws cache holds no planner laws of this version; refit (recommend --refit)")
    rf = data["reference_fit"]
    forms = {f: FitResult.from_json(v) for f, v in rf["forms"].items()}
    ref = ReferenceLaw(data["reference"], forms, rf["weights"], {f: int(v) for f, v in rf["take"].items()},
                       sigma_loss=float(data["noise"]["sigma_loss"]), growth_check=rf.get("growth_check"))
    ref.extra = rf.get("extrapolation")
    laws: dict[str, PlanLaw] = {data["reference"]: ref}
    for key, g in (data.get("gaps") or {}).items():
        laws[key] = GapLaw(key, ref, g, tuple(g["base"]))
    return laws
