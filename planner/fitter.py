"""Scaling laws fitted to runs: the public entry point of the fitter (no torch, no plotly).

    from planner.fitter import fit_law, fit_groups, FitResult, LAWS
    res = fit_law("chinchilla", df, bootstrap=1000, seed=0, exclude_highest_loss=5)

Laws (each cites its source in its module):
- ``chinchilla``: L = E + A/N^α + B/D^β, Huber δ = 1e-3 on ln L (Hoffmann et al. 2022;
  Besiroglu et al. 2024) — :mod:`planner.fit.chinchilla`;
- ``compute``: L(C) = E + A·C^(−a), the compute frontier of one group — :mod:`planner.fit.compute`;
- ``shape``: loss over non-embedding params P, tokens D and N:L for one parameterization, the
  form chosen by held-out error — :mod:`planner.fit.shape`;
- ``isoflop``: Chinchilla approach 2, N* = n_coef·C^a and D* = d_coef·C^b from per-budget
  parabola minima — :mod:`planner.fit.isoflop`.

``df`` is a pandas DataFrame with the run database's canonical columns (``n_params``,
``n_tokens``, ``flops``, ``loss``, ``n_embd``, ``n_layer``, ``parameterization``, ...). A law is
fitted to one group of runs; :func:`fit_groups` splits a frame into the groups a law is
defined on (per parameterization; ``compute`` also per N:L) and fits each.
"""

from __future__ import annotations

import math

import numpy as np

from planner.errors import CpPlanError
from planner.fit import common
from planner.fit.chinchilla import ChinchillaLaw
from planner.fit.compute import ComputeLaw
from planner.fit.isoflop import IsoflopLaw
from planner.fit.result import FitResult, register_law
from planner.fit.shape import ShapeLaw

LAWS = {law.name: law for law in (ChinchillaLaw(), ComputeLaw(), ShapeLaw(), IsoflopLaw())}
for _law_obj in LAWS.values():
    register_law(_law_obj)

__all__ = ["LAWS", "FitResult", "fit_law", "fit_groups", "group_keys"]


def _law(name: str):
    if name not in LAWS:
        raise CpPlanError(f"unknown law {name!r}; choose one of {', '.join(LAWS)}")
    return LAWS[name]


def _check_opts(name: str, opts: dict) -> None:
    """Unknown keyword options are refused (not ignored), naming the ones the law takes."""
    import inspect

    allowed = [p for p in inspect.signature(_law(name).fit).parameters if p not in ("df", "bootstrap", "seed")]
    unknown = sorted(set(opts) - set(allowed) - {"exclude_highest_loss"})
    if unknown:
        raise CpPlanError(f"unknown option(s) {', '.join(unknown)} for the {name} law; it takes "
                          f"{', '.join(allowed + ['exclude_highest_loss'])}")


_param_key = common.param_key


def _ratio_groups(ratio: np.ndarray, tol: float) -> tuple[np.ndarray, list[str]]:
    """Cluster N:L values whose neighbours differ by less than a factor (1 + tol); each cluster
    is named by its median ratio (3 significant digits)."""
    lr = np.log(ratio)
    order = np.argsort(lr, kind="stable")
    labels = np.empty(ratio.size, dtype=int)
    g = 0
    for j, i in enumerate(order):
        if j and lr[i] - lr[order[j - 1]] > math.log1p(tol):
            g += 1
        labels[i] = g
    names = [f"ratio={float(np.median(ratio[labels == k])):.3g}" for k in range(g + 1)]
    return labels, names


