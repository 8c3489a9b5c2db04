"""The planner: ``make_plan(target, hardware, laws) -> Plan`` (no torch, no plotly).

A short pipeline of small pure steps, each testable alone, read top to bottom in the order the
plan is made. Steps 1, 2 and 5 are here; steps 3–4 live in :mod:`planner.candidates` and step 6 in
:mod:`planner.assumptions`; the bands, savings, hardware models and laws they call live in their
own modules.

1. :func:`resolve_scale` — the target's non-embedding P (given, or derived from a FLOP budget
   along the law's loss-optimal N:L at tpp·P tokens).
2. :func:`bands` — per parameterization, the compute-efficient band at (P, tpp·P) under the
   criterion (:mod:`planner.band`: default, at most 20% more compute to reach the best shape's
   loss), searched inside the N:L range its runs covered, each edge with an interval and marked
   identified or not (an edge on the trained range's edge is not).
3. :func:`planner.candidates.candidates` — shapes on the hardware's grid (width a multiple of
   the head size and of ``width_multiple``, depth of ``depth_step``) for a log grid of N:L over
   the feasible range, each judged by the chosen law at the target (P, tpp·P) and its own N:L:
   excess over the best shape, probability of being in the band over the law's samples, and the
   hardware's refusals.
4. :func:`planner.candidates.pick` — the profile's objective among *supported* shapes: inside the
   trained N:L range, in the median band, and in the band for at least ``confidence`` (default
   0.9) times the share of the law's samples that the best-supported shape gets (with
   well-determined laws: in the band for 90% of the samples). Far beyond the runs the laws
   disagree about where the band ends, and the pick stays where they agree instead of at the
   median edge; ``loss`` objectives take the lowest predicted loss among all feasible shapes.
5. :func:`savings_at` — compute saved against every other parameterization at the pick's N:L
   (planner.savings), paired intervals, each marked significant or not.
6. :func:`planner.assumptions.assumptions_for` — what the plan rests on: largest trained P and
   tokens and the extrapolation factors, data set, unit of loss, criterion, intervals, with
   warnings a user can act on.

A law is any object with ``predict(n_params=, n_tokens=, ratio=) -> (mean, low, high)`` and
``predict_samples(...) -> (S, n)`` (``planner.planlaws``; tests use closed-form laws).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from planner.assumptions import (assumptions_for, extrapolation_of, hull_distances, missing_field_warnings,
                                 plan_warnings, transferred_hparams)
from planner.band import DEFAULT_OVERHEAD, SAMPLES_KEY, Criterion, compute_band
from planner.candidates import alternatives, candidates, feasible_ratio_range, pick, pick_interval
from planner.errors import CpPlanError
from planner.hardware import HardwareProfile, load_profile
from planner.rules import parse_parameterization
from planner.savings import family_flops, flop_savings
from planner.shapes import FLOP_CONVENTION, Shape, training_flops

DEFAULT_VOCAB_SIZE = 50257  # GPT-2 BPE, the tokenizer of the paper's runs; FLOPs only (6NV)
DEFAULT_SEQ_LEN = 2048
DEFAULT_TPP = 20.0  # tokens per non-embedding parameter (Hoffmann et al. 2022; the paper's setting)
DEFAULT_TOLERANCE = 0.01  # total-loss criterion (the paper's wording at 1.5B), when chosen
DEFAULT_CONFIDENCE = 0.9  # a pick must be in the band for this share of the law's samples
DEFAULT_PARAM_TOLERANCE = 0.10  # candidate shapes within 10% of the target non-embedding count
MAX_N_PARAMS = 1e16  # beyond any model a planner should be asked about (10 000× today's largest)


@dataclass(frozen=True)
class Target:
    """What the user asks for: a scale (exactly one of ``n_params`` and ``flops``) and settings."""

    n_params: float | None = None  # non-embedding parameters
    flops: float | None = None  # training FLOPs under FLOP_CONVENTION
    tokens_per_param: float = DEFAULT_TPP
    parameterization: str = "completep"
    band_criterion: str = "compute"  # compute (scale-free, default) | deficit | loss
    max_overhead: float = DEFAULT_OVERHEAD  # compute criterion: fraction of extra compute
    tolerance: float = DEFAULT_TOLERANCE  # loss criterion: relative loss tolerance
    confidence: float = DEFAULT_CONFIDENCE
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
        if self.n_params is not None and self.n_params > MAX_N_PARAMS:
            raise CpPlanError(f"--params {self.n_params:g} is beyond {MAX_N_PARAMS:g} non-embedding parameters, "
                              "where no law fitted on measured runs means anything; ask for a smaller model")
        if self.flops is not None and self.flops > 6 * MAX_N_PARAMS * MAX_N_PARAMS * 1e3:
            raise CpPlanError(f"--flops {self.flops:g} is beyond any model up to {MAX_N_PARAMS:g} parameters; "
                              "ask for a smaller budget")
        if not (isinstance(self.tokens_per_param, (int, float)) and math.isfinite(self.tokens_per_param)
                and 0 < self.tokens_per_param <= 1e6):
            raise CpPlanError(f"--tpp {self.tokens_per_param!r} must be a positive number of tokens "
                              "per parameter, e.g. 20")
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise CpPlanError(f"--tolerance {self.tolerance!r} must be a relative loss tolerance in "
                              "[0, 1), e.g. 0.01 for 1%")
        self.criterion()  # validates band_criterion and max_overhead
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence < 1):
            raise CpPlanError(f"--confidence {self.confidence!r} must be in (0, 1), e.g. 0.9")
        if not (isinstance(self.param_tolerance, (int, float)) and 0 < self.param_tolerance < 1):
            raise CpPlanError(f"param_tolerance={self.param_tolerance!r} must be in (0, 1), e.g. 0.1")
        for name, flag in (("vocab_size", "--vocab-size"), ("seq_len", "--seq-len")):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CpPlanError(f"{flag} {value!r} must be a positive integer")
        if self.d_head is not None and (not isinstance(self.d_head, int) or self.d_head < 1):
            raise CpPlanError(f"--d-head {self.d_head!r} must be a positive integer, e.g. 64")
        _parse_key(self.parameterization)  # unknown names fail here

    def criterion(self) -> Criterion:
        threshold = self.tolerance if self.band_criterion == "loss" else self.max_overhead
        return Criterion(self.band_criterion, threshold)


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
    predicted_loss: float  # the law's expected loss (median over its samples)
    predicted_loss_interval: list  # [low, high]: the law's uncertainty (refits and forms)
    pick_interval: list  # [low, high] N:L: the shape this profile picks under each law sample
    band: dict  # parameterization -> band (planner.band.compute_band, plus trained_range, n_runs)
    savings: dict  # other parameterization -> {fraction, low, high, significant, ...}
    hparams: dict | None  # per-group values from planner.rules (None when the runs lack a base shape)
    alternatives: list  # shapes that lost, each with its reason
    reason: str  # why this shape won
    assumptions: dict
    warnings: list = field(default_factory=list)
    criterion: dict = field(default_factory=dict)
    extrapolation: dict = field(default_factory=dict)  # {"n_params": ×, "n_tokens": ×, ...}
    loss_unit: str = ""
    predicted_run_loss_interval: list | None = None  # one run: adds seed noise (None: laws carry none)

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


def loss_optimal_ratio(law, n_params: float, tokens_per_param: float, ratio_range: tuple[float, float]) -> float:
    """The N:L of the lowest median predicted loss at (P, tpp·P) on a log grid over ``ratio_range``."""
    lo, hi = ratio_range
    grid = np.logspace(math.log10(lo), math.log10(hi), 161) if hi > lo else np.array([lo])
    loss = np.median(np.asarray(law.predict_samples(n_params=np.full(grid.size, n_params),
                                                    n_tokens=np.full(grid.size, tokens_per_param * n_params),
                                                    ratio=grid), float), axis=0)
    return float(grid[int(np.nanargmin(loss))])


def params_for_flops(flops: float, law, tokens_per_param: float, vocab_size: int, seq_len: int,
                     d_head: int, ratio_range: tuple[float, float] | None) -> tuple[float, float]:
    """P whose loss-optimal shape trained on tpp·P tokens costs ``flops`` (FLOP_CONVENTION).

    The optimal N:L drifts with P, so a few fixed-point rounds: ratio → P (bisection on the
    monotone family FLOPs) → the law's best ratio at that P. Returns (P, ratio used)."""
    ratio = 32.0
    p = 0.0
    for _ in range(6):
        lo, hi = 1.0, 1e18
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            c = float(family_flops(mid, ratio, tokens_per_param, vocab_size, seq_len))
            lo, hi = (mid, hi) if c < flops else (lo, mid)
            if hi / lo < 1 + 1e-10:
                break
        p = math.sqrt(lo * hi)
        rr = _search_range(feasible_ratio_range(p, d_head), ratio_range)[0]
        new = loss_optimal_ratio(law, p, tokens_per_param, rr)
        done = abs(new / ratio - 1) < 1e-3
        ratio = new
        if done:
            break
    return p, ratio


