"""A pre-LN decoder-only GPT whose parameterization comes from :mod:`planner.rules`.

The architecture is nanoGPT's (Radford et al. 2019, GPT-2, with learned positions, a 4N GELU MLP,
fused QKV and biases), with the changes Table 1 of Dey et al. 2025 (CompleteP, arXiv 2505.01618)
asks for, each applied in exactly one visible place:

- residual branches: ``x + m_L^(−α) · F(LN(x))`` (``Block.forward``; a constant, not a parameter);
- attention logits scaled by 1/d_head (μP, depth-α) or 1/√d_head (SP) (``CausalSelfAttention``);
- embedding output times α_in and logits times α_out / m_N (``GPT.forward``, used by training,
  evaluation and :meth:`GPT.generate` alike: docs/PARAMETERIZATION.md, choice 3);
- init std per parameter group (:meth:`GPT.init_weights`); no 1/√(2L) init anywhere (choice 2).

Every parameter name maps to exactly one group of :data:`planner.rules.GROUPS` through
:func:`param_group`; the optimizer (:mod:`trainer.optim`) builds its AdamW groups from the same map.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from planner.errors import CpPlanError
from planner.rules import GROUPS, Rules

# Parameter name -> group (docs/PARAMETERIZATION.md, choice 6). Names are matched in full after
# stripping wrapper prefixes (torch.compile's "_orig_mod.", DDP's "module.").
_GROUP_PATTERNS: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(pattern), group)
    for pattern, group in (
        (r"transformer\.(wte|wpe)\.weight", "embedding"),
        (r"transformer\.h\.\d+\.ln_[12]\.(weight|bias)", "block_norm"),
        (r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight", "hidden_weight"),
        (r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.bias", "hidden_bias"),
        (r"transformer\.ln_f\.(weight|bias)", "final_norm"),
        (r"lm_head\.weight", "unembedding"),
    )
)
_WRAPPER_PREFIX = re.compile(r"^(?:_orig_mod\.|module\.)+")
assert {g for _, g in _GROUP_PATTERNS} == set(GROUPS)


def param_group(name: str) -> str:
    """The Table 1 group of parameter ``name``; an unknown name is an error, never a default."""
    bare = _WRAPPER_PREFIX.sub("", name)
    matches = [group for pattern, group in _GROUP_PATTERNS if pattern.fullmatch(bare)]
    if len(matches) != 1:
        raise CpPlanError(
            f"parameter {name!r} maps to {len(matches)} parameterization groups; every parameter "
            f"must map to exactly one of {', '.join(GROUPS)}: add its name to "
            "trainer.model._GROUP_PATTERNS"
        )
    return matches[0]


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, attn_scale: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.attn_scale = attn_scale  # 1/d_head (μP, depth-α) or 1/√d_head (SP)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # fused Q, K, V
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn_scale)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, bias: bool, attn_scale: float, residual_mult: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, bias, attn_scale)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, bias)
        self.residual_mult = float(residual_mult)  # m_L^(−α) (depth-α), else 1: a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x + m_L^(−α)·F(LN(x)); add(alpha=) fuses the multiplier into the residual add.
        x = torch.add(x, self.attn(self.ln_1(x)), alpha=self.residual_mult)
        x = torch.add(x, self.mlp(self.ln_2(x)), alpha=self.residual_mult)
        return x


class GPT(nn.Module):
    """Pre-LN GPT: token + learned position embedding, ``n_layer`` blocks, final LN, unembedding."""

    def __init__(self, vocab_size: int, seq_len: int, n_embd: int, n_layer: int, d_head: int,
                 rules: Rules, bias: bool = True, tie_embeddings: bool = False) -> None:
        super().__init__()
        if n_embd % d_head:
            raise CpPlanError(f"n_embd={n_embd} is not a multiple of d_head={d_head}")
        self.vocab_size, self.seq_len, self.n_embd, self.n_layer = vocab_size, seq_len, n_embd, n_layer
        attn_scale = rules.attn_scale(d_head)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(seq_len, n_embd),
            h=nn.ModuleList([Block(n_embd, n_embd // d_head, bias, attn_scale, rules.residual_mult)
                             for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # one tensor, group "embedding"
        self.input_mult = float(rules.input_mult)  # α_in
        self.output_mult = float(rules.output_mult)  # α_out / m_N (μP, depth-α) or α_out (SP)
        self.init_weights(rules)

    @classmethod
    def from_config(cls, cfg) -> GPT:
        """Build the model a :class:`trainer.config.TrainConfig` describes (init from its rules)."""
        return cls(cfg.vocab_size, cfg.seq_len, cfg.n_embd, cfg.n_layer, cfg.d_head, cfg.rules(),
                   bias=cfg.bias, tie_embeddings=cfg.tie_embeddings)

    @torch.no_grad()
    def init_weights(self, rules: Rules) -> None:
        """Init every parameter from its group's rule: normal(0, std), LayerNorm 1/0, biases 0.

        Draws in ``named_parameters`` order from torch's global RNG, so equal seeds and equal
        stds give bit-identical weights across parameterizations (the base-shape identity).
        """
        for name, p in self.named_parameters():
            rule = rules.groups[param_group(name)]
            if rule.init == "normal":
                p.normal_(0.0, rule.init_std)
            elif rule.init == "ones/zeros":  # LayerNorm: gain 1, bias 0
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif rule.init == "zeros":
                p.zero_()
            else:
                raise CpPlanError(f"unknown init {rule.init!r} for parameter {name!r}")

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameter count; non-embedding leaves out token/position embedding and unembedding."""
        return sum(p.numel() for name, p in self.named_parameters()
                   if not (non_embedding and param_group(name) in ("embedding", "unembedding")))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Logits (B, T, V) with the logit multiplier applied, and the mean cross-entropy."""
        B, T = idx.shape
        if T > self.seq_len:
            raise CpPlanError(f"sequence of length {T} exceeds the model's seq_len={self.seq_len}")
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        if self.input_mult != 1.0:
            x = x * self.input_mult
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        # logits = output_mult · x·Wᵀ; scaling the (V, N) weight instead of the (B, T, V) logits
        # gives the same values and gradients with far fewer multiplies.
        logits = F.linear(x, self.lm_head.weight * self.output_mult)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` continuations of ``idx`` (B, T0).

        Uses :meth:`forward`, so the logit multiplier α_out/m_N applies here exactly as in training
        (docs/PARAMETERIZATION.md, choice 3; the reference code drops it at generation, a bug).
        ``temperature=0`` is greedy decoding.
        """
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.seq_len:])
            logits = logits[:, -1, :].float()
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
