"""Plotly figure builders for the cp-plan report: pure functions from frames to figures.

Each builder takes already-selected pandas frames (runs with canonical columns, curves evaluated
from fitted laws, tables from :mod:`reports.analysis`) and returns a ``plotly.graph_objects.Figure``;
none reads the database or the laws, so each is testable on synthetic frames.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from reports.analysis import finite_loss, param_label, sorted_params

COLORS = {
    "sp": "#7f7f7f",
    "mup": "#1f77b4",
    "alpha0.5": "#2ca02c",
    "depth-alpha": "#9467bd",
    "completep": "#d62728",
}
_EXTRA = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e")
TEMPLATE = "plotly_white"


def color_of(name: str) -> str:
    name = str(name)
    if name in COLORS:
        return COLORS[name]
    if name.startswith("depth-alpha:"):  # a depth-α law key: shades of the depth-α colour
        alpha = float(name.split(":", 1)[1])
        return ("#9467bd", "#8c564b", "#e377c2", "#17becf")[int(alpha * 100) % 4]
    return _EXTRA[sum(map(ord, name)) % len(_EXTRA)]


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, title: str, height: int = 440) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.01), height=height,
                      margin=dict(l=60, r=20, t=60, b=50), legend=dict(groupclick="toggleitem"))
    return fig


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _hover(df: pd.DataFrame) -> list[str]:
    """Per-run hover text: id, shape, params, tokens, LR, loss, status/reason."""
    out = []
    for row in df.to_dict("records"):
        bits = [f"run {row.get('run_id', '?')}",
                f"N={row.get('n_embd')} L={row.get('n_layer')}"]
        for key, label in (("n_params", "P"), ("n_tokens", "D"), ("flops", "C"), ("lr", "lr"),
                           ("loss", "loss")):
            v = row.get(key)
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                bits.append(f"{label}={_fmt(v)}")
        status = row.get("status")
        if status and status != "done":
            reason = row.get("reason") or ""
            bits.append(f"<b>{status}</b> {str(reason)[:120]}")
        out.append("<br>".join(bits))
    return out


def _add_band(fig, x, y, low, high, name, color, **subplot):
    """Line with a shaded interval (drawn only where both bounds are finite)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if low is not None and high is not None:
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            fig.add_trace(go.Scatter(
                x=np.concatenate([x[ok], x[ok][::-1]]), y=np.concatenate([hi[ok], lo[ok][::-1]]),
                fill="toself", fillcolor=_rgba(color, 0.15), line=dict(width=0), hoverinfo="skip",
                legendgroup=name, showlegend=False, name=f"{name} interval"), **subplot)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(color=color, width=2),
                             legendgroup=name, name=name), **subplot)


def _failed_markers(fig, df, x_col, y_level, color, group, **subplot):
    """Diverged/failed runs as crosses at the top of the plot, reason in the hover (runs still
    running or pending are left out: they have no verdict yet)."""
    if "status" in df:
        df = df[df["status"].astype(str).isin(["diverged", "failed"])]
    if df.empty or not math.isfinite(y_level):
        return
    fig.add_trace(go.Scatter(
        x=df[x_col], y=[y_level] * len(df), mode="markers",
        marker=dict(symbol="x", size=10, color=color, line=dict(width=1)),
        legendgroup=group, name=f"{group}: diverged/failed", hovertext=_hover(df),
        hoverinfo="text"), **subplot)


