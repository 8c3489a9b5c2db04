"""The cp-plan report: one self-contained HTML page (plotly.js inlined once, works offline).

:func:`render_report` assembles the page from plain frames (runs, coordinate-check rows, curves
evaluated from the laws, savings, a plan as a dict); :func:`build_report` reads those from a run
database and fitted laws; :func:`write_report` writes the page atomically. A section appears
only when its data exists; otherwise the page says which runs would fill it. (Just over 600
lines: one page's sections, markup and styles kept in one file; the numbers come from
:mod:`reports.analysis`, the figures from :mod:`reports.figures`, the plan's tables from
:mod:`planner.planview`.)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from reports import analysis as an

SECTIONS = {
    "shape": "Loss vs N:L at fixed non-embedding parameters",
    "frontier": "Loss vs training FLOPs",
    "savings": "FLOP savings of CompleteP over μP and SP",
    "lr": "Learning-rate transfer across depth",
    "coord": "Coordinate checks",
    "plan": "Plan",
    "runs": "Runs",
    "methods": "Methods",
}

FLOP_CONVENTIONS = {
    "6P+6NV+12LNT": "6·P + 6·N·V + 12·L·N·T per training token (PaLM, Chowdhery et al. 2022, "
                    "app. B): non-embedding parameters, the unembedding, and attention scores and "
                    "values at sequence length T",
    "6ND": "6·N·D: 6 × non-embedding parameters × tokens (Kaplan et al. 2020); no attention "
           "or unembedding term",
}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2733;background:#fafbfc;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{font-size:1.6rem;margin:.2rem 0 .4rem}h2{font-size:1.25rem;margin-top:2.4rem;
border-bottom:2px solid #dde3ea;padding-bottom:.25rem}h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
nav{font-size:.9rem;margin:.6rem 0 1rem}nav a{margin-right:1rem;color:#1f5fa8;text-decoration:none}
.note{background:#f1f4f8;border-left:4px solid #9aa9bb;padding:.5rem .8rem;margin:.6rem 0;
font-size:.93rem}.empty,.nolaw{background:#fff8e6;border-left-color:#d9a400}
.warn{background:#fdeeee;border-left-color:#c0392b}
.methods{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.methods dt{font-weight:600;margin-top:.4rem}.methods dd{margin:0 0 0 1rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem;background:#fff}
th,td{border:1px solid #dde3ea;padding:.2rem .5rem;text-align:right;vertical-align:top}
th{background:#eef2f6}td.t,th.t{text-align:left}
tr.bad td{background:#fdeeee}.fig{background:#fff;border:1px solid #e5e9ee;margin:.6rem 0}
details>summary{cursor:pointer;color:#1f5fa8;margin:.4rem 0}
"""


# ----------------------------------------------------------------------------- small HTML helpers


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def _note(text: str, kind: str = "") -> str:
    return f'<div class="{("note " + kind).strip()}">{text}</div>'


def _empty(what: str, how: str) -> str:
    return _note(f"<b>No {esc(what)} yet.</b> {how}", "empty")


