"""The compute-efficient band: which N:L a P-parameter model can have without wasting compute.

**Default criterion, ``compute``** (scale-free): a shape is in the band when reaching the best
shape's loss costs it at most X more training compute than the cheapest way to reach it. For each
law sample s, with ℓ*_s the best loss over N:L at (P, tpp·P), solve L_s(P', tpp·P', r) = ℓ*_s for
P' along r's family (fixed tokens per parameter), and

    overhead_s(r) = C(P'_s(r), r) / min_r' C(P'_s(r'), r') − 1,   C = training FLOPs (FLOP_CONVENTION)

FLOPs count attention (12LNT) and the unembedding (6NV) at the planned context and vocabulary:
at long context a deep-narrow shape really costs more per token (the attention share of a shape's
FLOPs is about T/(6N)), so the band moves with ``--seq-len`` on purpose, and that share shrinks as
models widen. ``deficit`` charges only the loss deficit, (P'_s(r)/P)² − 1 in 6ND compute (per-token
differences left to the hardware objective); ``loss`` is the paper's total-loss tolerance.
The band holds the N:L whose overhead is ≤ X for at least half the samples (median overhead ≤ X),
and each edge carries the percentile interval of the per-sample edges. Under a law whose shape
penalty scales the reducible loss, the overhead does not depend on how much of the loss is
irreducible, so the same X means the same thing at 1e5 and at 1e9 parameters.

**Why X = 20%** (:func:`paper_equivalent_overhead`): the paper's band is "within 1% of the best
loss" at 1.5B non-embedding parameters and 20 tokens/param (Dey et al. 2025, Fig. 1). On the
Cerebras-GPT compute law fitted on the same family of data (Pile, GPT-2 vocabulary, 20 tokens per
parameter; Dey et al. 2023 eq. 1: L(C) = (C/5.984e22)^(−0.0737) + 0.5066), 1% of the loss at that
scale is 1.3% of the reducible loss, which costs a shape 19.8% more compute to make up (the
Chinchilla refit of Besiroglu et al. 2024 gives 24%). A total-loss tolerance instead shrinks to
nothing as the irreducible loss dominates (every shape within 1% at 1e9 on a law with a large E),
which is why it is kept only as an option (``loss``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from planner.errors import CpPlanError
from planner.savings import crossing, family_flops

CRITERIA = ("compute", "deficit", "loss")
CEREBRAS_GPT_LAW = {"c0": 5.984e22, "exponent": 0.0737, "E": 0.5066}  # Dey et al. 2023, eq. 1 (Pile xent)
PAPER_SCALE = {"n_params": 1.5e9, "tokens_per_param": 20.0, "ratio": 62.0, "vocab_size": 50257, "seq_len": 2048}
PAPER_LOSS_TOLERANCE = 0.01
RATIO_GRID = 121  # log-spaced N:L points over the searched range
P_SPAN = 64.0  # search P' up to 64× P (4096× the compute): beyond that the overhead is "too large"
P_GRID = 41
LEVEL = 0.95


def paper_equivalent_overhead(loss_tolerance: float = PAPER_LOSS_TOLERANCE) -> float:
    """The compute overhead equivalent to ``loss_tolerance`` of total loss at the paper's scale, on
    the Cerebras-GPT compute law (module docstring): the X with L(C/(1+X)) = (1+tol)·L(C)."""
    s = PAPER_SCALE
    c = float(family_flops(s["n_params"], s["ratio"], s["tokens_per_param"], s["vocab_size"], s["seq_len"]))
    law = CEREBRAS_GPT_LAW
    reducible = (c / law["c0"]) ** (-law["exponent"])
    total = reducible + law["E"]
    return (1.0 + loss_tolerance * total / reducible) ** (1.0 / law["exponent"]) - 1.0


DEFAULT_OVERHEAD = round(paper_equivalent_overhead(), 2)  # 0.20


@dataclass(frozen=True)
class Criterion:
    """``compute``: overhead ≤ ``threshold`` (fraction of compute); ``loss``: loss within
    ``threshold`` (fraction) of the best."""

    kind: str = "compute"
    threshold: float = DEFAULT_OVERHEAD

    def __post_init__(self) -> None:
        if self.kind not in CRITERIA:
            raise CpPlanError(f"--band-criterion {self.kind!r} is unknown; use one of {', '.join(CRITERIA)}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and 0 <= self.threshold < 10):
            flag = "--tolerance" if self.kind == "loss" else "--max-overhead"
            raise CpPlanError(f"{flag} {self.threshold!r} must be a fraction in [0, 10), e.g. "
                              f"{'0.01 for 1%' if self.kind == 'loss' else '0.2 for 20% more compute'}")

    def describe(self) -> str:
        why = " (the paper's 1%-of-loss band at 1.5B, made scale-free)" if self.threshold == DEFAULT_OVERHEAD else ""
        if self.kind == "compute":
            return (f"reaching the best shape's loss costs at most {self.threshold:.0%} more training compute "
                    f"(attention and unembedding FLOPs included) than the cheapest shape{why}")
        if self.kind == "deficit":
            return (f"making up its loss deficit costs a shape at most {self.threshold:.0%} more training compute "
                    f"than it spends (FLOPs per token not compared){why}")
        return f"predicted loss within {self.threshold:.2%} of the best shape's (total-loss criterion)"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "threshold": self.threshold, "description": self.describe(),
                "unit": "fraction of loss" if self.kind == "loss" else "fraction of compute"}


def ratio_grid(lo: float, hi: float, n: int = RATIO_GRID) -> np.ndarray:
    return np.logspace(math.log10(lo), math.log10(hi), n) if hi > lo * (1 + 1e-9) else np.array([float(lo)])


def excess_samples(law, n_params: float, tokens_per_param: float, ratios: np.ndarray, criterion: Criterion,
                   vocab_size: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Per law sample and N:L, the criterion's excess over that sample's best shape: compute
    overhead or relative loss. Returns (excess (S, n), loss (S, n))."""
    ratios = np.asarray(ratios, float)
    n = ratios.size
    p = float(n_params)
    loss = np.asarray(law.predict_samples(n_params=np.full(n, p), n_tokens=np.full(n, tokens_per_param * p),
                                          ratio=ratios), float)
    loss = np.where(np.isfinite(loss), loss, np.inf)
    best = loss.min(axis=1)
    if criterion.kind == "loss":
        return loss / best[:, None] - 1.0, loss
    mult = np.logspace(0.0, math.log10(P_SPAN), P_GRID)
    pp = (p * mult)[:, None] * np.ones((1, n))  # (M, n)
    rr = np.ones((P_GRID, 1)) * ratios[None, :]
    curves = np.asarray(law.predict_samples(n_params=pp.ravel(), n_tokens=tokens_per_param * pp.ravel(),
                                            ratio=rr.ravel()), float).reshape(-1, P_GRID, n)  # (S, M, n)
    s = curves.shape[0]
    rows = np.transpose(curves, (0, 2, 1)).reshape(s * n, P_GRID)
    rows = np.where(np.isfinite(rows), rows, np.inf)
    targets = np.repeat(best, n)
    log_p, reached, _ = crossing(np.log(p * mult), rows, targets)
    p_needed = np.where(reached, np.exp(log_p), np.inf).reshape(s, n)
    rr_s = ratios[None, :] * np.ones((s, 1))
    with np.errstate(all="ignore"):
        c_need = family_flops(np.where(np.isfinite(p_needed), p_needed, p), rr_s, tokens_per_param, vocab_size,
                              seq_len)
        c_need = np.where(np.isfinite(p_needed), c_need, np.inf)
        if criterion.kind == "deficit":  # the shape's own family, 6ND: (P'/P)² at fixed tokens/param
            over = np.where(np.isfinite(p_needed), np.maximum((p_needed / p) ** 2 - 1.0, 0.0), np.inf)
        else:  # total compute against the shape that reaches ℓ* with the least of it
            c_ref = np.min(c_need, axis=1, keepdims=True)
            over = np.maximum(c_need / c_ref - 1.0, 0.0)
    return over, loss


