"""The plan as facts a reader sees: the one presenter behind `cp-plan recommend --details` (a
terminal, rich tables) and the HTML report's plan section (reports/page.py), so both show the same
things: the shape and its cost, each band edge with its interval and whether it is identified,
each saving with its interval and significance, the per-group hyperparameters, the alternatives,
the assumptions and the warnings. The one-screen plan is :mod:`planner.brief`.

Each function takes the plan as a dict (``Plan.to_dict()``) and returns text already formatted:
a :class:`Table` (title, caption, columns, rows of strings) or lines. Renderers only lay them out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""


def cell(v) -> str:
    """A table cell: '—' for missing, 4 significant digits for floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, str):  # device strings stored by older runs read "cpu (1 threads)"
        return re.sub(r"\b1 threads\b", "1 thread", v)
    return str(v)


def _join(values) -> str:
    return ", ".join(str(v) for v in values) if values else "?"


def _range(v) -> str:
    if not v:
        return "?"
    lo, hi = v
    return f"{lo:.3g}" if math.isclose(lo, hi, rel_tol=1e-2) else f"{lo:.3g}–{hi:.3g}"


def edge_text(b: dict, side: str) -> str:
    """A band edge: point [95% interval], ≤/≥ when the band reaches the trained edge, * when the
    edge is not identified."""
    e = b["edges"][side]
    lo, hi = e["interval"]
    at_limit = b.get("reaches_low_edge" if side == "low" else "reaches_high_edge")
    mark = ("≤" if side == "low" else "≥") if at_limit else ""
    return f"{mark}{e['ratio']:.3g} [{lo:.3g}, {hi:.3g}]" + ("" if e["identified"] else " *")


def head_rows(p: dict) -> list[tuple[str, str]]:
    """The pick: shape, size, tokens, FLOPs, predicted loss with its intervals, hardware cost and
    how far the plan extrapolates."""
    lo, hi = p["predicted_loss_interval"]
    rows = [("shape", f"n_embd {p['n_embd']}, n_layer {p['n_layer']}, n_head {p['n_head']} "
                      f"(head size {p['d_head']}), N:L {p['ratio']:.3g}"),
            ("non-embedding params", f"{p['n_params']:,}"),
            ("tokens", f"{p['n_tokens']:,} ({p['target']['tokens_per_param']:g} per param)"),
            ("training FLOPs", f"{p['flops']:.4g} ({p['flop_convention']})")]
    run = p.get("predicted_run_loss_interval")
    rows.append(("predicted loss", f"{p['predicted_loss']:.4f} {p.get('loss_unit', '')}; law interval "
                                   f"[{lo:.4f}, {hi:.4f}], "
                                   + (f"one run [{run[0]:.4f}, {run[1]:.4f}]" if run else "no seed-noise estimate")))
    hw = p["hardware"]
    cost = [f"per-layer weights {hw['layer_bytes'] / 1e6:.4g} MB"]
    if "step_time_s" in hw:
        cost.append(f"est. step {hw['step_time_s']:.3g} s / {hw['step_tokens']:,} tokens")
    if "latency_s" in hw:
        cost.append(f"est. latency {hw['latency_s'] * 1e3:.3g} ms/token")
    rows.append(("hardware cost", ", ".join(cost)))
    x = p.get("extrapolation") or {}
    if x.get("n_params"):
        rows.append(("rests on", f"runs up to {x['largest_n_params']:.3g} params and "
                                 f"{(x.get('largest_n_tokens') or float('nan')):.3g} tokens; the plan is "
                                 f"{x['n_params']:.3g}x the params and {(x.get('n_tokens') or float('nan')):.3g}x the tokens"))
    return rows


def head_title(p: dict) -> str:
    return f"Plan: {p['parameterization']} on {p['hardware']['name']} ({p['reason']})"


