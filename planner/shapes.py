"""Shape and FLOP arithmetic for the pre-LN GPT cp-plan trains (no torch).

Counting follows docs/PARAMETERIZATION.md: with a 4N GELU MLP and biases, the non-embedding
parameter count is P = L·(12N² + 13N) + 2N; training FLOPs per token are
6·P + 6·N·V + 12·L·N·T (Chowdhery et al. 2022, PaLM, appendix B), the convention named
``FLOP_CONVENTION`` and stored with every run. ``6ND`` is the alternative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.errors import CpPlanError

FLOP_CONVENTION = "6P+6NV+12LNT"  # PaLM appendix B, non-embedding P plus unembedding and attention
FLOP_CONVENTION_6ND = "6ND"  # N = non-embedding params


def block_params(n_embd):
    """Parameters of one block, 12N² + 13N: QKV 3N²+3N, proj N²+N, MLP 8N²+5N, two LayerNorms 4N
    (docs/PARAMETERIZATION.md#parameter-count). The one home of the count: ints stay exact,
    floats and arrays work too."""
    return 12 * n_embd * n_embd + 13 * n_embd


def n_params_nonembedding(n_embd: int, n_layer: int) -> int:
    """Exact non-embedding parameters: L·(12N² + 13N) + 2N (:func:`block_params` per block, plus
    the final LayerNorm 2N)."""
    return n_layer * block_params(n_embd) + 2 * n_embd


def n_params_embedding(n_embd: int, vocab_size: int, seq_len: int, tied: bool = False) -> int:
    """Token embedding + position embedding + unembedding (no bias on the unembedding)."""
    return vocab_size * n_embd + seq_len * n_embd + (0 if tied else vocab_size * n_embd)


def flops_per_token(n_embd: int, n_layer: int, vocab_size: int, seq_len: int) -> float:
    """Training FLOPs per token, convention ``FLOP_CONVENTION``: 6P + 6NV + 12LNT."""
    p = n_params_nonembedding(n_embd, n_layer)
    return 6.0 * p + 6.0 * n_embd * vocab_size + 12.0 * n_layer * n_embd * seq_len


def training_flops(n_embd: int, n_layer: int, vocab_size: int, seq_len: int, n_tokens: float) -> float:
    """Total training FLOPs for ``n_tokens`` tokens under ``FLOP_CONVENTION``."""
    return flops_per_token(n_embd, n_layer, vocab_size, seq_len) * float(n_tokens)


@dataclass(frozen=True)
class Shape:
    """A concrete transformer shape with its exact non-embedding parameter count."""

    n_embd: int
    n_layer: int
    n_head: int
    d_head: int
    n_params: int  # exact non-embedding count

    @property
    def ratio(self) -> float:
        """N:L, width over depth."""
        return self.n_embd / self.n_layer


def check_width(n_embd: int, d_head: int) -> None:
    """Refuse a width that is not a positive multiple of the head size."""
    if not isinstance(d_head, int) or d_head < 1:
        raise CpPlanError(f"d_head={d_head!r} must be a positive integer")
    if not isinstance(n_embd, int) or n_embd < 1 or n_embd % d_head:
        near = max(d_head, round(n_embd / d_head) * d_head) if isinstance(n_embd, (int, float)) else d_head
        raise CpPlanError(
            f"n_embd={n_embd} is not a multiple of d_head={d_head}; use {near} "
            f"(or another multiple of {d_head}), or change --d-head"
        )


def make_shape(n_embd: int, n_layer: int, d_head: int = 64) -> Shape:
    """Validated shape with n_head = n_embd / d_head (head size is fixed as width grows)."""
    check_width(n_embd, d_head)
    if not isinstance(n_layer, int) or n_layer < 1:
        raise CpPlanError(f"n_layer={n_layer!r} must be a positive integer")
    return Shape(n_embd, n_layer, n_embd // d_head, d_head, n_params_nonembedding(n_embd, n_layer))


def shape_for_params(n_params: float, ratio: float, d_head: int = 64, width_multiple: int | None = None) -> Shape:
    """The shape with N:L ≈ ``ratio`` whose non-embedding count is closest to ``n_params``.

    Solves L·(12N² + 13N) + 2N = P with L = N / ratio, rounds N to a multiple of the head size
    (or of ``width_multiple``), then picks the integer depth that best matches P. The realized P
    is in the returned shape; callers record it.
    """
    if not (math.isfinite(n_params) and n_params > 0):
        raise CpPlanError(f"n_params={n_params} must be a positive finite number, e.g. 1.5e9")
    if not (math.isfinite(ratio) and ratio > 0):
        raise CpPlanError(f"ratio={ratio} must be a positive number (N:L, e.g. 32)")
    step = width_multiple or d_head
    if step % d_head:
        raise CpPlanError(f"width_multiple={step} must be a multiple of d_head={d_head}")
    # Continuous width: 12N³/r + 13N²/r + 2N = P, solved by bisection (monotone in N).
    lo, hi = 1e-9, max(2.0, (n_params * ratio / 12.0) ** (1 / 3) * 2 + 2)
    for _ in range(200):
        mid = (lo + hi) / 2
        if (12 * mid**3 + 13 * mid**2) / ratio + 2 * mid < n_params:
            lo = mid
        else:
            hi = mid
    n_embd = max(step, int(round(lo / step)) * step)
    per_layer = block_params(n_embd)
    n_layer = max(1, int(round((n_params - 2 * n_embd) / per_layer)))
    return make_shape(n_embd, n_layer, d_head)


def shapes_for_params(n_params: float, d_head: int = 64, width_multiple: int | None = None,
                      min_layer: int = 1, max_layer: int | None = None) -> list[Shape]:
    """Every width (multiple of ``width_multiple`` or ``d_head``) with the integer depth whose
    non-embedding count is closest to ``n_params``: the candidate set the planner searches."""
    if not (math.isfinite(n_params) and n_params > 0):
        raise CpPlanError(f"n_params={n_params} must be a positive finite number, e.g. 1.5e9")
    step = width_multiple or d_head
    out: list[Shape] = []
    n_embd = step
    while True:
        per_layer = block_params(n_embd)
        n_layer = int(round((n_params - 2 * n_embd) / per_layer))
        if n_layer < max(1, min_layer):
            break
        if max_layer is None or n_layer <= max_layer:
            out.append(make_shape(n_embd, n_layer, d_head))
        n_embd += step
    return out
