"""Steps 3 and 4 of the planner (:mod:`planner.recommend`): the candidate shapes on a hardware
profile's grid, each judged by the chosen law's band at the target; the pick among them; and the
alternatives a plan shows with why each lost.

- :func:`candidate_shapes` — shapes of about P on the hardware's grid (width a multiple of the head
  size and of ``width_multiple``, depth of ``depth_step``) for a log grid of N:L over the feasible
  range (:func:`feasible_ratio_range`).
- :func:`candidates` — each shape's median loss at the target (P, tpp·P), its excess over the best
  shape under the band criterion, the share of the law's samples that put it in the band, and the
  hardware's refusals.
- :func:`pick` — the profile's objective among supported shapes (the rule is in
  :mod:`planner.recommend`'s docstring); :func:`pick_interval` — the pick's N:L over the law's
  samples; :func:`alternatives` — a few informative losers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from planner.band import SAMPLES_KEY, excess_at, samples_at
from planner.errors import CpPlanError
from planner.hardware import HardwareProfile
from planner.shapes import Shape, block_params, make_shape

if TYPE_CHECKING:
    from planner.recommend import Target


CANDIDATE_RATIOS = 240  # log grid of N:L behind the candidate widths
MAX_ALTERNATIVES = 6


def feasible_ratio_range(n_params: float, d_head: int) -> tuple[float, float]:
    """N:L of the deepest (width = one head) and shallowest (depth 1) P-parameter shapes."""
    n_min = float(d_head)
    l_max = (n_params - 2 * n_min) / block_params(n_min)
    # depth 1: 12N² + 15N = P
    n_max = (-15 + math.sqrt(225 + 48 * n_params)) / 24
    lo = n_min / l_max if l_max > 0 else n_max
    return lo, max(lo, n_max)


@dataclass(frozen=True)
class Candidate:
    shape: Shape
    loss_at_target: float  # median law loss at (target P, target D, this N:L)
    excess: float  # the criterion's excess over the best shape (median over samples)
    p_in: float  # share of the law's samples that put this N:L in the band
    refusals: tuple  # why the shape cannot be used (empty: feasible)


def candidate_shapes(n_params: float, hardware: HardwareProfile, d_head: int | None = None,
                     ratio_range: tuple[float, float] | None = None, n_grid: int = CANDIDATE_RATIOS) -> list[Shape]:
    """Shapes of about ``n_params`` on the hardware's grid: for a log grid of N:L over
    ``ratio_range`` (default: every feasible N:L) the two widths on the grid around the continuous
    width, each with the depth on its grid nearest ``n_params``. Bounded in size at any scale."""
    from planner.savings import continuous_shape

    if d_head is not None and d_head != hardware.d_head:
        hardware = replace(hardware, d_head=d_head)
    d_head = hardware.d_head
    step, depth_step = hardware.width_step, hardware.depth_step
    lo, hi = ratio_range or feasible_ratio_range(n_params, d_head)
    grid = np.logspace(math.log10(lo), math.log10(hi), n_grid) if hi > lo else np.array([lo])
    widths = set()
    for n in np.atleast_1d(continuous_shape(np.full(grid.size, n_params), grid)[0]):
        base = max(step, int(n // step) * step)
        widths.update((base, base + step))
    out = []
    for n_embd in sorted(widths):
        exact_layers = (n_params - 2 * n_embd) / block_params(n_embd)
        if exact_layers < 0.5 * depth_step and out:
            continue
        n_layer = max(depth_step, int(round(exact_layers / depth_step)) * depth_step)
        out.append(make_shape(n_embd, n_layer, d_head))
    return out


def _refusals(shape: Shape, hardware: HardwareProfile, n_params: float, param_tolerance: float,
              trained: tuple[float, float] | None) -> tuple:
    out = list(hardware.violations(shape))
    off = shape.n_params / n_params - 1
    if abs(off) > param_tolerance:
        why = f"n_params {off:+.0%} off target"
        if hardware.depth_step > 1:
            why += f" (depth multiple of {hardware.depth_step})"
        out.append(why)
    if trained is not None and not (trained[0] * (1 - 1e-9) <= shape.ratio <= trained[1] * (1 + 1e-9)):
        out.append(f"N:L {shape.ratio:.3g} outside the trained {trained[0]:.3g}-{trained[1]:.3g}")
    return tuple(out)


def candidates(law, n_params: float, hw: HardwareProfile, d_head: int, band: dict, target: Target,
               trained: tuple[float, float] | None, feasible: tuple[float, float]) -> list[Candidate]:
    """Step 3: every candidate shape judged by the chosen law's band curves at the target."""
    shapes = candidate_shapes(n_params, hw, d_head, feasible)
    r = np.array([s.ratio for s in shapes])
    with np.errstate(all="ignore"):  # the law's median loss at the target P and tokens, this N:L
        loss = np.nanmedian(np.asarray(law.predict_samples(
            n_params=np.full(r.size, n_params), n_tokens=np.full(r.size, target.tokens_per_param * n_params),
            ratio=r), float), axis=0)
    excess = excess_at(band, r, "excess", np.inf) - band["criterion"]["threshold"]
    p_in = excess_at(band, r, "p_in", 0.0)
    return [Candidate(s, float(l), float(e), float(pi), _refusals(s, hw, n_params, target.param_tolerance, trained))
            for s, l, e, pi in zip(shapes, loss, excess, p_in)]


