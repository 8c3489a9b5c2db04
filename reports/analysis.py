"""Numbers behind the report's figures, as pure functions over run frames (no plotly).

Every function takes pandas DataFrames with the run database's canonical columns (``run_id``,
``status``, ``parameterization``, ``n_embd``, ``n_layer``, ``n_params``, ``n_tokens``, ``flops``,
``loss``, ``lr``, ``sweep`` ...) and returns frames or plain dicts, so the reproduction summary can
quote the same numbers the figures show.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Display order and names; unknown parameterizations sort after these, by name.
PARAM_ORDER = ("sp", "mup", "alpha0.5", "depth-alpha", "completep")
PARAM_LABELS = {
    "sp": "SP",
    "mup": "μP",
    "alpha0.5": "depth-μP (α = 0.5)",
    "depth-alpha": "depth-α",
    "completep": "CompleteP (α = 1)",
}


def param_label(name: str, alpha: float | None = None) -> str:
    """Human name of a parameterization or law key (``depth-alpha:0.75`` shows its α)."""
    name = str(name)
    if name.startswith("depth-alpha:"):
        name, alpha = "depth-alpha", float(name.split(":", 1)[1])
    if name == "depth-alpha" and alpha is not None and not _isnan(alpha):
        return f"depth-α (α = {alpha:g})"
    return PARAM_LABELS.get(name, name)


def param_sort_key(name: str) -> tuple[int, str]:
    name = str(name)
    base = name.split(":", 1)[0]
    return (PARAM_ORDER.index(base) if base in PARAM_ORDER else len(PARAM_ORDER), name)


def sorted_params(names) -> list[str]:
    return sorted({str(n) for n in names if n is not None and not _isnan(n)}, key=param_sort_key)


def _isnan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def with_ratio(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``df`` with ``ratio`` = N:L = n_embd / n_layer (NaN where a shape is missing)."""
    out = df.copy()
    n = pd.to_numeric(out.get("n_embd"), errors="coerce") if "n_embd" in out else np.nan
    l = pd.to_numeric(out.get("n_layer"), errors="coerce") if "n_layer" in out else np.nan
    out["ratio"] = n / l
    return out


def finite_loss(df: pd.DataFrame) -> pd.Series:
    """Rows that count as measured points: status 'done' and a finite loss."""
    loss = pd.to_numeric(df["loss"], errors="coerce") if "loss" in df else pd.Series(np.nan, index=df.index)
    ok = np.isfinite(loss.to_numpy(dtype=float))
    if "status" in df:
        ok &= (df["status"].astype(str) == "done").to_numpy()
    return pd.Series(ok, index=df.index)


def of_sweep(runs: pd.DataFrame, sweep: str) -> pd.DataFrame:
    """Runs recorded by one sweep kind ('shape', 'lr', ...); empty when the column is missing."""
    if runs is None or runs.empty or "sweep" not in runs:
        return pd.DataFrame(columns=list(runs.columns) if runs is not None else [])
    return runs[runs["sweep"].astype(str) == sweep].copy()


def scale_groups(n_params: pd.Series, tol: float = 1.5) -> pd.Series:
    """Label each run with the non-embedding scale P of its shape sweep.

    A shape sweep at a target P realizes slightly different P per shape (widths rounded to the
    head size, depths to integers), so runs are clustered on log P: sorted, a new cluster starts
    where P exceeds the cluster's smallest P by more than ``tol`` times. Each run gets its cluster's
    geometric-mean P rounded to 3 significant digits (the label the figures show).
    """
    p = pd.to_numeric(n_params, errors="coerce")
    out = pd.Series(np.nan, index=p.index, dtype=float)
    valid = p[np.isfinite(p) & (p > 0)].sort_values()
    if valid.empty:
        return out
    clusters: list[list] = []
    start = None
    for idx, value in valid.items():
        if start is None or value > start * tol:
            clusters.append([])
            start = value
        clusters[-1].append(idx)
    for members in clusters:
        centre = float(np.exp(np.log(valid[members].to_numpy()).mean()))
        out[members] = float(f"{centre:.3g}")
    return out


def shape_scales(shape: pd.DataFrame, tol: float = 1.5) -> pd.Series:
    """Scale label P of each shape-sweep run: one label per sweep (``sweep_id``) when recorded,
    since one shape sweep targets one P and its rounded shapes can realize P up to ~1.6× apart;
    the geometric mean of the sweep's realized P, to 3 significant digits. Runs without a
    sweep id fall back to :func:`scale_groups`."""
    out = scale_groups(shape["n_params"], tol) if "n_params" in shape else pd.Series(np.nan, index=shape.index)
    if "sweep_id" not in shape:
        return out
    p = pd.to_numeric(shape["n_params"], errors="coerce")
    for sweep_id, idx in shape.groupby(shape["sweep_id"].astype("string"), dropna=True).groups.items():
        vals = p[idx]
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if len(vals):
            out[idx] = float(f"{float(np.exp(np.log(vals.to_numpy()).mean())):.3g}")
    return out