def _edges(inside: np.ndarray, ratios: np.ndarray) -> tuple[float, float]:
    idx = np.nonzero(inside)[0]
    if idx.size == 0:
        return float("nan"), float("nan")
    return float(ratios[idx.min()]), float(ratios[idx.max()])


def compute_band(law, n_params: float, tokens_per_param: float, criterion: Criterion,
                 searched: tuple[float, float], trained: tuple[float, float] | None,
                 vocab_size: int, seq_len: int, level: float = LEVEL) -> dict:
    """The band of one law at (P, tpp·P) over N:L in ``searched`` (module docstring): point edges
    (median excess ≤ threshold), per-edge percentile intervals over samples, whether each edge is
    identified (it lies inside the searched range, not on it), and the median excess curve."""
    ratios = ratio_grid(*searched)
    excess, loss = excess_samples(law, n_params, tokens_per_param, ratios, criterion, vocab_size, seq_len)
    ok = np.isfinite(loss).any(axis=1)
    if not ok.any():
        raise CpPlanError("the shape law predicts no finite loss at this scale; refit the laws "
                          "(recommend --refit) and check the runs behind them")
    excess, loss = excess[ok], loss[ok]
    with np.errstate(all="ignore"):
        med_excess = np.median(np.where(np.isfinite(excess), excess, 1e9), axis=0)
        med_loss = np.median(loss, axis=0)
    inside = med_excess <= criterion.threshold
    if not inside.any():
        inside = med_excess <= med_excess.min()
    lo, hi = _edges(inside, ratios)
    tail = (1 - level) / 2 * 100
    per = np.array([_edges(row <= criterion.threshold, ratios) for row in excess])
    best_r = ratios[np.argmin(loss, axis=1)]
    single = len(ratios) == 1  # trained (or feasible) at one N:L: no edge can be located
    at_lo = single or bool(inside[0])
    at_hi = single or bool(inside[-1])

    def edge(value, samples, at_limit, side):
        limit = searched[0] if side == "low" else searched[1]
        trained_edge = trained is not None and abs(math.log(limit / (trained[0] if side == "low" else trained[1]))) < 1e-6
        good = samples[np.isfinite(samples)]
        interval = [float(v) for v in np.percentile(good, [tail, 100 - tail])] if good.size else [float("nan")] * 2
        share = float(np.mean(np.isclose(good, limit, rtol=1e-6))) if good.size else float("nan")
        where = (f"trained N:L {trained[0]:.3g}-{trained[1]:.3g}" if trained_edge else
                 f"the {'deepest' if side == 'low' else 'shallowest'} feasible shape, N:L {limit:.3g}")
        note = None
        if single:
            note = f"edge not identified (one N:L searched: {limit:.3g})"
        elif at_limit:
            note = f"edge not identified ({where})"
        elif share >= (1 - level) / 2:  # the point edge is inside, but its interval runs into the limit
            note = f"edge not identified: {share:.0%} of the laws' samples put it at the limit ({where})"
        return {"ratio": value, "interval": interval, "identified": note is None, "note": note,
                "share_at_limit": share}

    low = edge(lo, per[:, 0], at_lo, "low")
    high = edge(hi, per[:, 1], at_hi, "high")
    bi = int(np.argmin(med_loss))
    return {
        "ratio_min": lo, "ratio_max": hi,
        "best_ratio": float(ratios[bi]),
        "best_ratio_interval": [float(v) for v in np.percentile(best_r, [tail, 100 - tail])],
        "best_loss": float(med_loss[bi]),
        "criterion": criterion.to_dict(),
        "edges": {"low": low, "high": high},
        "identified": {"low": low["identified"], "high": high["identified"]},
        "searched": [float(searched[0]), float(searched[1])],
        "contiguous": bool(np.all(np.diff(np.nonzero(inside)[0]) == 1)),
        "reaches_low_edge": at_lo, "reaches_high_edge": at_hi,
        "n_samples": int(ok.sum()),
        "curve": {"ratio": ratios.tolist(), "excess": med_excess.tolist(), "loss": med_loss.tolist(),
                  "p_in": np.mean(excess <= criterion.threshold, axis=0).tolist()},
        SAMPLES_KEY: {"excess": excess, "loss": loss},  # per sample; not part of the plan's JSON
    }