def pick(cands: list[Candidate], hw: HardwareProfile, target: Target, n_params: float) -> tuple[Candidate, str, list[str]]:
    """The profile's choice among supported shapes (module docstring): (pick, pool rule, warnings)."""
    usable = [c for c in cands if not c.refusals and math.isfinite(c.loss_at_target)]
    if not usable:
        # the reasons of the shapes the laws would otherwise prefer: inside the trained range first
        inside = [c for c in cands if not any("outside the trained" in r for r in c.refusals)] or cands
        near = min(inside, key=lambda c: (c.loss_at_target if math.isfinite(c.loss_at_target) else math.inf))
        why = list(near.refusals)[:3]
        raise CpPlanError(
            f"no shape of {n_params:.3g} non-embedding parameters fits hardware profile {hw.name!r} "
            f"({'; '.join(why)}); relax the profile (e.g. max_layer_bytes, pipeline_stages) or change --params")
    warnings = []
    if not hw.uses_band:
        pool, rule = usable, "among shapes the hardware allows"
    else:
        top = max(c.p_in for c in usable)
        need = target.confidence * top
        pool = [c for c in usable if c.excess <= 0 and c.p_in >= need - 1e-12]
        rule = f"in the band for ≥{need:.0%} of the laws' samples"
        if top < 0.999:
            rule += f" ({target.confidence:.0%} of the best-supported shape's {top:.0%})"
        if top < target.confidence:
            warnings.append(f"no shape is in the band for {target.confidence:.0%} of the law's samples (at most "
                            f"{top:.0%}): the laws are uncertain at this scale, so the pick stays near the "
                            "best-supported shapes; add runs nearer this scale to narrow them")
        if not pool:
            pool = [min(usable, key=lambda c: c.loss_at_target)]
            rule = "the lowest predicted loss (no allowed shape lies in the band)"
    score = lambda c: hw.score(c.shape, c.loss_at_target, target.vocab_size, target.seq_len)  # noqa: E731
    chosen = min(pool, key=score)
    if hw.uses_band and chosen.excess > 0:
        warnings.append(f"the pick lies outside the band ({_excess_words(chosen, target)}): {hw.name} constraints bind")
    return chosen, rule, warnings