def scale_label(n_params: float) -> str:
    """1.5e9 -> '1.5B', 2.08e5 -> '208k'."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n_params >= div:
            return f"{n_params / div:.3g}{unit}"
    return f"{n_params:.3g}"


def band_from_curve(ratio: np.ndarray, loss: np.ndarray, tolerance: float = 0.01) -> dict | None:
    """Compute-efficient band from a loss curve over N:L at one scale (DESIGN.md).

    The band is the N:L range whose loss is within ``tolerance`` (relative) of the curve's best:
    loss ≤ (1 + tolerance) · min loss. Returns ``{ratio_lo, ratio_hi, best_ratio, best_loss,
    threshold}`` or None when no finite point exists. The band is the hull of the qualifying grid
    points; it is contiguous for the unimodal curves the shape law produces.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance={tolerance} must be a finite number ≥ 0, e.g. 0.01")
    r = np.asarray(ratio, dtype=float)
    y = np.asarray(loss, dtype=float)
    ok = np.isfinite(r) & np.isfinite(y) & (r > 0)
    if not ok.any():
        return None
    r, y = r[ok], y[ok]
    i = int(np.argmin(y))
    threshold = float(y[i] * (1.0 + tolerance))
    inside = r[y <= threshold]
    return {
        "ratio_lo": float(inside.min()),
        "ratio_hi": float(inside.max()),
        "best_ratio": float(r[i]),
        "best_loss": float(y[i]),
        "threshold": threshold,
    }