def fig_loss_vs_ratio(runs: pd.DataFrame, curves: pd.DataFrame | None = None,
                      bands: dict | None = None, title: str = "", tolerance: float = 0.01) -> go.Figure:
    """Loss vs N:L (log x) at one non-embedding scale P, one colour per parameterization.

    ``runs``: that scale's shape-sweep runs (with ``ratio``; any status: diverged/failed ones are
    crosses at the top). ``curves``: the fitted shape law at that scale (columns parameterization,
    ratio, loss, optional low/high). ``bands``: parameterization -> :func:`band_from_curve` dict;
    each band is drawn as a thick segment at its threshold loss, (1 + tolerance) × the best loss,
    spanning the N:L whose loss is below it.
    """
    fig = go.Figure()
    ok = finite_loss(runs)
    good, bad = runs[ok], runs[~ok]
    names = sorted_params(list(runs["parameterization"]) + (list(curves["parameterization"]) if curves is not None and not curves.empty else []))
    y_top = float(good["loss"].max()) * 1.01 if len(good) else float("nan")
    for name in names:
        color, label = color_of(name), param_label(name)
        pts = good[good["parameterization"] == name].sort_values("ratio")
        if len(pts):
            fig.add_trace(go.Scatter(
                x=pts["ratio"], y=pts["loss"], mode="markers" if curves is not None and not curves.empty else "markers+lines",
                marker=dict(color=color, size=9), line=dict(color=color, dash="dot"),
                name=f"{label} runs", legendgroup=label, hovertext=_hover(pts), hoverinfo="text"))
        if curves is not None and not curves.empty:
            c = curves[curves["parameterization"] == name].sort_values("ratio")
            if len(c):
                _add_band(fig, c["ratio"], c["loss"], c.get("low"), c.get("high"),
                          f"{label} shape law", color)
        band = (bands or {}).get(name)
        if band:
            fig.add_trace(go.Scatter(
                x=[band["ratio_lo"], band["ratio_hi"]], y=[band["threshold"]] * 2,
                mode="lines+markers", line=dict(color=color, width=6), opacity=0.55,
                marker=dict(symbol="line-ns-open", size=14, color=color),
                legendgroup=label,
                name=f"{label} band N:L {band['ratio_lo']:.3g}–{band['ratio_hi']:.3g}",
                hovertext=f"{label}: loss within {tolerance:.0%} of best "
                          f"({band['best_loss']:.4g} at N:L {band['best_ratio']:.3g}) "
                          f"for N:L {band['ratio_lo']:.3g}–{band['ratio_hi']:.3g}",
                hoverinfo="text"))
        _failed_markers(fig, bad[bad["parameterization"] == name], "ratio", y_top, color, label)
    fig.update_xaxes(type="log", title="N:L (width / depth)")
    fig.update_yaxes(title="final validation loss")
    return _layout(fig, title)


def fig_loss_vs_flops(runs: pd.DataFrame, curves: pd.DataFrame | None = None,
                      title: str = "Loss vs training FLOPs") -> go.Figure:
    """Loss vs FLOPs (log x), runs by parameterization, fitted ``compute`` frontiers
    L(C) = E + A·C^(−a) as lines with their intervals (``curves``: parameterization, label, flops,
    loss, optional low/high; one curve per label)."""
    fig = go.Figure()
    good = runs[finite_loss(runs)]
    good = good[np.isfinite(pd.to_numeric(good["flops"], errors="coerce"))]
    for name in sorted_params(good["parameterization"]):
        pts = good[good["parameterization"] == name]
        label = param_label(name)
        fig.add_trace(go.Scatter(x=pts["flops"], y=pts["loss"], mode="markers",
                                 marker=dict(color=color_of(name), size=8, opacity=0.8),
                                 name=f"{label} runs", legendgroup=label,
                                 hovertext=_hover(pts), hoverinfo="text"))
    if curves is not None and not curves.empty:
        dashes = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
        for name in sorted_params(curves["parameterization"]):
            sub = curves[curves["parameterization"] == name]
            for i, (label, c) in enumerate(sub.groupby("label", sort=True)):
                c = c.sort_values("flops")
                before = len(fig.data)
                _add_band(fig, c["flops"], c["loss"], c.get("low"), c.get("high"), str(label),
                          color_of(name))
                fig.data[-1].line.dash = dashes[i % len(dashes)]
                for tr in fig.data[before:]:
                    tr.legendgroup = param_label(name)
    fig.update_xaxes(type="log", title="training FLOPs")
    fig.update_yaxes(title="final validation loss")
    return _layout(fig, title, height=480)