def _search_range(feasible: tuple[float, float], trained: tuple[float, float] | None):
    """Trained ∩ feasible N:L; (feasible, False) when they do not overlap."""
    if trained is None:
        return feasible, True
    lo, hi = max(feasible[0], trained[0]), min(feasible[1], trained[1])
    if lo > hi:
        return feasible, False
    return (lo, hi), True


def _trained_range(ctx: Mapping | None) -> tuple[float, float] | None:
    if not ctx:
        return None
    lo, hi = ctx.get("ratio_min"), ctx.get("ratio_max")
    if lo is None or hi is None or not (lo > 0 and hi >= lo):
        return None
    return float(lo), float(hi)


# ---------------------------------------------------------------------- 1. scale


def resolve_scale(target: Target, law, trained, d_head: int) -> tuple[float, str | None]:
    """(non-embedding P, note) for the target: given, or derived from its FLOP budget."""
    if target.n_params is not None:
        n_params, note = float(target.n_params), None
    else:
        n_params, ratio_used = params_for_flops(target.flops, law, target.tokens_per_param,
                                                target.vocab_size, target.seq_len, d_head, trained)
        if n_params > MAX_N_PARAMS:
            raise CpPlanError(f"--flops {target.flops:g} buys {n_params:.3g} parameters, beyond {MAX_N_PARAMS:g}; "
                              "ask for a smaller budget")
        note = (f"--flops {target.flops:.3g} → n_params {n_params:.4g}: the P whose loss-optimal "
                f"shape (N:L {ratio_used:.3g}) trained on {target.tokens_per_param:g} tokens/param "
                f"costs that many FLOPs under {FLOP_CONVENTION}")
    if n_params < 12 * d_head**2 + 15 * d_head:
        raise CpPlanError(f"--params {n_params:.3g} is too small for even one layer of width "
                          f"{d_head}; use at least {12 * d_head**2 + 15 * d_head:.3g} or a smaller --d-head")
    return n_params, note


