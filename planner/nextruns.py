"""Which runs to train next: the ones that shrink the plan's uncertainty the most per FLOP.

The plan's intervals (:mod:`planner.recommend`) are percentiles over the laws' paired samples s
(bootstrap refits of every shape-law form, in proportion to its weight, and of each
parameterization's gap). The quantities a user acts on are, per sample:

- the **pick's N:L**: for a profile that takes the deepest shape in the band (``deepest``) that is
  the deep edge of the chosen parameterization's band, for the others the loss-optimal N:L (the
  band's centre), both in ln N:L at the target (P, tpp·P), searched as the plan searches them
  (:func:`planner.band.excess_samples` over the plan's N:L range);
- the **deep band edge** of the chosen parameterization (the same quantity on ``deepest``);
- the **savings** against every other parameterization at the pick's N:L (as :mod:`planner.savings`
  computes its interval, one crossing per sample).

A candidate run j (a parameterization, a shape on the runs' own head-size grid at a P one to a few
times the largest trained, inside the trained N:L range, trained on the runs' tokens per
parameter) would measure y_j = the law's loss there plus seed noise ε ~ N(0, σ²), σ the laws' seed
noise (``meta['noise']['sigma_loss']``). Where the samples disagree about y_j, the run tells
them apart; it matters for quantity q as far as q and y_j move together across the samples.
Treating (q, y) as jointly Gaussian with the samples' covariance Σ (each column winsorized at its
1st/99th percentile so that a few wild refits do not set it), observing y_j shrinks Var(q) by

    ΔVar(q | y_j) = Cov(q, y_j)² / (Var(y_j) + σ²)                (linear-Gaussian conditioning)

and conditions the whole covariance, Σ ← Σ − Σ·j Σj· / (Σjj + σ²), so a second run that measures
what the first already pinned down gains little (and a replicate of the same run gains what the
extra seed averages away). One step may also add the runs of one shape under several
parameterizations together (:func:`candidate_groups`), conditioning on them jointly
(Σ·J (ΣJJ + σ²I)⁻¹ ΣJ·): a gap is measured by a pair, which neither run of it shows alone. The
design is greedy: repeatedly add the candidate with the largest
Σ_q ΔVar(q)/Var₀(q) (fractional variance removed, summed over the quantities) per training FLOP
(:data:`planner.shapes.FLOP_CONVENTION`) that still fits the remaining budget, until the budget
or ``max_runs`` is spent or no run removes more than :data:`MIN_GAIN`. This is the classic
sequential design for linear models (expected information per cost, e.g. Chaloner & Verdinelli
1995, §2; here on the ensemble of refits, as an ensemble Kalman update).

**Preview, refit-free**: the expected interval after the runs is the current one scaled about its
median by √(Var_after/Var_before) of that quantity. It is the interval the refit should give if the
runs land where the laws' samples put them; only a refit with the measured losses tells. The
Gaussian step ignores that far-off samples can be ruled out entirely, so on skewed intervals it is
conservative, and it cannot see forms the laws do not contain.

No torch here; the sweep file the CLI writes from a proposal lives in :mod:`trainer.sweepfile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from planner.band import excess_samples, ratio_grid
from planner.errors import CpPlanError
from planner.hardware import HardwareProfile, load_profile
from planner.recommend import Target, make_plan
from planner.savings import SPAN, GRID, crossing, family_flops
from planner.shapes import FLOP_CONVENTION, shape_for_params, training_flops

DEFAULT_P_MULTS = (1.0, 2.0, 4.0, 8.0, 16.0)  # candidate P, in units of the largest trained P
DEFAULT_N_RATIOS = 9  # log grid of N:L over each parameterization's trained range
DEFAULT_MAX_RUNS = 16
MIN_GAIN = 1e-3  # stop when the best run removes less than 0.1% of the summed variance
WINSOR = (1.0, 99.0)  # percentiles each sample column is clipped to before the covariance
LEVEL = 0.95


@dataclass(frozen=True)
class CandidateRun:
    """One run the design may propose: a parameterization and a concrete shape."""

    parameterization: str  # the laws key: completep, mup, sp, alpha0.5, depth-alpha:<α>
    n_embd: int
    n_layer: int
    n_head: int
    d_head: int
    n_params: int  # exact non-embedding count
    n_tokens: int
    flops: float  # training FLOPs under FLOP_CONVENTION with the runs' vocabulary and context
    p_mult: float  # the asked P over the largest trained P of this parameterization

    @property
    def ratio(self) -> float:
        return self.n_embd / self.n_layer


@dataclass(frozen=True)
class Quantity:
    """A plan quantity per law sample: ``samples`` (S,), ``log``: the samples are ln of the value."""

    name: str
    description: str
    samples: np.ndarray
    log: bool
    point: float  # the plan's own number for it (the value, not its log)


@dataclass
class Proposal:
    """The design and what it is expected to do to the plan's intervals."""

    target: dict
    budget_flops: float
    flops_used: float
    runs: list  # dicts, in the order the greedy design took them
    quantities: list  # dicts: name, point, interval before, expected interval after, variance kept
    sigma_loss: float
    candidates_considered: int
    stopped: str  # why the design stopped
    method: str
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("target", "budget_flops", "flops_used", "runs", "quantities",
                                              "sigma_loss", "candidates_considered", "stopped", "method",
                                              "warnings")}