def fig_flops_by_ratio(runs: pd.DataFrame, curves: pd.DataFrame, title: str = "") -> go.Figure:
    """Loss vs FLOPs per N:L family: one subplot per parameterization, one colour per N:L (dark =
    deep-narrow), the family's fitted ``compute`` law as a line (``curves``: parameterization,
    ratio, flops, loss). Runs take the colour of the nearest fitted family within 15% in N:L."""
    names = sorted_params(curves["parameterization"])
    fig = make_subplots(rows=1, cols=max(1, len(names)), shared_yaxes=True,
                        subplot_titles=[param_label(n) for n in names], horizontal_spacing=0.04)
    all_ratios = sorted(curves["ratio"].astype(float).unique())
    colors = dict(zip(all_ratios, _sequential(len(all_ratios))))
    good = runs[finite_loss(runs)]
    for col, name in enumerate(names, start=1):
        fams = curves[curves["parameterization"] == name]
        ratios = np.array(sorted(fams["ratio"].astype(float).unique()))
        pts = good[good["parameterization"] == name]
        if len(pts) and len(ratios):
            r = (pts["n_embd"] / pts["n_layer"]).to_numpy(float)
            dist = np.abs(np.log(r[:, None] / ratios[None, :]))
            nearest = ratios[dist.argmin(axis=1)]
            fam_of = np.where(dist.min(axis=1) <= np.log(1.15), nearest, np.nan)
        else:
            fam_of = np.full(len(pts), np.nan)
        for ratio in ratios:
            group = f"N:L {ratio:.3g}"
            c = fams[fams["ratio"] == ratio].sort_values("flops")
            fig.add_trace(go.Scatter(x=c["flops"], y=c["loss"], mode="lines",
                                     line=dict(color=colors[ratio], width=2), name=group,
                                     legendgroup=group, showlegend=col == 1), row=1, col=col)
            mine = pts[fam_of == ratio]
            fig.add_trace(go.Scatter(x=mine["flops"], y=mine["loss"], mode="markers",
                                     marker=dict(color=colors[ratio], size=8), name=f"{group} runs",
                                     legendgroup=group, showlegend=False, hovertext=_hover(mine),
                                     hoverinfo="text"), row=1, col=col)
        fig.update_xaxes(type="log", title_text="training FLOPs", row=1, col=col)
    fig.update_yaxes(title_text="final validation loss", row=1, col=1)
    return _layout(fig, title, height=460)


def fig_savings(savings: pd.DataFrame, title: str = "") -> go.Figure:
    """Grouped bars: fraction of the baseline's FLOPs CompleteP saves per N:L, one colour per
    baseline (μP, SP), asymmetric error bars from the bootstrap interval (columns ratio, baseline,
    saved, low, high; fractions, 0.2 = 20%)."""
    fig = go.Figure()
    ratios = sorted(savings["ratio"].astype(float).unique())
    cats = [f"{r:.3g}" for r in ratios]
    for base in sorted_params(savings["baseline"]):
        sub = savings[savings["baseline"] == base].copy()
        sub["cat"] = [f"{float(r):.3g}" for r in sub["ratio"]]
        sub = sub.set_index("cat").reindex(cats)
        saved = sub["saved"].astype(float)
        low = sub["low"].astype(float) if "low" in sub else saved * np.nan
        high = sub["high"].astype(float) if "high" in sub else saved * np.nan
        text = [("" if not np.isfinite(s) else f"{s:.1%}" + ("" if not (np.isfinite(lo) and np.isfinite(hi))
                 else f" [{lo:.1%}, {hi:.1%}]")) for s, lo, hi in zip(saved, low, high)]
        fig.add_trace(go.Bar(
            x=cats, y=saved, name=f"vs {param_label(base)}", marker_color=color_of(base),
            error_y=dict(type="data", symmetric=False, array=(high - saved).clip(lower=0),
                         arrayminus=(saved - low).clip(lower=0), visible=True),
            hovertext=text, hoverinfo="text+x"))
    fig.add_hline(y=0, line=dict(color="black", width=1))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="N:L (width / depth)", type="category")
    fig.update_yaxes(title="FLOPs saved (fraction of baseline's)", tickformat=".0%")
    return _layout(fig, title)


def _sequential(n: int) -> list[str]:
    if n <= 1:
        return sample_colorscale("Viridis", [0.0])
    return sample_colorscale("Viridis", [0.9 * i / (n - 1) for i in range(n)])