SAMPLES_KEY = "_samples"


def samples_at(band: dict, ratio, which: str = "excess") -> np.ndarray:
    """A band's per-sample ``excess`` or ``loss`` (S, n) interpolated in ln N:L at ``ratio``
    (clamped to the searched range)."""
    r = np.log(np.atleast_1d(np.asarray(ratio, float)))
    grid = np.log(np.asarray(band["curve"]["ratio"], float))
    m = np.asarray(band[SAMPLES_KEY][which], float)
    if grid.size == 1:
        return np.repeat(m[:, :1], r.size, axis=1)
    x = np.clip(r, grid[0], grid[-1])
    j = np.clip(np.searchsorted(grid, x), 1, grid.size - 1)
    t = (x - grid[j - 1]) / (grid[j] - grid[j - 1])
    with np.errstate(all="ignore"):
        out = m[:, j - 1] * (1 - t) + m[:, j] * t
    return np.where(np.isfinite(out), out, np.where(np.isfinite(m[:, j - 1]), m[:, j - 1], m[:, j]))


def excess_at(band: dict, ratio, curve: str = "excess", outside: float = np.inf) -> np.ndarray:
    """One of the band's curves (``excess``: median excess, ``loss``: median loss, ``p_in``: share
    of samples in the band) interpolated in ln N:L at ``ratio``; ``outside`` beyond the searched
    range."""
    r = np.atleast_1d(np.asarray(ratio, float))
    grid = np.log(np.asarray(band["curve"]["ratio"], float))
    ex = np.asarray(band["curve"][curve], float)
    if grid.size == 1:
        return np.where(np.isclose(r, math.exp(grid[0])), ex[0], outside)
    out = np.interp(np.log(r), grid, ex)
    lo, hi = grid[0] - 1e-9, grid[-1] + 1e-9
    return np.where((np.log(r) < lo) | (np.log(r) > hi), outside, out)