METHOD = ("greedy sequential design: each run maximizes the summed fractional variance it removes from "
          "the plan's quantities, Cov(q, y)^2 / (Var(y) + sigma^2) over the laws' samples (linear-Gaussian "
          "conditioning), per training FLOP; the expected interval after is the current one scaled by "
          "sqrt(Var_after / Var_before) (refit-free preview)")


# ---------------------------------------------------------------------- the plan's quantities per sample


def _percentiles(x: np.ndarray, level: float = LEVEL) -> list[float]:
    x = x[np.isfinite(x)]
    if not x.size:
        return [float("nan")] * 2
    tail = (1 - level) / 2 * 100
    return [float(v) for v in np.percentile(x, [tail, 100 - tail])]


def savings_samples(reference_law, other_law, n_params: float, ratio: float, tokens_per_param: float,
                    vocab_size: int, seq_len: int) -> np.ndarray:
    """Per paired sample, the fraction of ``other``'s compute that ``reference`` saves at the same
    loss, N:L and tokens/param (the per-refit values behind :func:`planner.savings.flop_savings`'s
    interval); NaN where a sample predicts no finite loss."""
    p = float(n_params)
    grid = p * np.logspace(-math.log10(SPAN), math.log10(SPAN), GRID)
    ref = np.asarray(reference_law.predict_samples(n_params=np.array([p]), n_tokens=np.array([tokens_per_param * p]),
                                                   ratio=np.array([float(ratio)])), float)[:, 0]
    oth = np.asarray(other_law.predict_samples(n_params=grid, n_tokens=tokens_per_param * grid,
                                               ratio=np.full(GRID, float(ratio))), float)
    b = min(len(ref), len(oth))
    ref, oth = ref[:b], oth[:b]
    out = np.full(b, np.nan)
    ok = np.isfinite(ref) & np.isfinite(oth).all(axis=1)
    if ok.any():
        log_grid = np.log(grid)
        lp, hit, _ = crossing(log_grid, oth[ok], ref[ok])
        p_oth = np.where(hit, np.exp(np.minimum(lp, log_grid[-1])), grid[-1])
        c_ref = family_flops(p, ratio, tokens_per_param, vocab_size, seq_len)
        out[ok] = 1.0 - c_ref / family_flops(p_oth, ratio, tokens_per_param, vocab_size, seq_len)
    return out


def plan_quantities(plan, laws: Mapping[str, Any], hardware: HardwareProfile, target: Target) -> list[Quantity]:
    """The plan's quantities per law sample (module docstring), computed as the plan computes them."""
    key = plan.parameterization
    law = laws[key]
    band = plan.band[key]
    p_used = float(plan.target["n_params_used"])
    tpp = float(plan.target["tokens_per_param"])
    vocab, seq = int(plan.target["vocab_size"]), int(plan.target["seq_len"])
    ratios = ratio_grid(*band["searched"])
    excess, loss = excess_samples(law, p_used, tpp, ratios, target.criterion(), vocab, seq)
    thr = band["criterion"]["threshold"]
    inside = excess <= thr
    deep = np.where(inside.any(axis=1), ratios[np.argmax(inside, axis=1)], np.nan)
    best = ratios[np.argmin(np.where(np.isfinite(loss), loss, np.inf), axis=1)]
    finite = np.isfinite(loss).any(axis=1)
    deep, best = np.where(finite, deep, np.nan), np.where(finite, best, np.nan)
    out = []
    if hardware.objective == "deepest":
        out.append(Quantity("pick_ratio", f"the pick's N:L = the {key} band's deep edge (deepest shape in the band)",
                            np.log(deep), True, float(band["edges"]["low"]["ratio"])))
    else:
        out.append(Quantity("pick_ratio", f"the pick's N:L, near the {key} law's loss-optimal N:L",
                            np.log(best), True, float(band["best_ratio"])))
        out.append(Quantity("deep_edge", f"the {key} band's deep edge", np.log(deep), True,
                            float(band["edges"]["low"]["ratio"])))
    for name, s in plan.savings.items():
        f = savings_samples(law, laws[name], float(plan.n_params), float(plan.ratio), tpp, vocab, seq)
        out.append(Quantity(f"savings:{name}", f"{key}'s compute saving over {name} at the pick's N:L",
                            f, False, float(s["fraction"])))
    return out


