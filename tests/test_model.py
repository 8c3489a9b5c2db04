"""The GPT applies docs/PARAMETERIZATION.md: counts, groups, init stds, multipliers, attention scale."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from planner.errors import CpPlanError  # noqa: E402
from planner.rules import GROUPS  # noqa: E402
from planner.shapes import n_params_nonembedding  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.model import GPT, param_group  # noqa: E402
from trainer.optim import build_optimizer  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def make(seed: int = 0, **kw) -> tuple[TrainConfig, GPT]:
    cfg = TrainConfig(**{"n_embd": 32, "n_layer": 2, "d_head": 16, "base_n_embd": 32,
                         "base_n_layer": 2, "seq_len": 16, **kw})
    torch.manual_seed(seed)
    return cfg, GPT.from_config(cfg)


@pytest.mark.parametrize("n_embd,n_layer,d_head", [(16, 1, 16), (32, 3, 16), (64, 2, 64), (96, 5, 32), (128, 8, 64)])
def test_nonembedding_count_equals_formula(n_embd, n_layer, d_head):
    cfg, model = make(n_embd=n_embd, n_layer=n_layer, d_head=d_head, base_n_embd=d_head)
    assert model.n_params() == n_params_nonembedding(n_embd, n_layer) == cfg.n_params
    embedding = 2 * cfg.vocab_size * n_embd + cfg.seq_len * n_embd
    assert model.n_params(non_embedding=False) == cfg.n_params + embedding


def test_counts_without_bias_and_with_tied_embeddings():
    cfg, model = make(bias=False)
    assert model.n_params() == cfg.n_params == n_params_nonembedding(32, 2) - 9 * 32 * 2
    cfg, tied = make(tie_embeddings=True)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert tied.n_params(non_embedding=False) == cfg.n_params + cfg.vocab_size * 32 + cfg.seq_len * 32
    assert {param_group(n) for n, _ in tied.named_parameters()} == set(GROUPS) - {"unembedding"}


def test_every_parameter_maps_to_exactly_one_group():
    _, model = make()
    groups = {name: param_group(name) for name, _ in model.named_parameters()}
    assert set(groups.values()) == set(GROUPS)
    assert groups["transformer.wte.weight"] == groups["transformer.wpe.weight"] == "embedding"
    assert groups["transformer.h.1.ln_2.bias"] == "block_norm"
    assert groups["transformer.h.0.attn.c_attn.weight"] == "hidden_weight"
    assert groups["transformer.h.0.mlp.c_proj.bias"] == "hidden_bias"
    assert groups["transformer.ln_f.weight"] == "final_norm"
    assert groups["lm_head.weight"] == "unembedding"
    # wrapper prefixes of torch.compile and DDP do not change the group
    assert param_group("_orig_mod.module.transformer.h.3.mlp.c_fc.weight") == "hidden_weight"


def test_unmapped_parameter_is_an_error():
    with pytest.raises(CpPlanError, match="exactly one"):
        param_group("transformer.h.0.attn.rotary.weight")
    _, model = make()
    model.transformer.h[0].extra = torch.nn.Linear(4, 4)
    with pytest.raises(CpPlanError, match="_GROUP_PATTERNS"):
        build_optimizer(model, TrainConfig(n_embd=32, d_head=16, base_n_embd=32).rules())


@pytest.mark.parametrize("parameterization", ["sp", "mup", "completep", "alpha0.5"])
def test_init_stds_are_the_rules(parameterization):
    # m_N = 4, m_L = 2: every rule differs from its base value under μP and depth-α
    cfg, model = make(parameterization=parameterization, n_embd=128, n_layer=4, d_head=32,
                      base_n_embd=32, base_n_layer=2, init_std=0.05)
    rules = cfg.rules()
    assert rules.groups["hidden_weight"].init_std == pytest.approx(
        0.05 if parameterization == "sp" else 0.05 / 2)
    for name, p in model.named_parameters():
        rule = rules.groups[param_group(name)]
        if rule.init == "normal":
            # ≥ 16k draws: the sample std is within 3% of the true one with overwhelming odds
            assert p.numel() >= 16_384 or name == "transformer.wpe.weight"
            tol = 0.03 if p.numel() >= 16_384 else 0.15
            assert p.std().item() == pytest.approx(rule.init_std, rel=tol), name
            assert abs(p.mean().item()) < 0.1 * rule.init_std, name
        elif rule.init == "ones/zeros":
            expected = 1.0 if name.endswith("weight") else 0.0
            assert torch.all(p == expected), name
        else:
            assert torch.all(p == 0), name


@pytest.mark.parametrize("parameterization,alpha", [("sp", None), ("mup", None), ("completep", None),
                                                    ("alpha0.5", None), ("depth-alpha", 0.75)])
def test_forward_multipliers_and_attention_scale_are_the_rules(parameterization, alpha):
    cfg, model = make(parameterization=parameterization, alpha=alpha, n_embd=64, n_layer=8,
                      base_n_embd=32, base_n_layer=2, output_mult=2.0, input_mult=1.5)
    rules = cfg.rules()
    m_n, m_l = 2.0, 4.0
    a = {"completep": 1.0, "alpha0.5": 0.5, "depth-alpha": 0.75}.get(parameterization)
    assert model.output_mult == pytest.approx(2.0 if parameterization == "sp" else 2.0 / m_n)
    assert model.input_mult == 1.5
    for block in model.transformer.h:
        assert block.residual_mult == pytest.approx(1.0 if a is None else m_l ** -a)
        assert block.attn.attn_scale == pytest.approx(
            1 / math.sqrt(16) if parameterization == "sp" else 1 / 16)
        assert block.attn.attn_scale == rules.attn_scale(16)
        assert not any(block.residual_mult is p for p in model.parameters())  # a constant

    # The multipliers act in forward exactly where the table puts them.
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(1))
    h = (model.transformer.wte(idx) + model.transformer.wpe(torch.arange(16))) * 1.5
    block = model.transformer.h[0]
    with torch.no_grad():
        manual = h + block.residual_mult * block.attn(block.ln_1(h))
        manual = manual + block.residual_mult * block.mlp(block.ln_2(manual))
        assert torch.allclose(block(h), manual, atol=1e-6)
        for blk in model.transformer.h:
            h = blk(h)
        expected = model.lm_head(model.transformer.ln_f(h)) * model.output_mult
        logits, _ = model(idx)
    assert torch.allclose(logits, expected, atol=1e-6)


def test_attention_uses_the_rules_scale():
    _, model = make(parameterization="mup", init_std=0.3)
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q, k, v = attn.c_attn(x).split(32, dim=2)
        q, k, v = (t.view(2, 16, 2, 16).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / 16  # 1/d_head under μP
        scores = scores.masked_fill(torch.triu(torch.ones(16, 16, dtype=torch.bool), 1), float("-inf"))
        y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(2, 16, 32)
        assert torch.allclose(attn(x), attn.c_proj(y), atol=1e-5)
        # and 1/sqrt(d) would give something measurably different at this init
        scores_sp = (q @ k.transpose(-2, -1)) / 4
        assert not torch.allclose(scores, scores_sp)


def test_base_shape_identity_sp_mup_completep():
    """At m_N = m_L = 1 the three build the same network and optimizer (docs/PARAMETERIZATION.md)."""
    logits, groups = {}, {}
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    for name in ("sp", "mup", "completep"):
        cfg, model = make(parameterization=name, seed=7)
        for block in model.transformer.h:
            block.attn.attn_scale = 1 / 16  # the one documented difference, made equal
        assert model.output_mult == 1.0
        assert all(b.residual_mult == 1.0 for b in model.transformer.h)
        with torch.no_grad():
            logits[name] = model(idx)[0]
        opt = build_optimizer(model, cfg.rules())
        groups[name] = [(g["name"], g["lr"], g["weight_decay"], g["eps"], len(g["params"]))
                        for g in opt.param_groups]
    assert torch.equal(logits["sp"], logits["mup"]) and torch.equal(logits["sp"], logits["completep"])
    assert groups["sp"] == groups["mup"] == groups["completep"]


def test_generate_applies_the_logit_multiplier():
    # μP at m_N = 2 halves the logits; sampling from it at temperature T must equal sampling
    # the same weights without the multiplier at temperature 2T.
    cfg, model = make(parameterization="mup", n_embd=64, base_n_embd=32, init_std=0.5)
    assert model.output_mult == 0.5
    prompt = torch.tensor([[72, 101, 108, 108, 111]])

    def sample(mult: float, temperature: float) -> torch.Tensor:
        model.output_mult = mult
        return model.generate(prompt, 24, temperature=temperature,
                              generator=torch.Generator().manual_seed(11))

    with_mult = sample(0.5, 1.0)
    assert torch.equal(with_mult, sample(1.0, 2.0))
    assert not torch.equal(with_mult, sample(1.0, 1.0))  # so the multiplier did matter
    assert with_mult.shape == (1, 5 + 24)
    # generation past seq_len keeps working on the last seq_len tokens
    model.output_mult = 0.5
    assert model.generate(prompt, 20, temperature=0).shape == (1, 25)


def test_loss_is_cross_entropy_of_multiplied_logits():
    _, model = make(parameterization="mup", n_embd=64, base_n_embd=32)
    idx = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(5))
    logits, loss = model(idx[:, :-1], idx[:, 1:])
    assert loss.item() == pytest.approx(F.cross_entropy(logits.reshape(-1, 256), idx[:, 1:].reshape(-1)).item())
    assert loss.item() == pytest.approx(math.log(256), abs=0.05)  # small init: near uniform
    with pytest.raises(CpPlanError, match="seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