def fig_lr_transfer(runs: pd.DataFrame, optima: pd.DataFrame, axis: str = "n_layer",
                    title: str = "") -> go.Figure:
    """Loss vs LR (log x), one subplot per parameterization, one line per depth (or width),
    each interpolated optimum marked with a star (``optima``: :func:`lr_transfer_table`), diverged
    or failed runs as crosses at the top."""
    names = sorted_params(optima["parameterization"])
    axis_name = "L" if axis == "n_layer" else "N"
    fig = make_subplots(rows=1, cols=max(1, len(names)), shared_yaxes=True,
                        subplot_titles=[param_label(n) for n in names], horizontal_spacing=0.04)
    good_all = runs[finite_loss(runs)]
    y_top = float(good_all["loss"].max()) * 1.01 if len(good_all) else float("nan")
    y_floor = float(good_all["loss"].min()) if len(good_all) else float("nan")
    for col, name in enumerate(names, start=1):
        opt = optima[optima["parameterization"] == name].sort_values(axis)
        values = list(opt[axis])
        colors = dict(zip(values, _sequential(len(values))))
        sub = runs[(runs["parameterization"] == name) & runs[axis].isin(values)]
        if len(opt):
            sub = sub[sub["n_embd" if axis == "n_layer" else "n_layer"] == opt["other"].iloc[0]]
        for value in values:
            cell = sub[sub[axis] == value]
            ok = finite_loss(cell)
            pts = cell[ok].sort_values("lr")
            group = f"{axis_name}={value}"
            fig.add_trace(go.Scatter(
                x=pts["lr"], y=pts["loss"], mode="lines+markers", line=dict(color=colors[value]),
                marker=dict(size=6), name=group, legendgroup=group, showlegend=col == 1,
                hovertext=_hover(pts), hoverinfo="text"), row=1, col=col)
            o = opt[opt[axis] == value].iloc[0]
            if np.isfinite(o["lr_opt"]):
                fig.add_trace(go.Scatter(
                    x=[o["lr_opt"]], y=[o["loss_opt"]], mode="markers",
                    marker=dict(symbol="star", size=14, color=colors[value],
                                line=dict(color="black", width=1)),
                    name=f"{group} optimum", legendgroup=group, showlegend=False,
                    hovertext=f"{param_label(name)} {group}: optimal lr {o['lr_opt']:.3g}"
                              + (" (at grid edge)" if o["at_edge"] else ""),
                    hoverinfo="text"), row=1, col=col)
            _failed_markers(fig, cell[~ok], "lr", y_top, colors[value], group, row=1, col=col)
        fig.update_xaxes(type="log", title_text="peak LR (η_base)", row=1, col=col)
    # Diverged runs at huge LR can dominate the scale; clip to a window around the good losses.
    if math.isfinite(y_floor) and math.isfinite(y_top):
        span = max(y_top - y_floor, 1e-3)
        fig.update_yaxes(range=[y_floor - 0.05 * span, y_top + 0.05 * span])
    fig.update_yaxes(title_text="final validation loss", row=1, col=1)
    return _layout(fig, title, height=460)


def fig_coord_check(coord: pd.DataFrame, axis: str = "depth", title: str = "") -> go.Figure:
    """Coordinate check: mean |h| of the last block's output (``resid_abs_mean``) vs step, one
    subplot per parameterization, one line per depth (axis 'depth') or width (axis 'width'), log y.
    Flat lines across shapes mean the parameterization keeps activations at scale (Fig. 7 of
    Dey et al. 2025)."""
    dim = "n_layer" if axis == "depth" else "n_embd"
    dim_name = "L" if axis == "depth" else "N"
    names = sorted_params(coord["parameterization"])
    fig = make_subplots(rows=1, cols=max(1, len(names)), shared_yaxes=True,
                        subplot_titles=[param_label(n) for n in names], horizontal_spacing=0.04)
    values = sorted(coord[dim].astype(int).unique())
    colors = dict(zip(values, _sequential(len(values))))
    for col, name in enumerate(names, start=1):
        sub = coord[coord["parameterization"] == name]
        for value in values:
            c = sub[sub[dim] == value].groupby("step", as_index=False)["resid_abs_mean"].mean()
            if c.empty:
                continue
            group = f"{dim_name}={value}"
            fig.add_trace(go.Scatter(x=c["step"], y=c["resid_abs_mean"], mode="lines+markers",
                                     line=dict(color=colors[value]), marker=dict(size=5),
                                     name=group, legendgroup=group, showlegend=col == 1),
                          row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="mean |h| of last block output", row=1, col=1)
    return _layout(fig, title, height=420)


def fig_coord_summary(coord: pd.DataFrame, axis: str = "depth", title: str = "") -> go.Figure:
    """Mean |h| at the last recorded step vs depth (or width), log-log, one line per
    parameterization: the one-glance version of the coordinate check."""
    dim = "n_layer" if axis == "depth" else "n_embd"
    fig = go.Figure()
    for name in sorted_params(coord["parameterization"]):
        sub = coord[coord["parameterization"] == name]
        last = sub[sub["step"] == sub["step"].max()].groupby(dim, as_index=False)["resid_abs_mean"].mean()
        fig.add_trace(go.Scatter(x=last[dim], y=last["resid_abs_mean"], mode="lines+markers",
                                 line=dict(color=color_of(name)), name=param_label(name)))
    fig.update_xaxes(type="log", title="depth L" if axis == "depth" else "width N")
    fig.update_yaxes(type="log", title="mean |h| at last step")
    return _layout(fig, title, height=380)


