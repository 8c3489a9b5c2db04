"""The planner: ``recommend(target, hardware, laws) -> Plan`` (no torch, no plotly).

Steps (DESIGN.md, "Planner"):

1. Target scale. ``n_params`` P (non-embedding) is given, or derived from a FLOP budget C: the P
   whose shape at the law's loss-optimal N:L, trained on tpp·P tokens, costs C under
   ``planner.shapes.FLOP_CONVENTION`` (6P + 6NV + 12LNT per token).
2. Band, per parameterization: the N:L whose predicted loss at (P, tpp·P) is within
   ``tolerance`` (relative) of the best N:L, searched on a log grid over the N:L range the runs
   behind the law covered (the law is not trusted outside it) and the range a P-parameter model
   can have (width ≥ one head, depth ≥ 1).
3. Candidates: every width on the hardware's grid (multiple of the head size and of
   ``width_multiple``) with the depth on the hardware's grid whose exact non-embedding count is
   nearest P. A shape is refused when the hardware rules it out, when its exact count is more than
   ``param_tolerance`` off P, or when its N:L lies outside the trained range. Shapes are compared
   by the law's loss at the target (P, tpp·P) and their own N:L, so rounding does not favour a
   shape for having a few more parameters.
4. Pick: the profile's objective among feasible shapes in the band (``loss`` objectives: among all
   feasible shapes). Alternatives: the loss-optimal shape, the pick's neighbours, the band's edges
   and the first shapes outside it, each with the reason it lost.
5. Report: exact counts of the pick (planner.shapes), tokens tpp × its exact P, FLOPs, predicted
   loss with the law's bootstrap interval, FLOP savings against every other parameterization at
   the pick's N:L (planner.savings), the per-group hyperparameters transferred from the base shape
   of the runs (planner.rules), and the assumptions including the extrapolation factor.

A law is any object with ``predict(n_params=, n_tokens=, ratio=) -> (mean, low, high)`` and
``predict_samples(...) -> (B, n)`` (``planner.laws.FitResult`` of the ``shape`` law).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from planner.errors import CpPlanError
from planner.hardware import HardwareProfile, load_profile
from planner.rules import BaseHParams, parse_parameterization, resolve_shape
from planner.savings import family_flops, flop_savings
from planner.shapes import FLOP_CONVENTION, Shape, make_shape, training_flops

DEFAULT_VOCAB_SIZE = 50257  # GPT-2 BPE, the tokenizer of the paper's runs; FLOPs only (6NV)
DEFAULT_SEQ_LEN = 2048
DEFAULT_TPP = 20.0  # tokens per non-embedding parameter (Hoffmann et al. 2022; the paper's setting)
DEFAULT_TOLERANCE = 0.01  # band: within 1% of the best loss (the paper's definition)
DEFAULT_PARAM_TOLERANCE = 0.10  # candidate shapes within 10% of the target non-embedding count
RATIO_GRID = 400  # band search resolution (log-spaced N:L)
MAX_ALTERNATIVES = 6


@dataclass(frozen=True)
class Target:
    """What the user asks for: a scale (exactly one of ``n_params`` and ``flops``) and settings."""

    n_params: float | None = None  # non-embedding parameters
    flops: float | None = None  # training FLOPs under FLOP_CONVENTION
    tokens_per_param: float = DEFAULT_TPP
    parameterization: str = "completep"
    tolerance: float = DEFAULT_TOLERANCE  # relative loss tolerance of the band
    vocab_size: int = DEFAULT_VOCAB_SIZE
    seq_len: int = DEFAULT_SEQ_LEN
    d_head: int | None = None  # None: the hardware profile's head size
    param_tolerance: float = DEFAULT_PARAM_TOLERANCE

    def __post_init__(self) -> None:
        if (self.n_params is None) == (self.flops is None):
            raise CpPlanError("give exactly one of --params (non-embedding parameters) and --flops")
        for name in ("n_params", "flops"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                flag = "--params" if name == "n_params" else "--flops"
                shown = f"{value:g}" if isinstance(value, (int, float)) else repr(value)
                raise CpPlanError(f"{flag} {shown} must be a positive number, e.g. {flag} "
                                  f"{'1.5e9' if name == 'n_params' else '3e20'}")
        if not (isinstance(self.tokens_per_param, (int, float)) and math.isfinite(self.tokens_per_param)
                and self.tokens_per_param > 0):
            raise CpPlanError(f"--tpp {self.tokens_per_param!r} must be a positive number of tokens "
                              "per parameter, e.g. 20")
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise CpPlanError(f"--tolerance {self.tolerance!r} must be a relative loss tolerance in "
                              "[0, 1), e.g. 0.01 for 1%")
        if not (isinstance(self.param_tolerance, (int, float)) and 0 < self.param_tolerance < 1):
            raise CpPlanError(f"param_tolerance={self.param_tolerance!r} must be in (0, 1), e.g. 0.1")
        for name, flag in (("vocab_size", "--vocab-size"), ("seq_len", "--seq-len")):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CpPlanError(f"{flag} {value!r} must be a positive integer")
        if self.d_head is not None and (not isinstance(self.d_head, int) or self.d_head < 1):
            raise CpPlanError(f"--d-head {self.d_head!r} must be a positive integer, e.g. 64")
        _parse_key(self.parameterization)  # unknown names fail here


@dataclass(frozen=True)
class Plan:
    """A recommendation; ``to_dict()`` gives the plain-JSON form printed by ``--json``."""

    target: dict  # the inputs, repeated
    hardware: dict  # profile name, objective, and the pick's cost under its model
    parameterization: str
    n_embd: int
    n_layer: int
    n_head: int
    d_head: int
    ratio: float  # N:L
    n_params: int  # exact non-embedding count of this shape
    n_tokens: int  # tokens_per_param × n_params
    flops: float  # training FLOPs under flop_convention
    flop_convention: str
    predicted_loss: float
    predicted_loss_interval: list  # [low, high], the law's bootstrap interval
    band: dict  # parameterization -> N:L range within tolerance of the best
    savings: dict  # other parameterization -> {fraction, low, high, ...}
    hparams: dict | None  # per-group values from planner.rules (None when the runs lack a base shape)
    alternatives: list  # shapes that lost, each with its reason
    reason: str  # why this shape won
    assumptions: dict
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------- law helpers


def _parse_key(name: str) -> tuple[str, float | None]:
    """A parameterization as the laws key it: a preset name, or ``depth-alpha:<α>``."""
    base, _, alpha = str(name).partition(":")
    try:
        return parse_parameterization(base, float(alpha) if alpha else None)
    except ValueError:
        raise CpPlanError(f"parameterization {name!r}: α {alpha!r} is not a number; use e.g. "
                          "depth-alpha:0.75") from None


def law_key_for(name: str) -> str:
    """The laws key of a parameterization name (as planner.lawcache.law_key)."""
    canon, alpha = _parse_key(name)
    return f"depth-alpha:{alpha:g}" if canon == "depth-alpha" else canon


def _predict(law, n_params, n_tokens, ratio):
    """The law's (mean, low, high) at equal-length sequences of inputs, as float arrays."""
    mean, low, high = law.predict(n_params=np.asarray(n_params, dtype=float),
                                  n_tokens=np.asarray(n_tokens, dtype=float),
                                  ratio=np.asarray(ratio, dtype=float))
    return np.asarray(mean, float), np.asarray(low, float), np.asarray(high, float)


