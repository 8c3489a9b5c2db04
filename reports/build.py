"""From a run database, fitted laws and a plan to the report page.

:func:`build_report` reads the runs and coordinate checks, evaluates the laws into the frames the
figures draw (:func:`shape_curves`, :func:`compute_curves`, :func:`savings_frame`) and hands
everything to :func:`reports.page.render_report`. Law-side failures (a parameterization without a
law, a compute frontier that cannot be fitted) become notes on the page, not errors: the report
shows what the database supports.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from planner.errors import CpPlanError
from reports import analysis as an

CURVE_POINTS = 80
REFERENCE = "completep"
BASELINES = ("mup", "sp")
COMPUTE_BOOTSTRAP = 100


def keyed(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs with ``parameterization`` replaced by the law key (``depth-alpha:0.75`` for a
    depth-α other than the presets), so runs, laws and colours line up."""
    from planner.lawcache import law_key

    if runs is None or runs.empty or "parameterization" not in runs:
        return runs
    out = runs.copy()
    alpha = out["alpha"] if "alpha" in out else pd.Series([None] * len(out), index=out.index)
    # imported runs may not say: keep them visible under one name instead of dropping them
    out["parameterization"] = ["unspecified" if p is None or (isinstance(p, float) and math.isnan(p)) or p == ""
                               else law_key(p, a) for p, a in zip(out["parameterization"], alpha)]
    return out


def _median_tpp(group: pd.DataFrame) -> float:
    tpp = pd.to_numeric(group["n_tokens"], errors="coerce") / pd.to_numeric(group["n_params"], errors="coerce")
    tpp = tpp[np.isfinite(tpp) & (tpp > 0)]
    return float(tpp.median()) if len(tpp) else float("nan")