def group_keys(law: str, df, ratio_tol: float = 0.15, split_ratio: bool = True) -> list[str]:
    """The group each run belongs to for ``law``: its parameterization (with α for a custom
    depth-α), and for ``compute`` also its N:L cluster (ratios within ``ratio_tol`` of a
    neighbour share a cluster, so rounding of widths and depths does not split a family)."""
    _law(law)
    n = len(df)
    if "parameterization" in df.columns:
        alphas = df["alpha"].tolist() if "alpha" in df.columns else [None] * n
        keys = [_param_key(p, a) for p, a in zip(df["parameterization"].tolist(), alphas)]
    else:
        keys = ["all"] * n
    if law == "compute" and split_ratio and {"n_embd", "n_layer"} <= set(df.columns):
        ratio = df["n_embd"].to_numpy(dtype=float, na_value=np.nan) / df["n_layer"].to_numpy(dtype=float, na_value=np.nan)
        if np.isfinite(ratio).all() and (ratio > 0).all() and n:
            out = list(keys)
            for k in sorted(set(keys)):
                idx = [i for i, kk in enumerate(keys) if kk == k]
                labels, names = _ratio_groups(ratio[idx], ratio_tol)
                for i, lab in zip(idx, labels):
                    out[i] = f"{k}/{names[lab]}"
            keys = out
    return keys


def _exclude_highest(df, k) -> tuple[object, dict]:
    """Drop the ``k`` highest-loss runs (Epoch drop Chinchilla's 5 highest: Besiroglu et al. 2024 §2)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise CpPlanError(f"exclude_highest_loss={k!r} must be a non-negative integer")
    if k == 0:
        return df, {}
    if "loss" not in df.columns:
        raise CpPlanError("--exclude-highest-loss needs a loss column")
    if k >= len(df) - 1:
        raise CpPlanError(f"--exclude-highest-loss {k} would leave {max(len(df) - k, 0)} of {len(df)} runs; use a smaller K")
    loss = df["loss"].to_numpy(dtype=float, na_value=np.nan)
    order = np.argsort(-np.where(np.isfinite(loss), loss, -np.inf), kind="stable")[:k]
    dropped = {"excluded_highest_loss": int(k), "excluded_losses": [float(loss[i]) for i in order]}
    if "run_id" in df.columns:
        dropped["excluded_run_ids"] = [str(v) for v in df["run_id"].to_numpy()[order]]
    return df.drop(index=df.index[order]).reset_index(drop=True), dropped


MAX_BOOTSTRAP = 10_000  # more refits than any interval here needs (200-2000 is usual); bounds the work


def check_bootstrap(n) -> int:
    """``n`` bootstrap refits, validated: a whole number in [0, MAX_BOOTSTRAP]."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_BOOTSTRAP:
        raise CpPlanError(f"--bootstrap {n!r} must be a whole number from 0 to {MAX_BOOTSTRAP}, e.g. 200 "
                          "(0: asymptotic intervals)")
    return n


def fit_law(law: str, df, bootstrap: int = 0, seed: int = 0, **opts) -> FitResult:
    """Fit ``law`` to the runs in ``df`` (one group: see :func:`group_keys`).

    ``bootstrap`` refits give standard errors, percentile intervals and prediction intervals;
    results are deterministic given ``seed``. Options: ``exclude_highest_loss`` (drop the K
    highest-loss runs first, as Epoch do), ``level`` (interval level, 0.95), ``delta`` (Huber
    scale; None = least squares), and those documented on each law's ``fit``. Raises
    CpPlanError naming the problem and the fix.
    """
    obj = _law(law)
    _check_opts(law, opts)
    if df is None or not hasattr(df, "columns"):
        raise CpPlanError(f"fit_law needs a pandas DataFrame of runs, got {type(df).__name__}")
    if len(df) == 0:
        raise CpPlanError(f"no runs to fit the {law} law to; train or import runs, or loosen --where")
    if len(df) == 1:
        raise CpPlanError(f"only 1 run to fit the {law} law to; a law needs several runs (train more, or loosen --where)")
    keys = sorted(set(group_keys(law, df)))
    if len(keys) > 1:
        raise CpPlanError(
            f"the runs span {len(keys)} groups ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}); "
            f"a {law} law is fitted to one: filter them (--where parameterization=...) or use fit_groups")
    df, excluded = _exclude_highest(df, opts.pop("exclude_highest_loss", 0))
    res = obj.fit(df, bootstrap=bootstrap, seed=seed, **opts)
    meta = dict(res.meta)
    meta.update(excluded)
    meta.setdefault("law", law)
    meta["group"] = keys[0]
    if "parameterization" in df.columns and df["parameterization"].notna().any():
        meta["parameterization"] = str(df["parameterization"].dropna().iloc[0])
    return _with_meta(res, meta)