# ---------------------------------------------------------------------- 2. bands


def bands(laws: Mapping[str, Any], contexts: Mapping[str, Mapping], n_params: float, target: Target,
          feasible: tuple[float, float], key: str) -> tuple[dict, list[str]]:
    """The band of every law at (P, tpp·P), each over its own trained N:L range."""
    out, warnings = {}, []
    crit = target.criterion()
    for name, law in laws.items():
        t_range = _trained_range(contexts.get(name))
        rr, overlap = _search_range(feasible, t_range)
        if not overlap:
            warnings.append(f"{name}: no {n_params:.3g}-parameter shape lies in the trained N:L range "
                            f"{t_range[0]:.3g}-{t_range[1]:.3g}; its band is searched over every feasible N:L")
        try:
            b = compute_band(law, n_params, target.tokens_per_param, crit, rr, t_range if overlap else None,
                             target.vocab_size, target.seq_len)
        except CpPlanError as exc:
            if name == key:
                raise
            warnings.append(f"{name}: no band ({exc})")
            continue
        b["trained_range"] = list(t_range) if t_range else None
        b["n_runs"] = (contexts.get(name) or {}).get("n_runs")
        out[name] = b
    return out, warnings


def bands_distinguishable(band: dict) -> bool:
    """Whether the parameterizations' bands differ beyond their edge intervals: some pair has a
    low edge whose interval excludes the other's point edge."""
    names = list(band)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = band[a]["edges"]["low"], band[b]["edges"]["low"]
            if not (ea["interval"][0] <= eb["ratio"] <= ea["interval"][1]) or \
                    not (eb["interval"][0] <= ea["ratio"] <= eb["interval"][1]):
                return True
    return False