def shape_curves(shape_runs: pd.DataFrame, laws: dict, context: dict | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The shape law of each parameterization evaluated at each scale of the shape sweeps.

    ``shape_runs`` carries ``scale_params`` (:func:`reports.analysis.scale_groups`) and ``ratio``.
    At scale P the law is evaluated at n_params = P, n_tokens = (median tokens/param of that
    scale's runs) × P, over a log grid of N:L spanning the runs' N:L at that scale, clipped to the
    N:L range the law was fitted on (``context[key]['ratio_min'/'ratio_max']``): the law is not
    drawn where it would extrapolate in shape.
    """
    frames, notes = [], []
    context = context or {}
    for p, group in shape_runs.groupby("scale_params", sort=True):
        tpp = _median_tpp(group)
        if not math.isfinite(tpp):
            continue
        lo, hi = float(group["ratio"].min()), float(group["ratio"].max())
        for key, law in laws.items():
            ctx = context.get(key) or {}
            c_lo, c_hi = ctx.get("ratio_min"), ctx.get("ratio_max")
            r_lo = max(lo, c_lo) if c_lo else lo
            r_hi = min(hi, c_hi) if c_hi else hi
            if not r_hi > r_lo:
                continue
            ratio = np.geomspace(r_lo, r_hi, CURVE_POINTS)
            try:
                mean, low, high = law.predict(n_params=np.full(ratio.size, p),
                                              n_tokens=np.full(ratio.size, tpp * p), ratio=ratio)
            except (CpPlanError, ValueError, ArithmeticError) as exc:
                notes.append(f"shape law {key}: cannot evaluate at P={p:.3g} ({exc})")
                continue
            frames.append(pd.DataFrame({"scale_params": p, "parameterization": key, "ratio": ratio,
                                        "loss": np.asarray(mean, float), "low": np.asarray(low, float),
                                        "high": np.asarray(high, float)}))
    cols = ["scale_params", "parameterization", "ratio", "loss", "low", "high"]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)), notes


def _ratio_families(ratios: pd.Series, tol: float = 1.15) -> list[float]:
    """Distinct N:L of a sweep (geometric means of ratios within ``tol`` of each other)."""
    vals = sorted(float(r) for r in ratios if np.isfinite(r) and r > 0)
    groups: list[list[float]] = []
    for r in vals:
        if groups and r <= groups[-1][0] * tol:
            groups[-1].append(r)
        else:
            groups.append([r])
    return [float(np.exp(np.mean(np.log(g)))) for g in groups]


def _typical(group: pd.DataFrame, column: str, default: int) -> int:
    if column not in group:
        return default
    v = pd.to_numeric(group[column], errors="coerce").dropna()
    return int(v.median()) if len(v) else default


def savings_frame(shape_runs: pd.DataFrame, laws: dict, reference: str = REFERENCE,
                  baselines=BASELINES) -> tuple[pd.DataFrame, list[str]]:
    """FLOP savings of ``reference`` over each baseline at each trained scale and each N:L the
    reference was trained at (``planner.savings.flop_savings``: same loss, same N:L family, same
    tokens per parameter; FLOPs with the runs' vocabulary and context length)."""
    from planner.savings import flop_savings
    from planner.recommend import DEFAULT_SEQ_LEN, DEFAULT_VOCAB_SIZE

    cols = ["scale_params", "scale", "target", "baseline", "ratio", "saved", "low", "high", "saved_6nd",
            "reachable"]
    notes: list[str] = []
    if reference not in laws:
        return pd.DataFrame(columns=cols), notes
    rows = []
    ok_runs = shape_runs[an.finite_loss(shape_runs)]
    base_min = {b: float(pd.to_numeric(g["n_params"], errors="coerce").min())
                for b, g in ok_runs.groupby("parameterization")}
    for p, group in shape_runs.groupby("scale_params", sort=True):
        ref_runs = group[(group["parameterization"] == reference) & an.finite_loss(group)]
        tpp = _median_tpp(group)
        if ref_runs.empty or not math.isfinite(tpp):
            continue
        vocab = _typical(group, "vocab_size", DEFAULT_VOCAB_SIZE)
        seq_len = _typical(group, "seq_len", DEFAULT_SEQ_LEN)
        for base in baselines:
            if base not in laws:
                continue
            for ratio in _ratio_families(ref_runs["ratio"]):
                try:
                    s = flop_savings(laws[reference], laws[base], float(p), ratio, tokens_per_param=tpp,
                                     vocab_size=vocab, seq_len=seq_len, reference=reference, other=base,
                                     other_min_n_params=base_min.get(base))
                except CpPlanError as exc:
                    notes.append(f"savings vs {base} at P={p:.3g}, N:L {ratio:.3g}: {exc}")
                    continue
                rows.append({"scale_params": float(p), "scale": f"P ≈ {an.scale_label(p)}", "target": reference, "baseline": base,
                             "ratio": ratio, "saved": s.fraction, "low": s.low, "high": s.high,
                             "saved_6nd": s.fraction_6nd, "reachable": s.reachable})
    df = pd.DataFrame(rows, columns=cols)
    if len(df) and not df["reachable"].all():
        notes.append("some savings are bounds: the baseline's law never reaches the reference's loss "
                      "within 1000× the parameters (column 'reachable')")
    return df, notes


def _fit_table_row(res, name: str, ratio: float | None) -> dict:
    v, lo, hi = res.values, res.ci_low, res.ci_high
    row = {"parameterization": name, "N:L": ratio, "n": res.n}
    for k in ("E", "A", "a"):
        if k in v:
            row[k] = v[k]
    if "a" in v:
        row["a interval"] = (f"[{lo['a']:.3g}, {hi['a']:.3g}]"
                             if math.isfinite(lo["a"]) and math.isfinite(hi["a"]) else "—")
    row["held-out error"] = res.heldout_error
    row["warnings"] = "; ".join(res.warnings)
    return row


def _evaluate(res, flops: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    grid = np.geomspace(float(flops.min()) / 1.5, float(flops.max()) * 1.5, CURVE_POINTS)
    mean, low, high = res.predict(flops=grid)
    return grid, np.asarray(mean, float), np.asarray(low, float), np.asarray(high, float)


def compute_curves(runs: pd.DataFrame, *, bootstrap: int = COMPUTE_BOOTSTRAP,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The ``compute`` law L(C) = E + A·C^(−a) (``planner.fitter``), fitted here on the finished
    runs outside LR sweeps and coordinate checks, two ways:

    - per parameterization over all its shapes (``kind`` 'frontier'): with the law's
      ``frontier`` option only the lowest loss at each FLOP level enters, so this is the
      compute-efficient frontier of that parameterization;
    - per parameterization and N:L family (``kind`` 'ratio', ``planner.fitter.fit_groups``): how
      each shape family scales with compute.

    Returns (curves: parameterization, kind, ratio, label, flops, loss, low, high; a table of the
    fitted values; notes on groups that could not be fitted).
    """
    from planner.fitter import fit_groups, fit_law, group_keys

    cols = ["parameterization", "kind", "ratio", "label", "flops", "loss", "low", "high"]
    notes: list[str] = []
    frames, table = [], []
    pts = runs[~runs["sweep"].astype(str).isin(["lr", "coord"])] if "sweep" in runs else runs
    pts = pts[an.finite_loss(pts)] if len(pts) else pts
    pts = pts[np.isfinite(pd.to_numeric(pts["flops"], errors="coerce"))] if len(pts) else pts
    for name in an.sorted_params(pts["parameterization"]) if len(pts) else []:
        sub = pts[pts["parameterization"] == name].reset_index(drop=True)
        # without width/depth columns the compute law groups by parameterization only
        flat = sub.drop(columns=[c for c in ("n_embd", "n_layer", "alpha") if c in sub])
        try:
            res = fit_law("compute", flat, bootstrap=bootstrap, seed=seed)
            grid, mean, low, high = _evaluate(res, sub["flops"])
            label = f"{an.param_label(name)} frontier (a = {res.values['a']:.3g})"
            frames.append(pd.DataFrame({"parameterization": name, "kind": "frontier", "ratio": np.nan,
                                        "label": label, "flops": grid, "loss": mean, "low": low, "high": high}))
            table.append(_fit_table_row(res, an.param_label(name), None))
        except CpPlanError as exc:
            notes.append(f"compute frontier of {an.param_label(name)} not fitted: {exc}")
        if not {"n_embd", "n_layer"} <= set(sub.columns) or sub[["n_embd", "n_layer"]].isna().any().any():
            continue
        try:
            fits, skipped = fit_groups("compute", sub.drop(columns=["alpha"], errors="ignore"),
                                       bootstrap=bootstrap, seed=seed)
        except CpPlanError:
            continue  # no N:L family with enough scales: the frontier above says enough
        keys = np.array(group_keys("compute", sub.drop(columns=["alpha"], errors="ignore")))
        for key, res in sorted(fits.items()):
            fam = sub[keys == key]
            ratio = float(np.exp(np.log(fam["n_embd"] / fam["n_layer"]).mean()))
            grid, mean, low, high = _evaluate(res, fam["flops"])
            frames.append(pd.DataFrame({"parameterization": name, "kind": "ratio", "ratio": ratio,
                                        "label": f"N:L {ratio:.3g}", "flops": grid, "loss": mean,
                                        "low": low, "high": high}))
            table.append(_fit_table_row(res, an.param_label(name), ratio))
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
    return curves, pd.DataFrame(table), notes


def plan_curves(plan, laws: dict, context: dict | None = None,
                points: int = CURVE_POINTS) -> tuple[pd.DataFrame, list[str]]:
    """Each parameterization's shape law at the plan's target: loss vs N:L at the target's
    non-embedding P and tokens (tokens per parameter × P), with the law's interval.

    The grid is log-spaced over the N:L range the plan searched for that parameterization's band
    (its trained range, clipped to shapes a P-parameter model can have), else the trained range
    from ``context``. A parameterization whose law is missing or fails to predict is left out
    with a note, so the figure still shows the others."""
    d = plan.to_dict() if hasattr(plan, "to_dict") else dict(plan or {})
    target = d.get("target") or {}
    p = target.get("n_params_used") or target.get("n_params") or d.get("n_params")
    tpp = target.get("tokens_per_param")
    notes: list[str] = []
    if not p or not tpp or not laws:
        return pd.DataFrame(columns=["parameterization", "ratio", "loss", "low", "high"]), notes
    frames = []
    for key, law in laws.items():
        band = (d.get("band") or {}).get(key) or {}
        ctx = (context or {}).get(key) or {}
        rng = band.get("searched") or [ctx.get("ratio_min"), ctx.get("ratio_max")]
        try:
            lo, hi = float(rng[0]), float(rng[1])
        except (TypeError, ValueError, IndexError):
            notes.append(f"plan figure: no N:L range for {an.param_label(key)}'s law; left out")
            continue
        if not (lo > 0 and hi >= lo):
            notes.append(f"plan figure: no N:L range for {an.param_label(key)}'s law; left out")
            continue
        grid = np.logspace(math.log10(lo), math.log10(hi), points) if hi > lo else np.array([lo])
        n = len(grid)
        try:
            mean, low, high = law.predict(n_params=np.full(n, float(p)), n_tokens=np.full(n, float(tpp) * float(p)),
                                          ratio=grid)
        except (CpPlanError, ValueError, TypeError, FloatingPointError) as exc:
            notes.append(f"plan figure: {an.param_label(key)}'s law could not be evaluated ({exc}); left out")
            continue
        mean = np.asarray(mean, float)
        if not np.isfinite(mean).any():
            notes.append(f"plan figure: {an.param_label(key)}'s law predicts no finite loss at the target; left out")
            continue
        frames.append(pd.DataFrame({"parameterization": key, "ratio": grid, "loss": mean,
                                    "low": np.asarray(low, float) if low is not None else np.nan,
                                    "high": np.asarray(high, float) if high is not None else np.nan}))
    if not frames:
        return pd.DataFrame(columns=["parameterization", "ratio", "loss", "low", "high"]), notes
    return pd.concat(frames, ignore_index=True), notes


def report_version() -> str:
    """The code generating the report: the checkout's short commit, else the package version."""
    from planner.version import code_version

    v = code_version()
    return v[:12] + ("+dirty" if v.endswith("+dirty") else "") if not v.startswith(("cp-plan", "unknown")) else v


def build_report(db, laws=None, plan=None, *, tolerance: float = 0.01, notes: list[str] | None = None,
                 meta: dict | None = None) -> str:
    """The report page for run database ``db`` (a :class:`planner.db.RunDB`).

    ``laws``: a :class:`planner.lawcache.LawSet` (per-parameterization shape laws and the context
    of their runs) or None; ``plan``: a :class:`planner.recommend.Plan` or None (the ``compute``
    frontiers are fitted from the runs here: they are cheap and no cache holds them); ``notes``: messages to show at the top (e.g. why the laws are missing).
    """
    runs = keyed(db.runs(statuses=None))
    coord = db.coord_rows()
    notes = list(notes or [])
    from planner.lawcache import display_path

    meta = {"db": display_path(db.display) if "://" not in str(db.display) else db.display,
            "db_fingerprint": db.fingerprint(), "report_version": report_version(),
            **(meta or {})}

    shape = an.with_ratio(an.of_sweep(runs, "shape"))
    shape["scale_params"] = an.shape_scales(shape) if len(shape) else pd.Series(dtype=float)
    curves = savings = None
    if laws is not None and laws.laws:
        meta.setdefault("laws", f"shape laws for {', '.join(map(an.param_label, an.sorted_params(laws.laws)))} "
                                f"({laws.meta.get('origin', '?')}: {laws.meta.get('file') or '—'})")
        for key, why in (laws.meta.get("skipped") or {}).items():
            notes.append(f"no shape law for {an.param_label(key)}: {why}")
        notes.extend(getattr(laws, "notes", []) or [])
        if len(shape):
            curves, n1 = shape_curves(shape, laws.laws, laws.context)
            savings, n2 = savings_frame(shape, laws.laws)
            notes += n1 + n2
        if savings is None or savings.empty:
            meta.setdefault("savings_missing", "The laws hold no CompleteP law together with a μP or SP "
                            "law at a scale the shape sweeps trained.")
    else:
        meta.setdefault("laws", "none (no shape law could be loaded or fitted)")
    frontier, fits, n3 = compute_curves(runs) if len(runs) else (None, None, [])
    notes += n3
    at_target = None
    if plan is not None and laws is not None and laws.laws:
        at_target, n4 = plan_curves(plan, laws.laws, laws.context)
        notes += n4
    from reports.page import render_report

    return render_report(runs, coord, shape_curves=curves, compute_curves=frontier, compute_fits=fits,
                         savings=savings, plan=plan, plan_curves=at_target, notes=notes, meta=meta,
                         tolerance=tolerance)