def _loss_at(law, n_params: float, n_tokens: float, ratios) -> np.ndarray:
    ratios = np.atleast_1d(np.asarray(ratios, dtype=float))
    n = len(ratios)
    mean = law.predict(n_params=np.full(n, float(n_params)), n_tokens=np.full(n, float(n_tokens)),
                       ratio=ratios)[0]
    return np.asarray(mean, dtype=float)


def feasible_ratio_range(n_params: float, d_head: int) -> tuple[float, float]:
    """N:L of the deepest (width = one head) and shallowest (depth 1) P-parameter shapes."""
    n_min = float(d_head)
    l_max = (n_params - 2 * n_min) / (12 * n_min**2 + 13 * n_min)
    # depth 1: 12N² + 15N = P
    n_max = (-15 + math.sqrt(225 + 48 * n_params)) / 24
    lo = n_min / l_max if l_max > 0 else n_max
    return lo, max(lo, n_max)


def band_for(law, n_params: float, n_tokens: float, tolerance: float,
             ratio_range: tuple[float, float]) -> dict:
    """N:L within ``tolerance`` of the law's best loss at (P, D), on a log grid over ``ratio_range``."""
    lo, hi = ratio_range
    grid = np.logspace(math.log10(lo), math.log10(hi), RATIO_GRID) if hi > lo else np.array([lo])
    loss = _loss_at(law, n_params, n_tokens, grid)
    if not np.isfinite(loss).any():
        raise CpPlanError("the shape law predicts no finite loss at this scale; refit the laws "
                          "(delete the laws cache or pass --laws) and check the runs behind them")
    best_i = int(np.nanargmin(loss))
    best = float(loss[best_i])
    inside = loss <= best * (1 + tolerance)
    idx = np.nonzero(inside)[0]
    return {
        "ratio_min": float(grid[idx.min()]),
        "ratio_max": float(grid[idx.max()]),
        "best_ratio": float(grid[best_i]),
        "best_loss": best,
        "tolerance": tolerance,
        "searched": [float(lo), float(hi)],
        "reaches_low_edge": bool(inside[0]) and len(grid) > 1,  # the band may extend deeper than searched
        "reaches_high_edge": bool(inside[-1]) and len(grid) > 1,
        "contiguous": bool(idx.max() - idx.min() + 1 == len(idx)),
    }


