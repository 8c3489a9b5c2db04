"""Parameterization rules: SP, μP, depth-α and CompleteP, as data.

Implements Table 1 of Dey et al. 2025, "Don't be lazy: CompleteP enables compute-efficient deep
transformers" (arXiv 2505.01618), exactly as written in docs/PARAMETERIZATION.md. One pure function,
:func:`resolve`, maps (parameterization, α, m_N, m_L, base hyperparameters) to per-group values
that the trainer applies and the planner prints. Nothing here imports torch.

Groups (every model parameter belongs to exactly one):
- ``embedding``: token and position embeddings;
- ``block_norm``: LayerNorm gains and biases inside blocks;
- ``hidden_weight``: weights of fused QKV, attention out-projection, MLP up and MLP down;
- ``hidden_bias``: biases of those linear layers;
- ``final_norm``: the LayerNorm after the last block;
- ``unembedding``: the output projection (the logits' weight).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from planner.errors import CpPlanError

GROUPS = ("embedding", "block_norm", "hidden_weight", "hidden_bias", "final_norm", "unembedding")

# Groups whose AdamW ε follows the "residual-block params" row of Table 1.
RESIDUAL_BLOCK_GROUPS = ("block_norm", "hidden_weight", "hidden_bias")

# name -> (family, alpha). Family "sp" and "mup" ignore α; "depth" uses it.
PRESETS: dict[str, tuple[str, float | None]] = {
    "sp": ("sp", None),
    "mup": ("mup", None),
    "completep": ("depth", 1.0),
    "alpha0.5": ("depth", 0.5),
    "depth-alpha": ("depth", None),  # α given explicitly with --alpha
}


def parse_parameterization(name: str, alpha: float | None = None) -> tuple[str, float | None]:
    """Map a user-facing name (and optional α) to a canonical (name, α) pair.

    ``completep`` is depth-α with α = 1 and ``alpha0.5`` is α = 0.5; ``depth-alpha`` needs an
    explicit α in [0.5, 1]. A depth-α name whose α equals a preset's is canonicalized to it, so a
    run database never holds the same parameterization under two names.
    """
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise CpPlanError(
            f"unknown parameterization {name!r}; use one of {', '.join(PRESETS)}"
        )
    family, preset_alpha = PRESETS[key]
    if family != "depth":
        if alpha is not None:
            raise CpPlanError(
                f"--alpha {alpha} given with parameterization {key!r}, which has no depth "
                "exponent; drop --alpha or use depth-alpha"
            )
        return key, None
    if preset_alpha is not None:
        if alpha is not None and not math.isclose(alpha, preset_alpha):
            raise CpPlanError(
                f"--alpha {alpha} contradicts {key!r} (α = {preset_alpha}); "
                "drop --alpha or use depth-alpha"
            )
        alpha = preset_alpha
    if alpha is None:
        raise CpPlanError("parameterization 'depth-alpha' needs --alpha in [0.5, 1]")
    if not (0.5 <= alpha <= 1.0) or math.isnan(alpha):
        raise CpPlanError(f"alpha={alpha} is outside [0.5, 1]; use 0.5 (depth-μP) to 1 (CompleteP)")
    if math.isclose(alpha, 1.0):
        return "completep", 1.0
    if math.isclose(alpha, 0.5):
        return "alpha0.5", 0.5
    return "depth-alpha", float(alpha)


@dataclass(frozen=True)
class BaseHParams:
    """Hyperparameters tuned once at the base shape and transferred (docs/PARAMETERIZATION.md)."""

    lr: float = 3e-3  # η_base, AdamW learning rate at the base shape
    init_std: float = 0.02  # σ_base
    weight_decay: float = 0.1  # λ_base, coupled (torch.optim.AdamW convention)
    eps: float = 1e-8  # ε_base
    input_mult: float = 1.0  # α_in, multiplies the embedding output
    output_mult: float = 1.0  # α_out, multiplies the logits

    def __post_init__(self) -> None:
        for name in ("lr", "init_std", "eps", "input_mult", "output_mult"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise CpPlanError(f"{name}={value!r} must be a positive finite number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise CpPlanError(
                f"weight_decay={self.weight_decay!r} must be a finite number ≥ 0"
            )


@dataclass(frozen=True)
class GroupRule:
    """Resolved values for one parameter group.

    ``init_std`` is None for LayerNorm (gain 1, bias 0) and biases (0): see ``init``.
    ``lr`` is the peak LR; the schedule multiplies it at each step.
    """

    group: str
    init: str  # "normal", "ones/zeros" (LayerNorm) or "zeros" (biases)
    init_std: float | None
    lr: float
    lr_mult: float  # lr / η_base
    weight_decay: float
    eps: float


@dataclass(frozen=True)
class Rules:
    """Everything the parameterization decides for one shape: per-group rules and multipliers."""

    parameterization: str
    alpha: float | None
    width_mult: float  # m_N = n_embd / base_n_embd
    depth_mult: float  # m_L = n_layer / base_n_layer
    base: BaseHParams
    groups: dict[str, GroupRule] = field(default_factory=dict)
    residual_mult: float = 1.0  # multiplies each residual branch: m_L^(−α), or 1
    input_mult: float = 1.0  # multiplies the embedding output (α_in)
    output_mult: float = 1.0  # multiplies the logits: α_out · m_N^(−1), or α_out under SP
    attn_scale_kind: str = "1/d"  # "1/d" (μP, depth-α) or "1/sqrt(d)" (SP)

    def attn_scale(self, d_head: int) -> float:
        """Attention-logit scale for head size ``d_head`` (docs/PARAMETERIZATION.md, choice 1)."""
        return 1.0 / d_head if self.attn_scale_kind == "1/d" else 1.0 / math.sqrt(d_head)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["groups"] = {name: asdict(rule) for name, rule in self.groups.items()}
        return out


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise CpPlanError(f"{name}={value!r} must be a positive finite number")
    return float(value)


def resolve(
    parameterization: str,
    width_mult: float,
    depth_mult: float,
    base: BaseHParams | None = None,
    alpha: float | None = None,
) -> Rules:
    """Resolve Table 1 of Dey et al. 2025 for one shape.

    ``width_mult`` = m_N = N / N_base, ``depth_mult`` = m_L = L / L_base. Returns the per-group
    init std, peak LR, weight decay and AdamW ε, the residual-branch multiplier m_L^(−α), the
    logit multiplier α_out·m_N^(−1) and the attention-scale convention.
    """
    name, alpha = parse_parameterization(parameterization, alpha)
    family = PRESETS[name][0]
    base = base or BaseHParams()
    m_n = _positive("width_mult", width_mult)
    m_l = _positive("depth_mult", depth_mult)
    eta, sigma, lam, eps = base.lr, base.init_std, base.weight_decay, base.eps

    if family == "sp":
        hidden_std, hidden_lr_mult, hidden_wd = sigma, 1.0, lam
        depth_lr = 1.0  # LR factor m_L^(α−1) on in-block params
        block_eps = eps
        residual_mult, logit_mult, attn = 1.0, base.output_mult, "1/sqrt(d)"
    elif family == "mup":
        hidden_std, hidden_lr_mult, hidden_wd = sigma * m_n**-0.5, 1.0 / m_n, lam * m_n
        depth_lr = 1.0
        block_eps = eps / m_n
        residual_mult, logit_mult, attn = 1.0, base.output_mult / m_n, "1/d"
    else:  # depth-α, CompleteP at α = 1
        assert alpha is not None
        depth_lr = m_l ** (alpha - 1.0)
        hidden_std, hidden_lr_mult, hidden_wd = sigma * m_n**-0.5, depth_lr / m_n, lam * m_n
        block_eps = eps / m_n * m_l**-alpha
        residual_mult, logit_mult, attn = m_l**-alpha, base.output_mult / m_n, "1/d"

    def rule(group: str, init: str, std: float | None, lr_mult: float, wd: float, e: float):
        return GroupRule(group, init, std, eta * lr_mult, lr_mult, wd, e)

    groups = {
        "embedding": rule("embedding", "normal", sigma, 1.0, lam, eps),
        "block_norm": rule("block_norm", "ones/zeros", None, depth_lr, 0.0, block_eps),
        "hidden_weight": rule("hidden_weight", "normal", hidden_std, hidden_lr_mult, hidden_wd, block_eps),
        "hidden_bias": rule("hidden_bias", "zeros", None, depth_lr, 0.0, block_eps),
        "final_norm": rule("final_norm", "ones/zeros", None, 1.0, 0.0, eps),
        "unembedding": rule("unembedding", "normal", sigma, 1.0, lam, eps),
    }
    return Rules(
        parameterization=name,
        alpha=alpha,
        width_mult=m_n,
        depth_mult=m_l,
        base=base,
        groups=groups,
        residual_mult=residual_mult,
        input_mult=base.input_mult,
        output_mult=logit_mult,
        attn_scale_kind=attn,
    )


def resolve_shape(
    parameterization: str,
    n_embd: int,
    n_layer: int,
    base_n_embd: int,
    base_n_layer: int,
    base: BaseHParams | None = None,
    alpha: float | None = None,
) -> Rules:
    """:func:`resolve` from absolute shapes: m_N = n_embd / base_n_embd, m_L = n_layer / base_n_layer."""
    for label, value in (("n_embd", n_embd), ("n_layer", n_layer),
                         ("base_n_embd", base_n_embd), ("base_n_layer", base_n_layer)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CpPlanError(f"{label}={value!r} must be a positive integer")
    return resolve(parameterization, n_embd / base_n_embd, n_layer / base_n_layer, base, alpha)