def optimal_lr(lr, loss) -> dict | None:
    """Optimal LR on a grid, interpolated: a parabola in log2(LR) through the grid minimum and its
    two neighbours (the usual μTransfer read-out, Yang et al. 2022, Fig. 1).

    Returns ``{lr_opt, loss_opt, lr_grid_best, at_edge}``. When the grid minimum lies at an end of
    the grid (or the parabola opens downward) the optimum is not bracketed: ``lr_opt`` is the grid
    value and ``at_edge`` is True, so the caller can say the grid should be widened.
    """
    x = np.log2(np.asarray(lr, dtype=float))
    y = np.asarray(loss, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None
    order = np.argsort(x[ok])
    x, y = x[ok][order], y[ok][order]
    # average duplicates (several seeds at one LR)
    ux = np.unique(x)
    uy = np.array([y[x == v].mean() for v in ux])
    i = int(np.argmin(uy))
    best = {"lr_grid_best": float(2 ** ux[i]), "loss_opt": float(uy[i])}
    if i == 0 or i == len(ux) - 1:
        return {"lr_opt": best["lr_grid_best"], "at_edge": True, **best}
    xs, ys = ux[i - 1:i + 2], uy[i - 1:i + 2]
    a, b, c = np.polyfit(xs, ys, 2)
    if not a > 0:
        return {"lr_opt": best["lr_grid_best"], "at_edge": False, **best}
    x_opt = float(np.clip(-b / (2 * a), xs[0], xs[-1]))
    return {"lr_opt": float(2 ** x_opt), "loss_opt": float(np.polyval([a, b, c], x_opt)),
            "lr_grid_best": best["lr_grid_best"], "at_edge": False}


def lr_transfer_runs(df: pd.DataFrame, axis: str, require_varying: bool = True) -> pd.DataFrame | None:
    """The runs of one parameterization's LR sweep that vary ``axis``, or None.

    Across depth ('n_layer'): the runs at the most common width, when depth takes several values
    there (the HP-transfer-across-depth experiment). Across width ('n_embd'): the runs at the most
    common depth, when width varies there. A sweep over both (depths at the base width plus widths
    at the base depth) yields both subsets. ``require_varying=False`` also returns a single-shape
    scan (the base-shape LR scan that picks η_base).
    """
    if df.empty:
        return None
    other = "n_embd" if axis == "n_layer" else "n_layer"
    at_other = df[df[other] == df[other].mode().iloc[0]]
    return at_other if at_other[axis].nunique() > 1 or not require_varying else None


def lr_transfer_table(runs: pd.DataFrame, axis: str = "n_layer", require_varying: bool = True) -> pd.DataFrame:
    """Optimal LR per (parameterization, depth or width) from LR-sweep runs (sweep='lr').

    ``axis`` is 'n_layer' (transfer across depth) or 'n_embd' (across width). Columns:
    parameterization, axis value (``n_layer`` or ``n_embd``), the other shape dimension, lr_opt,
    loss_opt, lr_grid_best, at_edge, n_points, n_failed (diverged/failed runs in the cell).
    ``require_varying=False`` keeps parameterizations whose sweep has a single shape.
    """
    if axis not in ("n_layer", "n_embd"):
        raise ValueError(f"axis={axis!r} must be 'n_layer' or 'n_embd'")
    cols = ["parameterization", axis, "other", "lr_opt", "loss_opt", "lr_grid_best", "at_edge",
            "n_points", "n_failed"]
    lr_runs = of_sweep(runs, "lr")
    rows = []
    for name in sorted_params(lr_runs.get("parameterization", [])):
        sub = lr_runs[lr_runs["parameterization"] == name]
        sub = lr_transfer_runs(sub, axis, require_varying)
        if sub is None:
            continue
        other = "n_embd" if axis == "n_layer" else "n_layer"
        for value, cell in sub.groupby(axis):
            good = cell[finite_loss(cell)]
            opt = optimal_lr(good["lr"], good["loss"]) if len(good) else None
            rows.append({
                "parameterization": name, axis: int(value), "other": int(cell[other].iloc[0]),
                "lr_opt": opt["lr_opt"] if opt else np.nan,
                "loss_opt": opt["loss_opt"] if opt else np.nan,
                "lr_grid_best": opt["lr_grid_best"] if opt else np.nan,
                "at_edge": bool(opt["at_edge"]) if opt else True,
                "n_points": int(len(good)), "n_failed": int(len(cell) - len(good)),
            })
    return pd.DataFrame(rows, columns=cols)


def lr_drift(table: pd.DataFrame, axis: str = "n_layer") -> pd.DataFrame:
    """Drift of the optimal LR from the smallest to the largest shape, per parameterization.

    ``factor`` = lr_opt(largest) / lr_opt(smallest); ``log2_factor`` is the drift in grid steps of
    a factor-2 grid (0 = perfect transfer). ``any_at_edge`` flags an optimum not bracketed by the
    grid, where the drift is a bound rather than a measurement.
    """
    cols = ["parameterization", "from", "to", "lr_from", "lr_to", "factor", "log2_factor", "any_at_edge"]
    rows = []
    for name, sub in table.groupby("parameterization", sort=False):
        sub = sub[np.isfinite(sub["lr_opt"].astype(float))].sort_values(axis)
        if len(sub) < 2:
            continue
        lo, hi = sub.iloc[0], sub.iloc[-1]
        factor = float(hi["lr_opt"] / lo["lr_opt"])
        rows.append({"parameterization": name, "from": int(lo[axis]), "to": int(hi[axis]),
                     "lr_from": float(lo["lr_opt"]), "lr_to": float(hi["lr_opt"]),
                     "factor": factor, "log2_factor": float(np.log2(factor)),
                     "any_at_edge": bool(sub["at_edge"].any())})
    return pd.DataFrame(rows, columns=cols)


def latest_coord_rows(coord: pd.DataFrame) -> pd.DataFrame:
    """Coordinate-check rows, keeping only the most recent check per (axis, parameterization).

    A check repeated later (after a fix, say) replaces the earlier one in the report instead of
    being drawn on top of it.
    """
    if coord is None or coord.empty:
        return pd.DataFrame(columns=list(coord.columns) if coord is not None else [])
    df = coord.copy()
    if "check_id" not in df:
        return df
    key = df["created_at"] if "created_at" in df else df["check_id"]
    df["_key"] = key.astype(str)
    keep = []
    for _, sub in df.groupby(["axis", "parameterization"], sort=False):
        last = sub.sort_values("_key")["check_id"].iloc[-1]
        keep.append(sub[sub["check_id"] == last])
    return pd.concat(keep).drop(columns="_key")


def coord_verdicts(coord: pd.DataFrame, stable_ratio: float = 2.0) -> pd.DataFrame:
    """Per (axis, parameterization): mean |h| of the last block at the last step, largest shape
    over smallest, and 'stable' when that ratio is within ``stable_ratio`` (either direction),
    else 'growing'/'shrinking' (the reading of Fig. 7 of Dey et al. 2025)."""
    cols = ["axis", "parameterization", "from", "to", "resid_from", "resid_to", "ratio", "verdict"]
    rows = []
    for (axis, name), sub in latest_coord_rows(coord).groupby(["axis", "parameterization"], sort=False):
        dim = "n_layer" if axis == "depth" else "n_embd"
        last = sub[sub["step"] == sub["step"].max()].groupby(dim)["resid_abs_mean"].mean().sort_index()
        if len(last) < 2:
            continue
        ratio = float(last.iloc[-1] / last.iloc[0])
        verdict = ("stable" if 1 / stable_ratio <= ratio <= stable_ratio
                   else "growing" if ratio > stable_ratio else "shrinking")
        rows.append({"axis": axis, "parameterization": name, "from": int(last.index[0]),
                     "to": int(last.index[-1]), "resid_from": float(last.iloc[0]),
                     "resid_to": float(last.iloc[-1]), "ratio": ratio, "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def distinct(df: pd.DataFrame, column: str) -> list:
    """Distinct non-null values of a column (sorted as strings); [] when the column is absent."""
    if df is None or column not in df:
        return []
    vals = df[column].dropna()
    vals = vals[vals.astype(str).str.len() > 0]
    return sorted(vals.unique().tolist(), key=str)


def tokens_per_param(df: pd.DataFrame) -> list[float]:
    """Distinct tokens-per-parameter values (n_tokens / n_params, 2 significant digits)."""
    if df is None or df.empty or "n_tokens" not in df or "n_params" not in df:
        return []
    tpp = pd.to_numeric(df["n_tokens"], errors="coerce") / pd.to_numeric(df["n_params"], errors="coerce")
    tpp = tpp[np.isfinite(tpp)]
    return sorted({float(f"{v:.2g}") for v in tpp})