def params_for_flops(flops: float, law, tokens_per_param: float, vocab_size: int, seq_len: int,
                     d_head: int, ratio_range: tuple[float, float] | None) -> tuple[float, float]:
    """P whose loss-optimal shape trained on tpp·P tokens costs ``flops`` (FLOP_CONVENTION).

    The optimal N:L drifts with P, so a few fixed-point rounds: ratio → P (bisection on the
    monotone family FLOPs) → the law's best ratio at that P. Returns (P, ratio used)."""
    ratio = 32.0
    p = 0.0
    for _ in range(6):
        lo, hi = 1.0, 1e16
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            c = float(family_flops(mid, ratio, tokens_per_param, vocab_size, seq_len))
            lo, hi = (mid, hi) if c < flops else (lo, mid)
            if hi / lo < 1 + 1e-10:
                break
        p = math.sqrt(lo * hi)
        rr = feasible_ratio_range(p, d_head)
        if ratio_range is not None:
            rr = (max(rr[0], ratio_range[0]), min(rr[1], ratio_range[1]))
            if rr[0] > rr[1]:
                rr = (ratio_range[0], ratio_range[1])
        new = band_for(law, p, tokens_per_param * p, 0.0, rr)["best_ratio"]
        if abs(new / ratio - 1) < 1e-3:
            ratio = new
            break
        ratio = new
    return p, ratio


# ---------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class _Candidate:
    shape: Shape
    loss_at_target: float  # law loss at (target P, target D, this N:L)
    refusals: tuple  # why the shape cannot be used (empty: feasible)


def candidate_shapes(n_params: float, hardware: HardwareProfile, d_head: int | None = None) -> list[Shape]:
    """For every width on the hardware's grid (with head size ``d_head``, default the profile's),
    the depth on its grid nearest ``n_params``."""
    if d_head is not None and d_head != hardware.d_head:
        hardware = _with_d_head(hardware, d_head)
    d_head = hardware.d_head
    step = hardware.width_step
    depth_step = hardware.depth_step
    out = []
    n_embd = step
    while True:
        per_layer = 12 * n_embd * n_embd + 13 * n_embd
        exact_layers = (n_params - 2 * n_embd) / per_layer
        if exact_layers < 0.5 * depth_step and out:
            break
        n_layer = max(depth_step, int(round(exact_layers / depth_step)) * depth_step)
        out.append(make_shape(n_embd, n_layer, d_head))
        if exact_layers < 0.5 * depth_step:
            break
        n_embd += step
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
        out.append(f"N:L {shape.ratio:.3g} outside the trained {trained[0]:.3g}–{trained[1]:.3g}")
    return tuple(out)


# ---------------------------------------------------------------------- the planner