# ---------------------------------------------------------------------- 5. savings


def savings_at(laws: Mapping[str, Any], key: str, shape: Shape, target: Target,
               contexts: Mapping[str, Mapping] | None = None) -> tuple[dict, list[str]]:
    """Compute ``key`` saves against every other law at the pick's N:L and tokens/param line
    (each other law floored below its smallest run, from ``contexts``: planner.savings)."""
    out, warnings = {}, []
    for name, other in laws.items():
        if name == key:
            continue
        try:
            s = flop_savings(laws[key], other, float(shape.n_params), shape.ratio,
                             tokens_per_param=target.tokens_per_param, vocab_size=target.vocab_size,
                             seq_len=target.seq_len, reference=key, other=name,
                             other_min_n_params=((contexts or {}).get(name) or {}).get("min_n_params"))
        except CpPlanError as exc:
            warnings.append(f"savings vs {name}: {exc}")
            continue
        d = s.to_dict()
        finite = math.isfinite(s.low) and math.isfinite(s.high)
        d["significant"] = bool(s.reachable and finite and (s.low > 0 or s.high < 0))
        d["note"] = ("a bound, not a measurement: the other law does not cross this loss within 1000x the "
                     "parameters" if not s.reachable else
                     "significant: the interval excludes 0" if d["significant"] else
                     "not significant: the interval crosses 0" if finite else "no interval (no law samples)")
        out[name] = d
        if not s.reachable:
            warnings.append(f"savings vs {name}: its law does not reach {key}'s predicted loss within "
                            "1000x the parameters at this N:L; the fraction is a bound")
    return out, warnings


# ---------------------------------------------------------------------- the planner


def _objective_words(hw: HardwareProfile) -> str:
    return {
        "deepest": "deepest shape",
        "step_time": "fastest estimated training step",
        "latency": "lowest estimated per-token latency",
        "loss": "lowest predicted loss",
    }[hw.objective]


def _resolve_key(target: Target, laws: Mapping) -> str:
    key = target.parameterization
    if key not in laws:
        canon = law_key_for(key)
        key = canon if canon in laws else key
    if key not in laws:
        have = ", ".join(sorted(laws)) or "none"
        raise CpPlanError(
            f"no shape law for parameterization {target.parameterization!r} (laws exist for: {have}); "
            f"use --parameterization with one of those, or add {target.parameterization} runs with "
            "`cp-plan sweep shape`")
    return key


