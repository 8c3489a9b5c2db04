"""The plan in one screen: what `cp-plan recommend` prints by default (``--details`` prints all).

At most about 30 lines at 80 columns: the shape, tokens and FLOPs, the predicted loss with its
interval and unit, the savings against each parameterization with interval and significance,
the per-group learning rates in one table, and the warnings that matter most, ranked. Plain
strings (no terminal library), so the same lines serve a terminal, a notebook and a test.
"""

from __future__ import annotations

import math
import textwrap

# Warning topics, most important first: what changes how far a user can trust the plan.
WARNING_RANKS = (
    "outside the (m_L, m_N) hull",
    "x the parameters",
    "no shape is in the band",
    "edge is not identified",
    "do not pin down the irreducible loss",
    "vocabulary",
    "measured at one size",
    "repeated data",
    "head size",
)
MAX_WARNINGS = 3
WARNING_LINES = 4  # lines one warning may take before it is cut


def rank_warnings(warnings: list[str]) -> list[str]:
    """Warnings ordered by :data:`WARNING_RANKS` (unknown topics after the known ones, in order)."""
    def rank(item):
        i, w = item
        hit = next((k for k, key in enumerate(WARNING_RANKS) if key in w), len(WARNING_RANKS))
        return (hit, i)

    return [w for _, w in sorted(enumerate(warnings), key=rank)]


def _pct(x) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.0%}"


def _saving_line(name: str, s: dict) -> str:
    has = s.get("low") is not None and s.get("high") is not None and math.isfinite(s["low"])
    bound = " (bound)" if has and s["high"] >= 0.9995 else ""
    interval = f"[{_pct(s['low'])}, {_pct(s['high'])}{bound}]" if has else "(no interval)"
    verdict = "significant" if s.get("significant") else "not significant"
    point = _pct(s["fraction"]) + ("" if s.get("reachable", True) else " (bound)")
    return f"  vs {name:<9} {point:>6} {interval:<22} {verdict}"


def plan_brief(plan: dict, width: int = 80, command: str = "cp-plan recommend ... --details") -> list[str]:
    """The one-screen lines of a plan (``Plan.to_dict()``)."""
    p = plan
    out = [f"Plan: {p['parameterization']} at {p['n_params']:.3g} non-embedding params on {p['hardware']['name']}"]
    pi = p.get("pick_interval") or [float("nan")] * 2
    interval = (f"; 95% {pi[0]:.3g}-{pi[1]:.3g}" if all(math.isfinite(x) for x in pi) else "")
    out.append(f"  shape    n_embd {p['n_embd']}, n_layer {p['n_layer']}, {p['n_head']} heads of {p['d_head']} "
               f"(N:L {p['ratio']:.3g}{interval})")
    out.append(f"  tokens   {p['n_tokens']:.3g} ({p['target']['tokens_per_param']:g}/param), "
               f"FLOPs {p['flops']:.3g} ({p['flop_convention']})")
    lo, hi = p["predicted_loss_interval"]
    unit = (p.get("loss_unit") or "").split(" (")[0]
    out.append(f"  loss     {p['predicted_loss']:.4g} {unit} [{lo:.4g}, {hi:.4g}] (expected loss, 95%)")
    if p.get("savings"):
        out.append(f"Compute {p['parameterization']} saves at this N:L (same loss; 95% interval):")
        out += [_saving_line(name, s) for name, s in p["savings"].items()]
    hp = p.get("hparams")
    if hp:
        out.append(f"Per-group hyperparameters (base N {hp['base_n_embd']}, L {hp['base_n_layer']}; "
                   f"m_N {hp['width_mult']:.3g}, m_L {hp['depth_mult']:.3g}):")
        out.append(f"  {'group':<14}{'init std':>10}{'peak LR':>11}{'wd':>8}{'AdamW eps':>11}")
        for g in hp["groups"].values():
            std = "—" if g["init_std"] is None else f"{g['init_std']:.3g}"
            out.append(f"  {g['group']:<14}{std:>10}{g['lr']:>11.3g}{g['weight_decay']:>8.3g}{g['eps']:>11.2g}")
        out.append(f"  residual x{hp['residual_mult']:.3g}, logits x{hp['output_mult']:.3g}, "
                   f"attention scale {hp['attn_scale_kind']}")
    warnings = rank_warnings(list(p.get("warnings") or []))
    if warnings:
        shown = warnings[:MAX_WARNINGS]
        out.append(f"Warnings ({len(shown)} of {len(warnings)}, most important first):")
        for w in shown:
            lines = textwrap.wrap(w, width=width - 4)
            if len(lines) > WARNING_LINES:
                lines = lines[:WARNING_LINES]
                lines[-1] = lines[-1][: width - 5] + "…"
            out += ["  ! " + lines[0]] + ["    " + x for x in lines[1:]]
    out.append("More (band, alternatives, assumptions, every warning):")
    out.append(f"  {command}")
    return out