# ---------------------------------------------------------------------- candidate runs


def _reference_name(laws: Mapping[str, Any], meta: Mapping, key: str) -> str:
    """The parameterization the others' gaps are measured against (planner.planlaws), else ``key``."""
    ref = meta.get("reference") or getattr(getattr(laws.get(key), "reference", None), "name", None)
    return ref if ref in laws else key


def _split_key(key: str) -> tuple[str, float | None]:
    name, _, alpha = str(key).partition(":")
    return name, (float(alpha) if alpha else None)


def candidate_runs(laws: Mapping[str, Any], context: Mapping[str, Mapping], *, d_head: int, vocab_size: int,
                   seq_len: int, p_mults=DEFAULT_P_MULTS, n_ratios: int = DEFAULT_N_RATIOS,
                   parameterizations=None) -> list[CandidateRun]:
    """Shapes worth considering: for each parameterization with a law and a run context, P at
    ``p_mults`` × its largest trained P, N:L on a log grid over its trained range, rounded to
    the runs' head size (duplicates once), trained on the runs' tokens per parameter."""
    out, seen = [], set()
    for key in (parameterizations or sorted(laws)):
        ctx = context.get(key) or {}
        if key not in laws or not ctx.get("max_n_params") or not ctx.get("ratio_min") or not ctx.get("ratio_max"):
            continue
        lo, hi = float(ctx["ratio_min"]), float(ctx["ratio_max"])
        tpp_range = ctx.get("tokens_per_param") or [20.0, 20.0]
        tpp = float(np.median(tpp_range))
        for mult in p_mults:
            p = float(ctx["max_n_params"]) * float(mult)
            for r in ratio_grid(lo, hi, n_ratios):
                s = shape_for_params(p, float(r), d_head)
                if not (lo / 1.25 <= s.ratio <= hi * 1.25) or (key, s.n_embd, s.n_layer) in seen:
                    continue
                seen.add((key, s.n_embd, s.n_layer))
                n_tokens = int(round(tpp * s.n_params))
                out.append(CandidateRun(key, s.n_embd, s.n_layer, s.n_head, d_head, s.n_params, n_tokens,
                                        float(training_flops(s.n_embd, s.n_layer, vocab_size, seq_len, n_tokens)),
                                        float(mult)))
    return out


def candidate_samples(laws: Mapping[str, Any], cands: list[CandidateRun]) -> np.ndarray:
    """(S, m): each candidate's predicted loss under every law sample (samples paired across laws)."""
    cols = []
    for c in cands:
        s = laws[c.parameterization].predict_samples(n_params=np.array([float(c.n_params)]),
                                                     n_tokens=np.array([float(c.n_tokens)]),
                                                     ratio=np.array([c.ratio]))
        cols.append(np.asarray(s, float)[:, 0])
    n = min(len(c) for c in cols)
    return np.stack([c[:n] for c in cols], axis=1)


# ---------------------------------------------------------------------- the design


def _clean(x: np.ndarray) -> np.ndarray:
    """Columns with NaN/inf set to the column median and clipped to WINSOR percentiles."""
    x = np.array(x, float)
    for j in range(x.shape[1]):
        col = x[:, j]
        good = np.isfinite(col)
        if not good.any():
            x[:, j] = 0.0
            continue
        lo, med, hi = np.percentile(col[good], [WINSOR[0], 50, WINSOR[1]])
        x[:, j] = np.clip(np.where(good, col, med), lo, hi)
    return x