def _trained_range(ctx: Mapping | None) -> tuple[float, float] | None:
    if not ctx:
        return None
    lo, hi = ctx.get("ratio_min"), ctx.get("ratio_max")
    if lo is None or hi is None or not (lo > 0 and hi >= lo):
        return None
    return float(lo), float(hi)


def _objective_words(hw: HardwareProfile) -> str:
    return {
        "deepest": "deepest shape",
        "step_time": "fastest estimated training step",
        "latency": "lowest estimated per-token latency",
        "loss": "lowest predicted loss",
    }[hw.objective]


def _lost_reason(c: _Candidate, pick: _Candidate, best_loss: float, tolerance: float,
                 in_band: bool, hw: HardwareProfile, vocab: int, seq_len: int) -> str:
    if c.refusals:
        return "; ".join(c.refusals)
    excess = c.loss_at_target / best_loss - 1
    if hw.uses_band and not in_band:
        return f"outside the band ({excess:+.2%} > {tolerance:.2%})"
    if hw.objective == "deepest":
        if c.shape.n_layer < pick.shape.n_layer:
            return f"shallower ({c.shape.n_layer} < {pick.shape.n_layer} layers)"
        return f"same depth, higher loss ({excess:+.2%})"
    if hw.objective == "step_time":
        t, t0 = hw.step_time_s(c.shape, vocab, seq_len), hw.step_time_s(pick.shape, vocab, seq_len)
        return f"slower (est. step time {t / t0 - 1:+.1%})" if t > t0 else \
            f"equal step time, higher loss ({excess:+.2%})"
    if hw.objective == "latency":
        t, t0 = hw.latency_s(c.shape, vocab), hw.latency_s(pick.shape, vocab)
        return f"higher latency ({t / t0 - 1:+.1%} per token)" if t > t0 else \
            f"equal latency, higher loss ({excess:+.2%})"
    return f"higher predicted loss ({excess:+.3%})"