def fmt_value(v) -> str:
    """Numbers to 4 significant digits (integers in full with separators), NaN/None as '—'."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "—"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:.4g}"
    if isinstance(v, (pd.Timestamp, _dt.datetime)):
        return v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else str(v)
    return str(v)


def html_table(df: pd.DataFrame, text_cols=(), bad_rows: pd.Series | None = None,
               formats: dict | None = None) -> str:
    """A plain HTML table; text columns left-aligned, rows flagged in ``bad_rows`` tinted."""
    formats = formats or {}
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{esc(c)}</th>' for c in df.columns)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        cls = ' class="bad"' if bad_rows is not None and bool(bad_rows.iloc[i]) else ""
        cells = []
        for c, v in zip(df.columns, row):
            s = formats[c](v) if c in formats and v is not None and not (isinstance(v, float) and math.isnan(v)) else fmt_value(v)
            cells.append(f'<td class="{"t" if c in text_cols else ""}">{esc(s)}</td>')
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pct(x) -> str:
    return f"{float(x):.1%}"


def _sci(x) -> str:
    return f"{float(x):.3g}"


# ----------------------------------------------------------------------------- sections


def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{esc(SECTIONS[key])}</h2>{body}</section>'


def section_shape(runs: pd.DataFrame, shape_curves: pd.DataFrame | None, tolerance: float) -> str:
    from reports.figures import fig_loss_vs_ratio

    shape = an.with_ratio(an.of_sweep(runs, "shape"))
    if shape.empty:
        return _section("shape", _empty("shape-sweep runs", "Run <code>cp-plan sweep shape --params P "
                        "--ratios 4,8,16,32,64,128 --parameterizations sp,mup,completep</code>."))
    shape["scale_params"] = an.shape_scales(shape)
    parts = [_note(
        "Each panel is one fixed non-embedding scale P (shapes with the same P and tokens = "
        "tokens-per-parameter × P). Points are measured final validation losses, lines the fitted "
        "shape law with its interval, the thick segment the compute-efficient band: the N:L whose "
        f"loss is within {tolerance:.0%} of the best at that P (from the law where one is fitted, "
        "else from the measured points). Crosses at the top are diverged or failed runs.")]
    band_rows = []
    for p, group in shape.groupby("scale_params", sort=True):
        curves = None
        if shape_curves is not None and not shape_curves.empty:
            curves = shape_curves[np.isclose(shape_curves["scale_params"].astype(float), p, rtol=1e-6)]
        bands = {}
        for name in an.sorted_params(group["parameterization"]):
            c = curves[curves["parameterization"] == name] if curves is not None else None
            if c is not None and len(c):
                band, source = an.band_from_curve(c["ratio"], c["loss"], tolerance), "shape law"
            else:
                pts = group[(group["parameterization"] == name) & an.finite_loss(group)]
                band, source = an.band_from_curve(pts["ratio"], pts["loss"], tolerance), "measured"
            if band:
                bands[name] = band
                band_rows.append({"P": an.scale_label(p), "parameterization": an.param_label(name),
                                  "N:L from": band["ratio_lo"], "N:L to": band["ratio_hi"],
                                  "best N:L": band["best_ratio"], "best loss": band["best_loss"],
                                  "from": source})
        n_done = int(an.finite_loss(group).sum())
        title = (f"P ≈ {an.scale_label(p)} non-embedding parameters "
                 f"({n_done} of {len(group)} runs done)")
        fig = fig_loss_vs_ratio(group, curves, bands, title=title, tolerance=tolerance)
        parts.append(f'<div class="fig">{_div(fig)}</div>')
    if band_rows:
        parts.append(f"<h3>Compute-efficient band (loss within {tolerance:.0%} of the best)</h3>")
        parts.append(html_table(pd.DataFrame(band_rows), text_cols=("P", "parameterization", "from"),
                                formats={"N:L from": _sci, "N:L to": _sci, "best N:L": _sci}))
    return _section("shape", "".join(parts))


def section_frontier(runs: pd.DataFrame, compute_curves: pd.DataFrame | None,
                     compute_fits: pd.DataFrame | None = None) -> str:
    from reports.figures import fig_flops_by_ratio, fig_loss_vs_flops

    pts = runs[~runs.get("sweep", pd.Series("", index=runs.index)).astype(str).isin(["lr", "coord"])]
    pts = pts[an.finite_loss(pts)] if len(pts) else pts
    if pts.empty or not np.isfinite(pd.to_numeric(pts["flops"], errors="coerce")).any():
        return _section("frontier", _empty("runs with FLOPs and a final loss",
                        "Shape sweeps or imported runs fill this section."))
    curves = compute_curves if compute_curves is not None else pd.DataFrame(columns=["kind"])
    kind = curves["kind"] if "kind" in curves else pd.Series("frontier", index=curves.index)
    frontier, by_ratio = curves[kind == "frontier"], curves[kind == "ratio"]
    body = [_note("Every finished run outside LR sweeps and coordinate checks. Lines: the "
                  "<code>compute</code> law L(C) = E + A·C<sup>−a</sup> fitted per parameterization "
                  "to the lowest loss at each FLOP level (the compute-efficient frontier over all "
                  "shapes), with its bootstrap interval.")]
    if frontier.empty:
        body.append(_note("No fitted <code>compute</code> frontier (see the notes at the top); "
                          "showing the runs only.", "nolaw"))
    body.append(f'<div class="fig">{_div(fig_loss_vs_flops(pts, frontier))}</div>')
    if not by_ratio.empty:
        body.append("<h3>Per N:L family</h3>")
        body.append(_note("The same law fitted to each shape family (one N:L across scales): "
                          "a parameterization that keeps deep-narrow families close to the others "
                          "gives hardware more room."))
        body.append(f'<div class="fig">{_div(fig_flops_by_ratio(pts, by_ratio, title="Loss vs FLOPs per N:L family"))}</div>')
    if compute_fits is not None and len(compute_fits):
        body.append("<h3>Fitted compute laws</h3>")
        body.append(html_table(compute_fits, text_cols=("parameterization", "a interval", "warnings"),
                               formats={"N:L": _sci, "A": _sci, "held-out error": lambda v: f"{v:.2%}"}))
    return _section("frontier", "".join(body))


def section_savings(savings: pd.DataFrame | None, why_missing: str = "") -> str:
    from reports.figures import fig_savings

    if savings is None or savings.empty:
        return _section("savings", _empty("FLOP-savings estimates",
                        why_missing or "They need fitted laws for CompleteP and μP or SP from shape sweeps."))
    body = []
    key = "scale_params" if "scale_params" in savings else "scale" if "scale" in savings else None
    groups = savings.groupby(key, sort=True) if key else [(None, savings)]
    for _, sub in groups:
        target = an.param_label(sub["target"].iloc[0]) if "target" in sub else "CompleteP"
        where = f" at {sub['scale'].iloc[0]}" if "scale" in sub else ""
        title = f"FLOPs {target} saves{where}: fraction of the baseline's compute to reach the same loss"
        body.append(f'<div class="fig">{_div(fig_savings(sub, title=title))}</div>')
    table = savings.copy()
    table["baseline"] = table["baseline"].map(an.param_label)
    if "target" in table:
        table["target"] = table["target"].map(an.param_label)
    keep = [c for c in ("scale", "target", "baseline", "ratio", "saved", "low", "high", "saved_6nd",
                        "reachable") if c in table]
    body.append(html_table(table[keep], text_cols=("scale", "target", "baseline"),
                           formats={"saved": _pct, "low": _pct, "high": _pct, "saved_6nd": _pct,
                                    "ratio": _sci}))
    body.append(_note("Saved = 1 − C<sub>target</sub>/C<sub>baseline</sub>: the share of the "
                      "baseline's training FLOPs the target parameterization does not need to reach "
                      "the same loss with the same shape family; interval: bootstrap percentiles."))
    return _section("savings", "".join(body))


def section_lr(runs: pd.DataFrame) -> str:
    from reports.figures import fig_lr_transfer

    lr_runs = an.of_sweep(runs, "lr")
    if lr_runs.empty:
        return _section("lr", _empty("LR-sweep runs", "Run <code>cp-plan sweep lr --lrs ... "
                        "--depths 2,4,8,16,32 --parameterizations mup,completep</code>."))
    body = []
    for axis, what in (("n_layer", "depth"), ("n_embd", "width")):
        table = an.lr_transfer_table(lr_runs, axis)
        if table.empty:
            continue
        dim = "L" if axis == "n_layer" else "N"
        other = "N" if axis == "n_layer" else "L"
        fixed = ", ".join(f"{an.param_label(p)} {other} = {int(v)}" for p, v in
                          table.groupby("parameterization", sort=False)["other"].first().items())
        fig = fig_lr_transfer(lr_runs, table, axis,
                              title=f"Loss vs peak LR across {what} ({fixed}); stars: interpolated optima")
        body.append(f"<h3>Across {what}</h3>")
        body.append(f'<div class="fig">{_div(fig)}</div>')
        drift = an.lr_drift(table, axis)
        sentences = []
        for row in drift.to_dict("records"):
            edge = " (an optimum sits at the edge of the LR grid, so this is a bound)" if row["any_at_edge"] else ""
            sentences.append(
                f"<li><b>{esc(an.param_label(row['parameterization']))}</b>: optimal LR "
                f"{row['lr_from']:.3g} at {dim} = {row['from']} → {row['lr_to']:.3g} at {dim} = {row['to']}: "
                f"drift ×{row['factor']:.3g} ({row['log2_factor']:+.2f} factor-2 steps){edge}.</li>")
        if sentences:
            body.append(f"<p>Optimal-LR drift from the smallest to the largest {what} "
                        f"(0 steps = perfect transfer):</p><ul>{''.join(sentences)}</ul>")
        tbl = table.rename(columns={axis: dim, "other": other}).copy()
        tbl["parameterization"] = tbl["parameterization"].map(an.param_label)
        body.append(html_table(tbl, text_cols=("parameterization",),
                               formats={"lr_opt": _sci, "lr_grid_best": _sci, "loss_opt": lambda v: f"{v:.4f}"}))
    if not body:
        table = an.lr_transfer_table(lr_runs, "n_layer", require_varying=False)
        if table.empty:
            return _section("lr", _empty("LR-sweep runs with a final loss", "Every recorded LR-sweep run "
                            "diverged or failed; see the runs table."))
        fig = fig_lr_transfer(lr_runs, table, "n_layer", title="LR scan at a single shape per parameterization")
        scans = "; ".join(f"{an.param_label(r['parameterization'])} N = {r['other']}, L = {r['n_layer']}: "
                          f"optimal LR {r['lr_opt']:.3g}" + (" (at the grid edge)" if r["at_edge"] else "")
                          for r in table.to_dict("records"))
        return _section("lr", _empty("LR sweeps across depth or width", "The recorded LR sweeps hold one "
                        "shape per parameterization (a base-shape scan, shown below); run <code>cp-plan "
                        "sweep lr --depths 2,4,8,16,32</code> for the transfer experiment.")
                        + f'<div class="fig">{_div(fig)}</div><p>{esc(scans)}.</p>')
    body.insert(0, _note("Each line is one shape trained over an LR grid with every other base "
                         "hyperparameter fixed; the optimum is interpolated with a parabola in "
                         "log₂ LR through the grid minimum and its neighbours. Under good transfer "
                         "the stars line up vertically."))
    return _section("lr", "".join(body))


def section_coord(coord: pd.DataFrame | None) -> str:
    from reports.figures import fig_coord_check, fig_coord_summary

    if coord is None or coord.empty:
        return _section("coord", _empty("coordinate checks", "Run <code>cp-plan coord-check "
                        "--parameterizations mup,alpha0.5,completep --depths 2,4,8,16,32</code>."))
    coord = an.latest_coord_rows(coord)
    body = [_note("Mean |h| of the last block's output over the first steps at constant LR "
                  "(Dey et al. 2025, Fig. 7). A parameterization that transfers keeps the lines "
                  "together as depth or width grows; μP's grow with depth.")]
    verdicts = an.coord_verdicts(coord)
    for axis in ("depth", "width"):
        sub = coord[coord["axis"].astype(str) == axis]
        if sub.empty:
            continue
        body.append(f"<h3>Across {axis}</h3>")
        body.append(f'<div class="fig">{_div(fig_coord_check(sub, axis, title=f"Coordinate check across {axis}"))}</div>')
        body.append(f'<div class="fig">{_div(fig_coord_summary(sub, axis, title=f"Last step, across {axis}"))}</div>')
        v = verdicts[verdicts["axis"] == axis].copy()
        if len(v):
            v["parameterization"] = v["parameterization"].map(an.param_label)
            body.append(html_table(v.drop(columns="axis"), text_cols=("parameterization", "verdict"),
                                   formats={"ratio": lambda r: f"{r:.3g}×"}))
    return _section("coord", "".join(body))


def _as_dict(obj):
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return obj
    raise TypeError(f"cannot render a plan of type {type(obj).__name__}")


def _render_value(v, depth: int = 0) -> str:
    """A plan value as HTML: scalars inline, dicts of scalars as key/value tables, dicts of dicts
    and lists of dicts as tables with one row each, lists of strings as bullet lists."""
    if isinstance(v, dict):
        if v and all(isinstance(x, dict) for x in v.values()):
            df = pd.DataFrame([{"": k, **{kk: _flat(vv) for kk, vv in x.items()}} for k, x in v.items()])
            return html_table(df, text_cols=("",) + tuple(c for c in df.columns if df[c].map(lambda z: isinstance(z, str)).any()))
        rows = "".join(f'<tr><th class="t">{esc(k)}</th><td class="t">{_render_value(x, depth + 1)}</td></tr>'
                       for k, x in v.items())
        return f"<table>{rows}</table>"
    if isinstance(v, (list, tuple)):
        if not v:
            return "—"
        if all(isinstance(x, dict) for x in v):
            df = pd.DataFrame([{k: _flat(x) for k, x in d.items()} for d in v])
            return html_table(df, text_cols=tuple(c for c in df.columns if df[c].map(lambda z: isinstance(z, str)).any()))
        if all(isinstance(x, (int, float)) for x in v):
            return esc(" – ".join(fmt_value(x) for x in v)) if len(v) == 2 else esc(", ".join(fmt_value(x) for x in v))
        if all(isinstance(x, str) for x in v) and sum(map(len, v)) < 120:
            return esc(", ".join(v))
        return "<ul>" + "".join(f"<li>{_render_value(x, depth + 1)}</li>" for x in v) + "</ul>"
    return esc(fmt_value(v))


def _flat(x):
    if isinstance(x, (list, tuple)) and all(isinstance(y, (int, float)) for y in x):
        return " – ".join(fmt_value(y) for y in x)
    if isinstance(x, (dict, list, tuple)):
        return str(x)
    return x


def _interval(lo, hi, fmt=_pct) -> str:
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return "—"
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _planview_html(make, plan: dict) -> str | None:
    """A table of planner.planview (the presenter the terminal's `recommend --details` uses too) as
    HTML; None when the plan lacks what it shows (an older or partial plan: shown generically)."""
    try:
        t = make(plan)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if t is None:
        return None
    out = f"<h3>{esc(t.title)}</h3>" + html_table(pd.DataFrame(t.rows, columns=t.columns), text_cols=tuple(t.columns))
    return out + (_note(esc(t.caption)) if t.caption else "")


def section_plan(plan, why_missing: str = "", curves: pd.DataFrame | None = None) -> str:
    """The plan as tables: the pick, the band per parameterization, savings, per-group
    hyperparameters, alternatives with why each lost, assumptions and warnings, and a figure of
    loss vs N:L at the target (``curves``: each parameterization's law there) with the bands and
    the pick. Keys this renderer does not know are shown generically, so a richer Plan still
    appears whole."""
    d = _as_dict(plan)
    if not d:
        return _section("plan", _empty("plan", why_missing or "Pass <code>--params P --hardware H</code> "
                        "to put the recommendation for a target in the report."))
    d = dict(d)
    full = dict(d)  # planner.planview reads the whole plan, as the terminal's --details does
    body = []
    if "n_embd" in d and "n_layer" in d:
        lo_hi = d.get("predicted_loss_interval") or [None, None]
        hw = d.get("hardware") or {}
        rows = [
            ("parameterization", an.param_label(d.get("parameterization", "?"))),
            ("hardware", f"{hw.get('name', '?')}: {hw.get('description', '')}".rstrip(": ")),
            ("shape", f"n_embd {d['n_embd']}, n_layer {d['n_layer']}, n_head {d.get('n_head', '?')} "
                      f"(head size {d.get('d_head', '?')}), N:L {fmt_value(d.get('ratio'))}"),
            ("non-embedding params", fmt_value(d.get("n_params"))),
            ("tokens", fmt_value(d.get("n_tokens"))),
            ("training FLOPs", f"{_sci(d['flops'])} ({d.get('flop_convention', '?')})" if d.get("flops") else "—"),
            ("predicted loss", f"{fmt_value(d.get('predicted_loss'))} "
                               f"{_interval(lo_hi[0], lo_hi[1], lambda v: f'{v:.4g}')}"),
            ("why this shape", d.get("reason", "")),
        ]
        body.append("<table>" + "".join(f'<tr><th class="t">{esc(k)}</th><td class="t">{esc(v)}</td></tr>'
                                        for k, v in rows) + "</table>")
        if curves is not None and not curves.empty:
            from reports.figures import fig_plan, figure_div

            body.append(_note(
                "Predicted loss vs N:L at the target (its non-embedding P and tokens) from each "
                "parameterization's shape law, drawn over the N:L range its band was searched in; "
                "shaded: the law's bootstrap interval. Thick segments: each compute-efficient band "
                "(loss within the tolerance of its best); the star is the pick, with its interval; "
                "grey diamonds are the alternatives the plan lists."))
            body.append(figure_div(fig_plan(curves, d, title="The plan at its target")))
        for k in ("parameterization", "hardware", "n_embd", "n_layer", "n_head", "d_head", "ratio", "n_params",
                  "n_tokens", "flops", "flop_convention", "predicted_loss", "predicted_loss_interval", "reason"):
            d.pop(k, None)
    band = d.pop("band", None)
    from planner import planview as pv

    if isinstance(band, dict) and band and _planview_html(pv.band_table, full) is not None:
        body.append(_planview_html(pv.band_table, full))
    elif isinstance(band, dict) and band:
        rows = [{"parameterization": an.param_label(k), "N:L from": b.get("ratio_min"),
                 "N:L to": b.get("ratio_max"), "best N:L": b.get("best_ratio"), "best loss": b.get("best_loss"),
                 "trained N:L": _flat(b.get("trained_range")), "runs": b.get("n_runs")}
                for k, b in band.items() if isinstance(b, dict)]
        body.append("<h3>Compute-efficient band at the target</h3>")
        body.append(html_table(pd.DataFrame(rows), text_cols=("parameterization", "trained N:L"),
                               formats={"N:L from": _sci, "N:L to": _sci, "best N:L": _sci}))
    savings = d.pop("savings", None)
    if isinstance(savings, dict) and savings and _planview_html(pv.savings_table, full) is not None:
        body.append(_planview_html(pv.savings_table, full))
    elif isinstance(savings, dict) and savings:
        rows = [{"versus": an.param_label(k), "saved": s.get("fraction"),
                 "interval": _interval(s.get("low"), s.get("high")), "6ND figure": s.get("fraction_6nd"),
                 "N:L": s.get("ratio"), "reachable": s.get("reachable")}
                for k, s in savings.items() if isinstance(s, dict)]
        body.append("<h3>FLOP savings at the pick's N:L</h3>")
        body.append(html_table(pd.DataFrame(rows), text_cols=("versus", "interval"),
                               formats={"saved": _pct, "6ND figure": _pct, "N:L": _sci}))
    hp = d.pop("hparams", None)
    if isinstance(hp, dict) and isinstance(hp.get("groups"), dict):
        body.append(f"<h3>Per-group hyperparameters (m_N = {fmt_value(hp.get('width_mult'))}, "
                    f"m_L = {fmt_value(hp.get('depth_mult'))})</h3>")
        body.append(html_table(pd.DataFrame(list(hp["groups"].values())), text_cols=("group", "init")))
        body.append(_note(esc(f"residual branch multiplier {fmt_value(hp.get('residual_mult'))}, logit multiplier "
                              f"{fmt_value(hp.get('output_mult'))}, attention scale {hp.get('attn_scale_kind', '?')}")))
    elif hp is not None:
        body.append(f"<h3>hparams</h3>{_render_value(hp)}")
    alts = d.pop("alternatives", None)
    if isinstance(alts, list) and alts:
        body.append("<h3>Alternatives and why each lost</h3>")
        df = pd.DataFrame(alts)
        body.append(html_table(df, text_cols=tuple(c for c in ("reason",) if c in df),
                               formats={"loss_vs_best": lambda v: f"{v:+.2%}", "ratio": _sci}))
    warnings = d.pop("warnings", None)
    if warnings:
        body.append("".join(_note(esc(w), "warn") for w in warnings))
    for key, value in d.items():
        body.append(f"<h3>{esc(key.replace('_', ' '))}</h3>{_render_value(value)}")
    return _section("plan", "".join(body))


RUN_TABLE_COLUMNS = ("run_id", "status", "sweep", "parameterization", "alpha", "n_embd", "n_layer",
                     "ratio", "n_params", "n_tokens", "flops", "lr", "loss", "wall_s", "device",
                     "dtype", "source", "reason")


def section_runs(runs: pd.DataFrame) -> str:
    if runs is None or runs.empty:
        return _section("runs", _empty("runs", "Train with <code>cp-plan train</code> or "
                        "<code>cp-plan sweep</code>, or import published runs with "
                        "<code>cp-plan runs import</code>."))
    df = an.with_ratio(runs)
    for col in ("sweep", "source", "status"):
        if col not in df:
            df[col] = None
    df["sweep"] = df["sweep"].fillna("—").astype(str)
    counts = df.pivot_table(index="sweep", columns="status", values="run_id", aggfunc="count",
                            fill_value=0).reset_index()
    counts.columns.name = None
    body = [html_table(counts, text_cols=("sweep",))]
    cols = [c for c in RUN_TABLE_COLUMNS if c in df]
    bad = df[df["status"].astype(str) != "done"]
    if len(bad):
        body.append(f"<h3>Not done ({len(bad)}): diverged, failed or still running</h3>")
        body.append(html_table(bad[cols].reset_index(drop=True), text_cols=("run_id", "status", "sweep",
                               "parameterization", "device", "dtype", "source", "reason"),
                               bad_rows=pd.Series([True] * len(bad)),
                               formats={"flops": _sci, "ratio": _sci, "lr": _sci}))
    else:
        body.append(_note("Every run finished (status done): none diverged or failed."))
    order = df.assign(_bad=df["status"].astype(str) != "done").sort_values(
        ["_bad", "sweep", "parameterization", "n_params", "ratio"], ascending=[False, True, True, True, True],
        na_position="last")
    body.append(f"<details><summary>All {len(df)} runs</summary>"
                + html_table(order[cols].reset_index(drop=True),
                             text_cols=("run_id", "status", "sweep", "parameterization", "device", "dtype",
                                        "source", "reason"),
                             bad_rows=(order["_bad"]).reset_index(drop=True),
                             formats={"flops": _sci, "ratio": _sci, "lr": _sci})
                + "</details>")
    return _section("runs", "".join(body))


def methods_box(runs: pd.DataFrame, meta: dict) -> str:
    """FLOP convention, tokens per parameter, device/dtype, code versions, sources of the page."""
    items = []
    conventions = an.distinct(runs, "flop_convention") or ([meta["flop_convention"]] if meta.get("flop_convention") else [])
    items.append(("FLOP convention", "<br>".join(
        f"<code>{esc(c)}</code>: {esc(FLOP_CONVENTIONS.get(str(c), 'as recorded by the source'))}"
        for c in conventions) or "not recorded by the runs"))
    shape = an.of_sweep(runs, "shape")
    tpp = an.tokens_per_param(shape if len(shape) else runs)
    items.append(("Tokens per non-embedding parameter" + (" (shape sweeps)" if len(shape) else ""),
                  esc(", ".join(f"{t:g}" for t in tpp)) or "—"))
    if runs is not None and len(runs) and {"device", "dtype"} <= set(runs.columns):
        dd = runs.assign(device=runs["device"].fillna("—"), dtype=runs["dtype"].fillna("—")) \
            .groupby(["device", "dtype"]).size()
        items.append(("Device / dtype of runs", esc("; ".join(f"{d} / {t}: {n} runs" for (d, t), n in dd.items()))))
        if "wall_s" in runs:
            wall = pd.to_numeric(runs["wall_s"], errors="coerce").sum()
            if wall > 0:
                items.append(("Training wall time (sum over runs)", esc(f"{wall / 3600:.2f} h")))
    if runs is not None and "source" in runs and len(runs):
        src = runs["source"].fillna("—").value_counts()
        items.append(("Run sources", esc("; ".join(f"{s}: {n}" for s, n in src.items()))))
    versions = an.distinct(runs, "code_version")
    items.append(("Code version of runs", esc(", ".join(map(str, versions))) or "not recorded"))
    for key, label in (("report_version", "Report generated by"), ("db", "Run database"),
                       ("db_fingerprint", "Database fingerprint"), ("laws", "Laws"),
                       ("tolerance", "Band tolerance"), ("generated_at", "Generated")):
        if meta.get(key) not in (None, ""):
            value = _pct(meta[key]) if key == "tolerance" else str(meta[key])
            items.append((label, esc(value)))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items)
    return f'<div class="methods" id="methods"><b>Methods</b><dl>{dl}</dl></div>'


def _div(fig) -> str:
    from reports.figures import figure_div

    return figure_div(fig)


def plotly_bundle() -> str:
    """plotly.js, minified, to be inlined once per page."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_report(runs: pd.DataFrame | None, coord: pd.DataFrame | None = None, *,
                  shape_curves: pd.DataFrame | None = None, compute_curves: pd.DataFrame | None = None,
                  compute_fits: pd.DataFrame | None = None, savings: pd.DataFrame | None = None, plan=None,
                  plan_curves: pd.DataFrame | None = None, notes: list[str] | None = None,
                  meta: dict | None = None, tolerance: float = 0.01) -> str:
    """Assemble the page from frames.

    ``runs``: every run (any status) with canonical columns plus ``sweep``; ``coord``: coordinate-
    check rows; ``shape_curves``: the shape law evaluated per scale (scale_params, parameterization,
    ratio, loss, low, high); ``compute_curves``: fitted compute laws (parameterization, kind
    'frontier' or 'ratio', ratio, label, flops, loss, low, high); ``compute_fits``: a table of
    their fitted values; ``savings``: (ratio, baseline, saved, low, high[, target, scale]); ``plan``: a Plan
    (or dict); ``plan_curves``: each parameterization's shape law at the plan's target
    (parameterization, ratio, loss, low, high; ``reports.build.plan_curves``); ``notes``: warnings shown at the top (e.g. a law that could not be fitted).
    """
    runs = runs if runs is not None else pd.DataFrame(columns=["run_id", "status", "parameterization",
                                                               "n_embd", "n_layer", "n_params", "n_tokens",
                                                               "flops", "loss", "lr", "sweep"])
    meta = dict(meta or {})
    meta.setdefault("generated_at", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    meta.setdefault("tolerance", tolerance)
    sections = [
        section_shape(runs, shape_curves, tolerance),
        section_frontier(runs, compute_curves, compute_fits),
        section_savings(savings, meta.get("savings_missing", "")),
        section_lr(runs),
        section_coord(coord),
        section_plan(plan, meta.get("plan_missing", ""), plan_curves),
        section_runs(runs),
    ]
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in SECTIONS.items())
    warn = "".join(_note(esc(n), "warn") for n in notes or [])
    n_done = int(an.finite_loss(runs).sum()) if len(runs) else 0
    head = (f"<h1>cp-plan report</h1><p>{n_done} finished runs of {len(runs)} recorded; "
            "CompleteP vs μP vs SP from measured runs (Dey et al. 2025, arXiv 2505.01618).</p>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>cp-plan report</title>"
        f"<style>{_CSS}</style>"
        "<script type=\"text/javascript\">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
        f"<script type=\"text/javascript\">{plotly_bundle()}</script>"
        "</head><body><main>"
        f"{head}<nav>{nav}</nav>{warn}{methods_box(runs, meta)}{''.join(sections)}"
        "</main></body></html>\n"
    )


def write_report(path: str | os.PathLike, text: str) -> Path:
    """Write the page atomically: a temporary file in the target folder, fsync, then rename, so a
    reader never sees half a report and an interrupted write or a full disk leaves the old one
    intact (an OS error is one line: :func:`planner.fileio.write_atomic`)."""
    from planner.fileio import write_atomic

    return write_atomic(path, text)


def sections_present(page: str) -> dict[str, bool]:
    """Which sections of a rendered page hold data (False: the section shows its 'no ... yet'
    note). Reads the page's own markup: each section is ``<section id=KEY>`` and an empty one
    carries a ``note empty`` box."""
    out = {}
    for key in SECTIONS:
        if key == "methods":
            continue
        start = page.find(f'<section id="{key}">')
        if start < 0:
            out[key] = False
            continue
        end = page.find("</section>", start)
        out[key] = 'class="note empty"' not in page[start:end]
    return out