def candidate_groups(cands: list[CandidateRun], reference: str | None) -> list[tuple[int, ...]]:
    """What the design may add in one step: each run alone, and runs of one shape under several
    parameterizations together (the reference with each other one, and all of them). A gap is
    measured by a pair of runs at one shape, which neither run shows alone: the greedy step must
    see the pair to value it."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(cands):
        by_shape.setdefault((c.n_embd, c.n_layer), []).append(i)
    groups = [(i,) for i in range(len(cands))]
    for members in by_shape.values():
        if len(members) < 2:
            continue
        ref = [i for i in members if cands[i].parameterization == reference]
        if ref:
            groups += [(ref[0], i) for i in members if i != ref[0]]
        if len(members) > 2 or not ref:
            groups.append(tuple(members))
    return groups


def greedy_design(q: np.ndarray, y: np.ndarray, flops: np.ndarray, sigma: float, budget_flops: float,
                  max_runs: int = DEFAULT_MAX_RUNS, min_gain: float = MIN_GAIN, groups=None):
    """Greedy per-FLOP design (module docstring) on the samples ``q`` (S, k) of the plan's
    quantities and ``y`` (S, m) of the candidates' predicted losses; ``groups`` (default: each
    candidate alone) are the sets of candidates one step may add, observed jointly. Returns
    (picks: list of (candidate indices, gain)), variance of each quantity before and after (k,),
    and why it stopped."""
    q, y = _clean(q), _clean(y)
    k, m = q.shape[1], y.shape[1]
    groups = [tuple(g) for g in (groups or [(j,) for j in range(m)])]
    cov = np.atleast_2d(np.cov(np.concatenate([q, y], axis=1), rowvar=False))
    var0 = np.diag(cov)[:k].copy()
    scale = np.where(var0 > 0, var0, np.inf)
    noise = float(sigma) ** 2
    flops = np.asarray(flops, float)
    cost = np.array([flops[list(g)].sum() for g in groups])
    picks, left, why, n_runs = [], float(budget_flops), "budget spent", 0

    def gain_of(g):
        idx = [k + j for j in g]
        s_jj = cov[np.ix_(idx, idx)] + noise * np.eye(len(idx))
        s_qj = cov[:k, idx]
        try:
            sol = np.linalg.solve(s_jj, s_qj.T)  # (|g|, k)
        except np.linalg.LinAlgError:
            return 0.0
        return float(np.sum(np.sum(s_qj * sol.T, axis=1) / scale))

    while True:
        fits = (cost <= left) & (np.array([len(g) for g in groups]) <= max_runs - n_runs)
        if n_runs >= max_runs:
            why = f"max runs ({max_runs}) reached"
            break
        if not fits.any():
            why = "budget spent: no candidate fits the FLOPs left"
            break
        gains = np.array([gain_of(g) if ok else 0.0 for g, ok in zip(groups, fits)])
        per_flop = np.where(fits, gains / cost, -np.inf)
        b = int(np.argmax(per_flop))
        if gains[b] < min_gain * len(groups[b]):
            why = f"no candidate that fits the budget removes more than {min_gain:.1%} of the variance"
            break
        idx = [k + j for j in groups[b]]
        s_jj = cov[np.ix_(idx, idx)] + noise * np.eye(len(idx))
        cov = cov - cov[:, idx] @ np.linalg.solve(s_jj, cov[idx, :])
        picks.append((groups[b], float(gains[b])))
        left -= cost[b]
        n_runs += len(groups[b])
    return picks, var0, np.maximum(np.diag(cov)[:k], 0.0), why


def propose(laws: Mapping[str, Any], context: Mapping[str, Mapping], meta: Mapping | None, target: Target,
            hardware: HardwareProfile | str, budget_flops: float, *, d_head: int, vocab_size: int, seq_len: int,
            max_runs: int = DEFAULT_MAX_RUNS, p_mults=DEFAULT_P_MULTS, n_ratios: int = DEFAULT_N_RATIOS,
            sigma_loss: float | None = None) -> Proposal:
    """The runs to train next for ``target`` on ``hardware`` within ``budget_flops`` (module
    docstring). ``d_head``, ``vocab_size`` and ``seq_len`` are the runs' own training settings (the
    candidates are trained like the runs behind the laws, not like the target model)."""
    if not (isinstance(budget_flops, (int, float)) and math.isfinite(budget_flops) and budget_flops > 0):
        raise CpPlanError(f"--budget-flops {budget_flops!r} must be a positive number of training FLOPs, e.g. 1e15")
    if not (isinstance(max_runs, int) and max_runs >= 1):
        raise CpPlanError(f"--max-runs {max_runs!r} must be a positive integer, e.g. 16")
    hw = load_profile(hardware)
    meta = dict(meta or {})
    plan = make_plan(target, hw, laws, context, meta)
    key = plan.parameterization
    quantities = plan_quantities(plan, laws, hw, target)
    if sigma_loss is None:
        sigma_loss = float((meta.get("noise") or {}).get("sigma_loss") or getattr(laws[key], "sigma_loss", 0.0) or 0.0)
    if not (math.isfinite(sigma_loss) and sigma_loss >= 0):
        raise CpPlanError(f"seed noise {sigma_loss!r} must be a non-negative loss")
    cands = candidate_runs(laws, context, d_head=d_head, vocab_size=vocab_size, seq_len=seq_len,
                           p_mults=p_mults, n_ratios=n_ratios)
    if not cands:
        raise CpPlanError("no candidate runs: the laws carry no run context (largest P, trained N:L range); "
                          "fit them from a run database (--db)")
    flops = np.array([c.flops for c in cands])
    warnings = []
    cheapest = float(flops.min())
    if cheapest > budget_flops:
        raise CpPlanError(f"--budget-flops {budget_flops:.3g} buys no run: the cheapest candidate (at the largest "
                          f"trained P) costs {cheapest:.3g} FLOPs; give at least that")
    y = candidate_samples(laws, cands)
    qs = np.stack([qq.samples for qq in quantities], axis=1)
    n = min(len(qs), len(y))
    groups = candidate_groups(cands, _reference_name(laws, meta, key))
    picks, var0, var1, why = greedy_design(qs[:n], y[:n], flops, sigma_loss, float(budget_flops), max_runs,
                                           groups=groups)
    if not picks:
        warnings.append("no run is expected to narrow the plan's intervals: the laws' samples agree at every "
                        "candidate to within the seed noise")
    replicate: dict[tuple, int] = {}
    runs, used = [], 0.0
    for step, (group, gain) in enumerate(picks):
        # runs of one step share a replicate index (their seed): a pair measures its gap paired
        rep = max(replicate.get((cands[j].parameterization, cands[j].n_embd, cands[j].n_layer), 0) for j in group)
        group_flops = sum(cands[j].flops for j in group)
        for j in group:
            c = cands[j]
            replicate[(c.parameterization, c.n_embd, c.n_layer)] = rep + 1
            name, alpha = _split_key(c.parameterization)
            med, lo, hi = (float(v[0]) for v in laws[c.parameterization].predict(
                n_params=np.array([float(c.n_params)]), n_tokens=np.array([float(c.n_tokens)]),
                ratio=np.array([c.ratio])))
            used += c.flops
            runs.append({
                "parameterization": name, "alpha": alpha, "law": c.parameterization,
                "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "d_head": c.d_head, "ratio": c.ratio,
                "n_params": c.n_params, "n_tokens": c.n_tokens, "tokens_per_param": c.n_tokens / c.n_params,
                "flops": c.flops, "p_over_largest": c.n_params / float(context[c.parameterization]["max_n_params"]),
                "replicate": rep, "step": step + 1, "step_gain": gain, "step_gain_per_flop": gain / group_flops,
                "predicted_loss": med, "predicted_loss_interval": [lo, hi],
            })
    qout = []
    for i, qq in enumerate(quantities):
        x = qq.samples[np.isfinite(qq.samples)]
        before = _percentiles(qq.samples)
        med = float(np.median(x)) if x.size else float("nan")
        kept = float(var1[i] / var0[i]) if var0[i] > 0 else 1.0
        k = math.sqrt(max(kept, 0.0))
        after = [med - (med - before[0]) * k, med + (before[1] - med) * k]
        tr = (lambda v: float(np.exp(v))) if qq.log else float
        qout.append({
            "name": qq.name, "description": qq.description, "point": qq.point,
            "interval": [tr(v) for v in before], "expected_interval_after": [tr(v) for v in after],
            "variance_kept": kept, "scale": "ln" if qq.log else "linear",
        })
    return Proposal(
        target={"n_params": plan.target["n_params_used"], "hardware": hw.name, "parameterization": key,
                "pick": {"n_embd": plan.n_embd, "n_layer": plan.n_layer, "ratio": plan.ratio},
                "tokens_per_param": plan.target["tokens_per_param"], "runs_d_head": d_head,
                "runs_vocab_size": vocab_size, "runs_seq_len": seq_len, "flop_convention": FLOP_CONVENTION},
        budget_flops=float(budget_flops), flops_used=used, runs=runs, quantities=qout, sigma_loss=sigma_loss,
        candidates_considered=len(cands), stopped=why, method=METHOD, warnings=warnings,
    )