def recommend(target: Target, hardware: HardwareProfile | str, laws: Mapping[str, Any],
              context: Mapping[str, Mapping] | None = None, meta: Mapping | None = None) -> Plan:
    """Recommend a shape for ``target`` on ``hardware`` from per-parameterization shape ``laws``.

    ``context`` maps parameterization → facts about the runs behind its law (``ratio_min``,
    ``ratio_max``, ``max_n_params``, ``tokens_per_param``, ``base`` hyperparameters, ``devices``,
    ``sources``, ...; see ``planner.lawcache``); ``meta`` describes the laws (fingerprint,
    bootstrap, origin). Both are optional: without them the N:L search is not limited to the
    trained range and the plan carries no transferred hyperparameters, and it says so.
    """
    hw = load_profile(hardware)
    context = context or {}
    meta = dict(meta or {})
    key = target.parameterization
    if key not in laws:
        canon = law_key_for(key)
        key = canon if canon in laws else key
    if key not in laws:
        have = ", ".join(sorted(laws)) or "none"
        raise CpPlanError(
            f"no shape law for parameterization {target.parameterization!r} (laws exist for: {have}); "
            f"use --parameterization with one of those, or add {target.parameterization} runs with "
            "`cp-plan sweep shape`"
        )
    law = laws[key]
    ctx = context.get(key) or {}
    d_head = target.d_head or hw.d_head
    if target.d_head is not None and target.d_head != hw.d_head:
        hw = _with_d_head(hw, target.d_head)
    trained = _trained_range(ctx)
    warnings: list[str] = []

    if target.n_params is not None:
        n_params = float(target.n_params)
        flops_note = None
    else:
        n_params, ratio_used = params_for_flops(target.flops, law, target.tokens_per_param,
                                                target.vocab_size, target.seq_len, d_head, trained)
        flops_note = (f"--flops {target.flops:.3g} → n_params {n_params:.4g}: the P whose loss-optimal "
                      f"shape (N:L {ratio_used:.3g}) trained on {target.tokens_per_param:g} tokens/param "
                      f"costs that many FLOPs under {FLOP_CONVENTION}")
    n_tokens_target = target.tokens_per_param * n_params

    feasible = feasible_ratio_range(n_params, d_head)
    if feasible[1] <= feasible[0] or n_params < 12 * d_head**2 + 15 * d_head:
        raise CpPlanError(f"--params {n_params:.3g} is too small for even one layer of width "
                          f"{d_head}; use at least {12 * d_head**2 + 15 * d_head:.3g} or a smaller --d-head")

    # 2. Bands, per parameterization, each over its own trained N:L range.
    band = {}
    for name, one_law in laws.items():
        t_range = _trained_range(context.get(name))
        rr = feasible
        if t_range is not None:
            rr = (max(feasible[0], t_range[0]), min(feasible[1], t_range[1]))
            if rr[0] > rr[1]:
                warnings.append(f"{name}: no {n_params:.3g}-parameter shape lies in the trained N:L "
                                f"range {t_range[0]:.3g}–{t_range[1]:.3g}; its band is searched over "
                                "every feasible N:L")
                rr = feasible
        try:
            band[name] = band_for(one_law, n_params, n_tokens_target, target.tolerance, rr)
        except CpPlanError as exc:
            if name == key:
                raise
            warnings.append(f"{name}: no band ({exc})")
            continue
        band[name]["trained_range"] = list(t_range) if t_range else None
        band[name]["n_runs"] = (context.get(name) or {}).get("n_runs")
    best_loss = band[key]["best_loss"]

    # 3. Candidates, judged by the chosen parameterization's law.
    shapes = candidate_shapes(n_params, hw, d_head)
    losses = _loss_at(law, n_params, n_tokens_target, [s.ratio for s in shapes])
    best_loss = min(best_loss, float(np.nanmin(losses)))
    cands = [
        _Candidate(s, float(l), _refusals(s, hw, n_params, target.param_tolerance, trained))
        for s, l in zip(shapes, losses)
    ]
    in_band = {c.shape: bool(c.loss_at_target <= best_loss * (1 + target.tolerance)) for c in cands}
    usable = [c for c in cands if not c.refusals and np.isfinite(c.loss_at_target)]
    if not usable:
        why = sorted({r for c in cands for r in c.refusals})[:3]
        raise CpPlanError(
            f"no shape of {n_params:.3g} non-embedding parameters fits hardware profile {hw.name!r} "
            f"({'; '.join(why)}); relax the profile (e.g. max_layer_bytes, pipeline_stages) or change --params"
        )
    pool = [c for c in usable if in_band[c.shape]] if hw.uses_band else usable
    if not pool:  # the constraints (or a zero tolerance and shape rounding) leave no shape in the band
        pool = [min(usable, key=lambda c: c.loss_at_target)]
    score = lambda c: hw.score(c.shape, c.loss_at_target, target.vocab_size, target.seq_len)  # noqa: E731
    pick = min(pool, key=score)
    if not in_band[pick.shape]:
        warnings.append(f"the pick's predicted loss is {pick.loss_at_target / best_loss - 1:+.2%} over the "
                        f"best shape, outside the {target.tolerance:.2%} band ({hw.name} constraints bind)")

    shape = pick.shape
    n_tokens = int(round(target.tokens_per_param * shape.n_params))
    flops = training_flops(shape.n_embd, shape.n_layer, target.vocab_size, target.seq_len, n_tokens)
    mean, low, high = _predict(law, [shape.n_params], [n_tokens], [shape.ratio])

    # 4. Alternatives.
    alternatives = _alternatives(cands, pick, in_band, best_loss, target, hw)

    # 5. Savings against every other parameterization, at the pick's N:L.
    savings = {}
    for name, other in laws.items():
        if name == key:
            continue
        try:
            s = flop_savings(law, other, float(shape.n_params), shape.ratio,
                             tokens_per_param=target.tokens_per_param, vocab_size=target.vocab_size,
                             seq_len=target.seq_len, reference=key, other=name)
        except CpPlanError as exc:
            warnings.append(f"savings vs {name}: {exc}")
            continue
        savings[name] = s.to_dict()
        if not s.reachable:
            warnings.append(f"savings vs {name}: its law does not reach {key}'s predicted loss within "
                            "1000× the parameters at this N:L; the fraction is a bound")

    hparams, hp_note = _hparams(key, shape, ctx)

    cost = hw.cost(shape, target.vocab_size, target.seq_len)
    largest = ctx.get("max_n_params")
    assumptions = {
        "extrapolation": (shape.n_params / largest) if largest else None,
        "extrapolation_note": (f"target is {shape.n_params / largest:.3g}× the largest run behind the "
                               f"{key} law ({largest:.3g} non-embedding params)") if largest
        else "unknown: the laws carry no run context (pass --db)",
        "largest_n_params_in_laws": largest,
        "tokens_per_param": target.tokens_per_param,
        "runs_tokens_per_param": ctx.get("tokens_per_param"),
        "flop_convention": FLOP_CONVENTION,
        "flop_convention_note": "training FLOPs = (6P + 6NV + 12LNT) × tokens: non-embedding params, "
                                "unembedding and attention scores/values (PaLM appendix B); "
                                "savings also give the 6ND figure",
        "band_basis": "loss at the target P and tpp·P tokens with N:L varied; band within "
                      f"{target.tolerance:.2%} of the best, searched inside the trained N:L range",
        "shapes": f"head size {d_head} fixed, width a multiple of {math.lcm(hw.width_step, d_head)}, "
                  f"depth a multiple of {hw.depth_step}; n_params within "
                  f"{target.param_tolerance:.0%} of the target",
        "vocab_size": target.vocab_size,
        "seq_len": target.seq_len,
        "runs_vocab_sizes": ctx.get("vocab_sizes"),
        "runs_seq_lens": ctx.get("seq_lens"),
        "data": ctx.get("sources"),
        "device": ctx.get("devices"),
        "runs_d_head": ctx.get("d_heads"),
        "n_runs": ctx.get("n_runs"),
        "max_epochs": ctx.get("max_epochs"),
        "interval": "bootstrap percentile interval of the shape law (refits on resampled runs)",
        "hparams": hp_note,
        "laws": meta,
    }
    if target.n_params is None:
        assumptions["from_flops"] = flops_note
    if ctx.get("max_epochs") and ctx["max_epochs"] > 1:
        warnings.append(f"some runs behind the {key} law repeated data ({ctx['max_epochs']:.3g} epochs)")
    run_heads = [h for h in (ctx.get("d_heads") or []) if isinstance(h, (int, float))]
    if hparams is not None and run_heads and d_head not in run_heads:
        warnings.append(f"head size {d_head} differs from the runs' ({', '.join(f'{h:g}' for h in run_heads)}); "
                        "the transferred hyperparameters assume the head size is held fixed (--d-head)")
    if largest and shape.n_params / largest > 100:
        warnings.append(f"extrapolating {shape.n_params / largest:.3g}× beyond the largest run; "
                        "treat the loss and savings as the law's, not as measurements")
    law_warnings = " ".join(getattr(laws.get(key), "warnings", None) or [])
    if "E ended on its bound" in law_warnings or "E is not identifiable" in law_warnings:
        warnings.append("the runs do not pin down the irreducible loss E (held at its bound), so the "
                        "predicted loss is conditional on it: compare shapes and parameterizations, "
                        "not absolute losses; add a larger scale to identify E")

    return Plan(
        target={
            "n_params": target.n_params, "flops": target.flops, "n_params_used": n_params,
            "tokens_per_param": target.tokens_per_param, "parameterization": key,
            "tolerance": target.tolerance, "vocab_size": target.vocab_size,
            "seq_len": target.seq_len, "d_head": d_head, "hardware": hw.name,
        },
        hardware={"name": hw.name, "objective": hw.objective, "description": hw.description, **cost},
        parameterization=key,
        n_embd=shape.n_embd, n_layer=shape.n_layer, n_head=shape.n_head, d_head=shape.d_head,
        ratio=shape.ratio, n_params=shape.n_params, n_tokens=n_tokens, flops=float(flops),
        flop_convention=FLOP_CONVENTION,
        predicted_loss=float(mean[0]), predicted_loss_interval=[float(low[0]), float(high[0])],
        band=band, savings=savings, hparams=hparams, alternatives=alternatives,
        reason=(f"{_objective_words(hw)} on {hw.name}"
                + (f" within {target.tolerance:.2%} of the best loss" if hw.uses_band else
                   " among shapes the hardware allows")),
        assumptions=assumptions, warnings=warnings,
    )