def fig_plan(curves: pd.DataFrame, plan: dict, title: str = "") -> go.Figure:
    """Loss vs N:L (log x) at the plan's target, one colour per parameterization.

    ``curves``: each parameterization's shape law at the target P and tokens (parameterization,
    ratio, loss, optional low/high), drawn with its interval shaded. ``plan``: ``Plan.to_dict()``;
    its ``band`` gives each parameterization's compute-efficient band, drawn as a thick segment at
    (1 + tolerance) × that band's best loss, its pick is a star with the predicted-loss interval,
    and its ``alternatives`` are grey diamonds (loss = the planned law's best × (1 + loss_vs_best)).
    A parameterization without a curve is simply absent."""
    fig = go.Figure()
    bands = plan.get("band") or {}
    tol = float((plan.get("target") or {}).get("tolerance") or 0.01)
    chosen = plan.get("parameterization")
    for name in sorted_params(list(curves["parameterization"].unique()) if not curves.empty else []):
        color, label = color_of(name), param_label(name)
        c = curves[curves["parameterization"] == name].sort_values("ratio")
        _add_band(fig, c["ratio"], c["loss"], c.get("low"), c.get("high"),
                  f"{label} shape law" + (" (planned)" if name == chosen else ""), color)
        b = bands.get(name)
        if isinstance(b, dict) and b.get("ratio_min") is not None and b.get("best_loss") is not None:
            threshold = float(b["best_loss"]) * (1 + tol)
            fig.add_trace(go.Scatter(
                x=[b["ratio_min"], b["ratio_max"]], y=[threshold] * 2, mode="lines+markers",
                line=dict(color=color, width=6), opacity=0.55,
                marker=dict(symbol="line-ns-open", size=14, color=color),
                legendgroup=f"{label} shape law" + (" (planned)" if name == chosen else ""),
                name=f"{label} band N:L {b['ratio_min']:.3g}–{b['ratio_max']:.3g}",
                hovertext=f"{label}: loss within {tol:.0%} of its best ({b['best_loss']:.4g} at N:L "
                          f"{b.get('best_ratio', float('nan')):.3g}) for N:L {b['ratio_min']:.3g}–{b['ratio_max']:.3g}",
                hoverinfo="text"))
    best = (bands.get(chosen) or {}).get("best_loss")
    alts = [a for a in plan.get("alternatives") or [] if isinstance(a, dict)]
    if best is not None and alts:
        fig.add_trace(go.Scatter(
            x=[a["ratio"] for a in alts], y=[float(best) * (1 + float(a["loss_vs_best"])) for a in alts],
            mode="markers", marker=dict(symbol="diamond", size=8, color="#7f7f7f"), name="alternatives",
            hovertext=[f"N={a.get('n_embd')} L={a.get('n_layer')} (N:L {a['ratio']:.3g}): "
                       f"{a['loss_vs_best']:+.2%} vs best; {a.get('reason', '')}" for a in alts],
            hoverinfo="text"))
    loss = plan.get("predicted_loss")
    if plan.get("ratio") is not None and loss is not None and math.isfinite(float(loss)):
        lo, hi = (plan.get("predicted_loss_interval") or [None, None])[:2]
        err = None
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            err = dict(type="data", symmetric=False, array=[max(hi - loss, 0.0)],
                       arrayminus=[max(loss - lo, 0.0)], color=color_of(chosen or ""), thickness=1.5)
        fig.add_trace(go.Scatter(
            x=[plan["ratio"]], y=[loss], mode="markers", error_y=err,
            marker=dict(symbol="star", size=16, color=color_of(chosen or ""), line=dict(width=1, color="black")),
            name=f"pick: N={plan.get('n_embd')} L={plan.get('n_layer')}",
            hovertext=f"pick ({param_label(chosen or '?')}): N={plan.get('n_embd')} L={plan.get('n_layer')}, "
                      f"N:L {plan['ratio']:.3g}, loss {loss:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if err else ""),
            hoverinfo="text"))
    target = plan.get("target") or {}
    p = target.get("n_params_used") or plan.get("n_params")
    fig.update_xaxes(type="log", title="N:L (width / depth)")
    fig.update_yaxes(title="predicted final validation loss")
    sub = (f"P = {p:.3g} non-embedding params, {target.get('tokens_per_param', float('nan')):g} tokens/param"
           if p else "")
    return _layout(fig, f"{title}: {sub}" if title and sub else (title or sub))


def figure_div(fig: go.Figure) -> str:
    """The figure as an HTML fragment that relies on the page's single inlined plotly.js."""
    return fig.to_html(full_html=False, include_plotlyjs=False,
                       config={"displaylogo": False, "responsive": True})