def pick_interval(cands: list[Candidate], band: dict, hw: HardwareProfile, target: Target,
                  level: float = 0.95) -> list[float]:
    """The interval of the pick's N:L over the law's samples: for each sample, the shape the
    profile would pick if that sample were the truth (its own band, its own losses), and the
    percentile interval of those N:L. Shapes the hardware refuses never count."""
    usable = [c for c in cands if not c.refusals and math.isfinite(c.loss_at_target)]
    if not usable or SAMPLES_KEY not in band:
        return [float("nan"), float("nan")]
    r = np.array([c.shape.ratio for c in usable])
    loss = samples_at(band, r, "loss")  # (S, n)
    in_band = samples_at(band, r, "excess") <= band["criterion"]["threshold"] if hw.uses_band else np.ones_like(loss, bool)
    if hw.objective == "loss":
        cost = np.zeros(r.size)
    else:
        cost = np.array([hw.score(c.shape, 0.0, target.vocab_size, target.seq_len)[0] for c in usable], float)
    with np.errstate(all="ignore"):
        key = np.where(in_band, cost[None, :] * 1e6 + np.where(np.isfinite(loss), loss, np.inf), np.inf)
    none = ~np.isfinite(key).any(axis=1)
    key[none] = np.where(np.isfinite(loss[none]), loss[none], np.inf)  # no shape in this sample's band
    chosen = r[np.argmin(key, axis=1)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(chosen, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _excess_words(c: Candidate, target: Target) -> str:
    total = c.excess + target.criterion().threshold
    if target.band_criterion != "loss":
        return f"needs {total:+.0%} compute to match the best shape" if math.isfinite(total) else \
            "cannot match the best shape within 4096x the compute"
    return f"loss {total:+.2%} over the best shape"


def _lost_reason(c: Candidate, pick: Candidate, target: Target, hw: HardwareProfile) -> str:
    if c.refusals:
        return "; ".join(c.refusals)
    if hw.uses_band and c.excess > 0:
        return f"outside the band ({_excess_words(c, target)})"
    if hw.uses_band and c.p_in < target.confidence:
        return f"in the band for only {c.p_in:.0%} of the law's samples (< {target.confidence:.0%})"
    worse = c.loss_at_target / pick.loss_at_target - 1
    if hw.objective == "deepest":
        if c.shape.n_layer < pick.shape.n_layer:
            return f"shallower ({c.shape.n_layer} < {pick.shape.n_layer} layers)"
        return f"same depth, higher loss ({worse:+.2%})"
    if hw.objective == "step_time":
        t, t0 = hw.step_time_s(c.shape, target.vocab_size, target.seq_len), hw.step_time_s(pick.shape, target.vocab_size, target.seq_len)
        return f"slower (est. step time {t / t0 - 1:+.1%})" if t > t0 else f"equal step time, higher loss ({worse:+.2%})"
    if hw.objective == "latency":
        t, t0 = hw.latency_s(c.shape, target.vocab_size), hw.latency_s(pick.shape, target.vocab_size)
        return f"higher latency ({t / t0 - 1:+.1%} per token)" if t > t0 else f"equal latency, higher loss ({worse:+.2%})"
    return f"higher predicted loss ({worse:+.3%})"


def alternatives(cands: list[Candidate], pick: Candidate, target: Target, hw: HardwareProfile) -> list:
    """A few informative losers: the loss-optimal shape, the pick's neighbours in N:L, the band's
    edges and the first shapes outside it, the nearest shape the hardware refuses."""
    order = sorted(cands, key=lambda c: c.shape.ratio)
    i = next(k for k, c in enumerate(order) if c.shape == pick.shape)
    chosen: list[Candidate] = []

    def add(c):
        if c is not None and c.shape != pick.shape and c not in chosen:
            chosen.append(c)

    feasible = [c for c in order if not c.refusals and math.isfinite(c.loss_at_target)]
    add(min(feasible, key=lambda c: c.loss_at_target, default=None))
    add(order[i - 1] if i > 0 else None)
    add(order[i + 1] if i + 1 < len(order) else None)
    band_idx = [k for k, c in enumerate(order) if c.excess <= 0 and not c.refusals]
    if band_idx:
        add(order[band_idx[0]])
        add(order[band_idx[-1]])
        add(order[band_idx[0] - 1] if band_idx[0] > 0 else None)
        add(order[band_idx[-1] + 1] if band_idx[-1] + 1 < len(order) else None)
    refused = [c for c in order if c.refusals]
    add(min(refused, key=lambda c: abs(math.log(c.shape.ratio / pick.shape.ratio)), default=None))
    out = []
    best = min((c.loss_at_target for c in feasible), default=pick.loss_at_target)
    for c in sorted(chosen[:MAX_ALTERNATIVES], key=lambda c: c.shape.ratio):
        s = c.shape
        row = {
            "n_embd": s.n_embd, "n_layer": s.n_layer, "n_head": s.n_head, "ratio": s.ratio,
            "n_params": s.n_params,
            "loss_vs_best": c.loss_at_target / best - 1 if math.isfinite(c.loss_at_target) else None,
            "excess": c.excess + target.criterion().threshold if math.isfinite(c.excess) else None,
            "p_in_band": c.p_in,
            "in_band": bool(c.excess <= 0),
            "feasible": not c.refusals,
            "reason": _lost_reason(c, pick, target, hw),
        }
        row.update(hw.cost(s, target.vocab_size, target.seq_len))
        out.append(row)
    return out