def make_plan(target: Target, hardware: HardwareProfile | str, laws: Mapping[str, Any],
              context: Mapping[str, Mapping] | None = None, meta: Mapping | None = None) -> Plan:
    """Recommend a shape for ``target`` on ``hardware`` from per-parameterization ``laws``: the
    pipeline of the module docstring. ``context`` maps parameterization → facts about the runs
    behind its law (``ratio_min``, ``ratio_max``, ``max_n_params``, ``max_n_tokens``, ``base``,
    ...; see ``planner.lawcache``); ``meta`` describes the laws. Without context the N:L search
    is not limited to the trained range and the plan carries no transferred hyperparameters."""
    hw = load_profile(hardware)
    context = context or {}
    meta = dict(meta or {})
    key = _resolve_key(target, laws)
    law, ctx = laws[key], context.get(key) or {}
    d_head = target.d_head or hw.d_head
    if target.d_head is not None and target.d_head != hw.d_head:
        hw = replace(hw, d_head=target.d_head)
    trained = _trained_range(ctx)

    n_params, flops_note = resolve_scale(target, law, trained, d_head)
    feasible = feasible_ratio_range(n_params, d_head)
    band, warnings = bands(laws, context, n_params, target, feasible, key)
    cands = candidates(law, n_params, hw, d_head, band[key], target, trained, feasible)
    chosen, pick_rule, pick_warnings = pick(cands, hw, target, n_params)
    warnings += pick_warnings
    pick_range = pick_interval(cands, band[key], hw, target)
    for b in band.values():
        b.pop(SAMPLES_KEY, None)

    shape = chosen.shape
    n_tokens = int(round(target.tokens_per_param * shape.n_params))
    flops = training_flops(shape.n_embd, shape.n_layer, target.vocab_size, target.seq_len, n_tokens)
    mean, low, high = _predict(law, [shape.n_params], [n_tokens], [shape.ratio])
    if hasattr(law, "predict_run"):
        run = law.predict_run(n_params=np.array([shape.n_params]), n_tokens=np.array([n_tokens]),
                              ratio=np.array([shape.ratio]))
        run_interval = [float(run[1][0]), float(run[2][0])]
    else:  # a laws file without seed noise (`cp-plan fit --out`): no interval for one run
        run_interval = None
    savings, sav_warnings = savings_at(laws, key, shape, target, context)
    warnings += sav_warnings
    hparams, hp_note = transferred_hparams(key, shape, ctx)
    extrap = extrapolation_of(shape, n_tokens, ctx)
    extrap["hull_distance"], hull_warnings = hull_distances(laws, context, shape)
    warnings += hull_warnings
    warnings += plan_warnings(key, target, ctx, laws, hparams, d_head, extrap, band)
    warnings += missing_field_warnings(key, laws, ctx, hparams)
    if len(band) > 1 and not bands_distinguishable(band):
        warnings.append("the parameterizations' bands cannot be told apart at this scale: every low edge lies "
                        "inside the others' intervals")
    assumptions = assumptions_for(key, shape, n_tokens, target, ctx, meta, hp_note, hw, d_head, extrap,
                                  flops_note, pick_rule)
    crit = target.criterion()
    return Plan(
        target={
            "n_params": target.n_params, "flops": target.flops, "n_params_used": n_params,
            "tokens_per_param": target.tokens_per_param, "parameterization": key,
            "band_criterion": crit.kind, "threshold": crit.threshold, "tolerance": target.tolerance,
            "max_overhead": target.max_overhead, "confidence": target.confidence,
            "vocab_size": target.vocab_size, "seq_len": target.seq_len, "d_head": d_head, "hardware": hw.name,
        },
        hardware={"name": hw.name, "objective": hw.objective, "description": hw.description,
                  **hw.cost(shape, target.vocab_size, target.seq_len)},
        parameterization=key,
        n_embd=shape.n_embd, n_layer=shape.n_layer, n_head=shape.n_head, d_head=shape.d_head,
        ratio=shape.ratio, n_params=shape.n_params, n_tokens=n_tokens, flops=float(flops),
        flop_convention=FLOP_CONVENTION,
        predicted_loss=float(mean[0]), predicted_loss_interval=[float(low[0]), float(high[0])],
        pick_interval=pick_range, band=band, savings=savings, hparams=hparams,
        alternatives=alternatives(cands, chosen, target, hw),
        reason=f"{_objective_words(hw)} on {hw.name}, {pick_rule}",
        assumptions=assumptions, warnings=warnings, criterion=crit.to_dict(), extrapolation=extrap,
        loss_unit=assumptions["loss_unit"], predicted_run_loss_interval=run_interval,
    )