def fit_groups(law: str, df, bootstrap: int = 0, seed: int = 0, ratio_tol: float = 0.15, split_ratio: bool = True,
               **opts) -> tuple[dict[str, FitResult], dict[str, str]]:
    """Fit ``law`` to each group of ``df`` (:func:`group_keys`); ``exclude_highest_loss`` applies
    within each group; ``split_ratio=False`` keeps every N:L of a parameterization in one
    ``compute`` group (pooled shapes). Returns (results by group, reasons by group for the groups
    that could not be fitted). Raises when none could."""
    _check_opts(law, opts)
    if df is None or len(df) == 0:
        raise CpPlanError(f"no runs to fit the {law} law to; train or import runs, or loosen --where")
    if len(df) == 1:
        raise CpPlanError(f"only 1 run to fit the {law} law to; a law needs several runs (train more, or loosen --where)")
    keys = np.array(group_keys(law, df, ratio_tol, split_ratio))
    exclude = opts.pop("exclude_highest_loss", 0)
    results, skipped = {}, {}
    for key in sorted(set(keys)):
        sub = df[keys == key].reset_index(drop=True)
        try:
            sub, excluded = _exclude_highest(sub, exclude)
            res = _law(law).fit(sub, bootstrap=bootstrap, seed=seed, **opts)
        except CpPlanError as exc:
            skipped[key] = str(exc)
            continue
        meta = dict(res.meta)
        meta.update(excluded)
        meta.setdefault("law", law)
        meta["group"] = key
        if "parameterization" in sub.columns and sub["parameterization"].notna().any():
            meta["parameterization"] = str(sub["parameterization"].dropna().iloc[0])
        results[key] = _with_meta(res, meta)
    if not results:
        # one line: distinct reasons once each (groups often fail alike), the groups named
        by_reason: dict[str, list[str]] = {}
        for k, v in skipped.items():
            by_reason.setdefault(v, []).append(k)
        parts = [f"{', '.join(ks[:3])}{f' and {len(ks) - 3} more' if len(ks) > 3 else ''}: {why}"
                 for why, ks in list(by_reason.items())[:2]]
        more = f"; and {len(by_reason) - 2} other reasons" if len(by_reason) > 2 else ""
        raise CpPlanError(f"could not fit the {law} law to any of {len(skipped)} group(s) of runs ({'; '.join(parts)}{more})")
    return results, skipped


def _with_meta(res: FitResult, meta: dict) -> FitResult:
    from dataclasses import replace

    return replace(res, meta=meta)


def fit_runs(law: str, df, bootstrap: int = 0, seed: int = 0, *, joint: bool | None = None,
             split_ratio: bool = True, exclude_highest_loss: int = 0) -> tuple[dict[str, FitResult], dict[str, str]]:
    """What ``cp-plan fit`` fits: the ``shape`` law jointly across parameterizations (shared E
    and exponent, multiplicative N:L penalty: :mod:`planner.fit.shape_joint`) when asked
    (``joint=True``), or by default when the runs hold two or more parameterizations and no
    runs are excluded; otherwise one law per group (:func:`fit_groups`). Returns (results by
    group, reasons by group for the groups that could not be fitted)."""
    if joint is not None and law != "shape":
        raise CpPlanError(f"--joint/--separate apply to --law shape only, not {law}; leave them out")
    if law == "shape" and joint is not False and exclude_highest_loss == 0 and (
            joint or df["parameterization"].nunique() >= 2):
        from planner.fit.shape_joint import fit_shape_joint

        skipped: dict[str, str] = {}
        return fit_shape_joint(df, bootstrap=bootstrap, seed=seed, skipped=skipped), skipped
    return fit_groups(law, df, bootstrap=bootstrap, seed=seed, split_ratio=split_ratio,
                      exclude_highest_loss=exclude_highest_loss)