def band_table(p: dict) -> Table:
    crit = p.get("criterion") or {}
    t = Table(title=f"Compute-efficient band: {crit.get('description', '')}",
              columns=["parameterization", "deep edge N:L", "wide edge N:L", "best N:L", "trained N:L", "runs"],
              caption="edges: point [95% interval]; ≤/≥: the band reaches the trained range's edge; "
                      "*: not identified (the edge or part of its interval lies on the trained limit)")
    for name, b in p["band"].items():
        tr = b.get("trained_range")
        bl, bh = b.get("best_ratio_interval", [b["best_ratio"]] * 2)
        t.rows.append([name, edge_text(b, "low"), edge_text(b, "high"), f"{b['best_ratio']:.3g} [{bl:.3g}, {bh:.3g}]",
                       f"{tr[0]:.3g}–{tr[1]:.3g}" if tr else "—", cell(b.get("n_runs"))])
    return t


def savings_table(p: dict) -> Table | None:
    if not p.get("savings"):
        return None
    t = Table(title=f"Compute {p['parameterization']} saves at N:L {p['ratio']:.3g} "
                    f"(same loss, {p['target']['tokens_per_param']:g} tokens/param)",
              columns=["versus", "saved", "95% interval", "significant?", "saved in 6ND FLOPs", "params the other needs"])
    for name, s in p["savings"].items():
        has = s["low"] is not None and math.isfinite(s["low"])
        interval = (f"[{s['low']:.1%}, {s['high']:.1%}" + (" (bound)" if s["high"] >= 0.9995 else "") + "]"
                    if has else "—")
        t.rows.append([name, f"{s['fraction']:.1%}" + ("" if s["reachable"] else " (bound)"), interval,
                       "yes" if s.get("significant") else ("no: a bound" if not s["reachable"] else
                                                           "no: the interval crosses 0" if has else "no interval"),
                       f"{s['fraction_6nd']:.1%}", f"{s['n_params_other']:.4g}"])
    return t


def hparams_table(p: dict) -> tuple[Table, str] | None:
    """The per-group hyperparameters and the line of multipliers under it (None: no shape rules)."""
    hp = p.get("hparams")
    if not hp:
        return None
    t = Table(title=f"Per-group hyperparameters (base N={hp['base_n_embd']} L={hp['base_n_layer']}, "
                    f"m_N={hp['width_mult']:.4g}, m_L={hp['depth_mult']:.4g})",
              columns=["group", "init", "init std", "peak LR", "weight decay", "AdamW ε"])
    for g in hp["groups"].values():
        t.rows.append([g["group"], g["init"], cell(g["init_std"]), f"{g['lr']:.4g}", f"{g['weight_decay']:.4g}",
                       f"{g['eps']:.4g}"])
    return t, (f"residual branch multiplier {hp['residual_mult']:.4g}, logit multiplier "
               f"{hp['output_mult']:.4g}, attention scale {hp['attn_scale_kind']}")


def alternatives_table(p: dict) -> Table | None:
    if not p.get("alternatives"):
        return None
    t = Table(title="Alternatives and why each lost", columns=["n_embd", "n_layer", "N:L", "params", "loss vs best", "why not"])
    for r in p["alternatives"]:
        t.rows.append([str(r["n_embd"]), str(r["n_layer"]), f"{r['ratio']:.3g}", f"{r['n_params']:.4g}",
                       f"{r['loss_vs_best']:+.2%}" if r.get("loss_vs_best") is not None else "—", r["reason"]])
    return t


def assumption_lines(p: dict) -> list[str]:
    a = p["assumptions"]
    noise = a.get("seed_noise") or {}
    lines = (f"loss in {a.get('loss_unit', '?')}",
             f"band: {a.get('criterion', '')}; pick: {a.get('pick_rule', '')}",
             a.get("extrapolation_note"),
             a["flop_convention_note"], a["shapes"],
             f"planned vocab {a['vocab_size']}, seq_len {a['seq_len']}; the runs had vocab "
             f"{_join(a.get('runs_vocab_sizes'))}, seq_len {_join(a.get('runs_seq_lens'))}, "
             f"{_range(a.get('runs_tokens_per_param'))} tokens per parameter",
             f"runs trained on {_join(a.get('data'))}, on {_join(a.get('device'))}",
             (f"seed noise σ = {noise['sigma_loss']:.3g} ({noise.get('source', '')})"
              if noise.get("sigma_loss") is not None else None),
             a.get("interval"),
             a.get("from_flops"), a.get("target_default"), a["hparams"])
    return [line for line in lines if line]