def _with_d_head(hw: HardwareProfile, d_head: int) -> HardwareProfile:
    """The profile with another head size (--d-head); its width_multiple, if any, still holds."""
    from dataclasses import replace

    return replace(hw, d_head=d_head)


def _alternatives(cands: list, pick: _Candidate, in_band: dict, best_loss: float,
                  target: Target, hw: HardwareProfile) -> list:
    """A few informative losers: the loss-optimal shape, the pick's neighbours in N:L, the band's
    edges and the first shapes outside it, the nearest shape the hardware refuses."""
    order = sorted(cands, key=lambda c: c.shape.ratio)
    i = next(k for k, c in enumerate(order) if c.shape == pick.shape)
    chosen: list[_Candidate] = []

    def add(c):
        if c is not None and c.shape != pick.shape and c not in chosen:
            chosen.append(c)

    feasible = [c for c in order if not c.refusals]
    add(min(feasible, key=lambda c: c.loss_at_target, default=None))
    add(order[i - 1] if i > 0 else None)
    add(order[i + 1] if i + 1 < len(order) else None)
    band_idx = [k for k, c in enumerate(order) if in_band[c.shape] and not c.refusals]
    if band_idx:
        add(order[band_idx[0]])
        add(order[band_idx[-1]])
        add(order[band_idx[0] - 1] if band_idx[0] > 0 else None)
        add(order[band_idx[-1] + 1] if band_idx[-1] + 1 < len(order) else None)
    refused = [c for c in order if c.refusals]
    add(min(refused, key=lambda c: abs(math.log(c.shape.ratio / pick.shape.ratio)), default=None))
    out = []
    for c in sorted(chosen[:MAX_ALTERNATIVES], key=lambda c: c.shape.ratio):
        s = c.shape
        row = {
            "n_embd": s.n_embd, "n_layer": s.n_layer, "n_head": s.n_head, "ratio": s.ratio,
            "n_params": s.n_params,
            "loss_vs_best": c.loss_at_target / best_loss - 1,
            "in_band": in_band[s],
            "feasible": not c.refusals,
            "reason": _lost_reason(c, pick, best_loss, target.tolerance, in_band[s], hw,
                                   target.vocab_size, target.seq_len),
        }
        row.update(hw.cost(s, target.vocab_size, target.seq_len))
        out.append(row)
    return out


def _hparams(key: str, shape: Shape, ctx: Mapping) -> tuple[dict | None, str]:
    """Per-group hyperparameters for ``shape``, transferred from the runs' base shape and HPs."""
    base = ctx.get("base") if ctx else None
    if not base or not base.get("base_n_embd") or not base.get("base_n_layer") or not base.get("lr"):
        return None, ("no transferred hyperparameters: the runs behind the law record no base shape "
                      "and base LR (imported runs?); use `cp-plan hparams` with your own base")
    hp = BaseHParams(
        lr=float(base["lr"]),
        init_std=float(base.get("init_std") or BaseHParams.init_std),
        weight_decay=float(base["weight_decay"]) if base.get("weight_decay") is not None else BaseHParams.weight_decay,
        eps=float(base.get("eps") or BaseHParams.eps),
        input_mult=float(base.get("input_mult") or 1.0),
        output_mult=float(base.get("output_mult") or 1.0),
    )
    alpha = base.get("alpha")
    name = key.split(":")[0]
    if name in ("completep", "alpha0.5", "sp", "mup"):
        alpha = None
    rules = resolve_shape(name, shape.n_embd, shape.n_layer, int(base["base_n_embd"]),
                          int(base["base_n_layer"]), hp, alpha)
    out = rules.to_dict()
    out.update(base_n_embd=int(base["base_n_embd"]), base_n_layer=int(base["base_n_layer"]),
               attn_scale=rules.attn_scale(shape.d_head))
    note = (f"transferred from base shape N={base['base_n_embd']} L={base['base_n_layer']}, "
            f"η={hp.lr:g}, σ={hp.init_std:g}, λ={hp.weight_decay:g}, ε={hp.eps:g} "
            f"({base.get('note') or 'the runs behind the law'})")
    return out, note
