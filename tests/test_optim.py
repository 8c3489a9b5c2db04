"""AdamW groups carry the rules' LR, weight decay and ε; the schedule is one shared scalar."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from planner.errors import CpPlanError  # noqa: E402
from planner.rules import GROUPS  # noqa: E402
from trainer.config import TrainConfig  # noqa: E402
from trainer.model import GPT, param_group  # noqa: E402
from trainer.optim import build_optimizer, lr_multiplier, set_lr  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


SHAPES = [  # (parameterization, alpha, n_embd, n_layer, base_n_embd, base_n_layer)
    ("sp", None, 64, 4, 32, 2),
    ("mup", None, 128, 2, 32, 2),
    ("completep", None, 64, 8, 32, 2),
    ("alpha0.5", None, 32, 8, 64, 2),
    ("depth-alpha", 0.75, 128, 6, 32, 3),
]


@pytest.mark.parametrize("parameterization,alpha,n_embd,n_layer,base_n_embd,base_n_layer", SHAPES)
def test_groups_equal_the_rules(parameterization, alpha, n_embd, n_layer, base_n_embd, base_n_layer):
    cfg = TrainConfig(parameterization=parameterization, alpha=alpha, n_embd=n_embd, n_layer=n_layer,
                      d_head=16, base_n_embd=base_n_embd, base_n_layer=base_n_layer, seq_len=16,
                      lr=2e-3, weight_decay=0.05, eps=1e-6)
    model = GPT.from_config(cfg)
    opt = build_optimizer(model, cfg.rules(), (cfg.beta1, cfg.beta2))
    rules = cfg.rules()
    m_n, m_l = n_embd / base_n_embd, n_layer / base_n_layer
    a = rules.alpha

    # every parameter in exactly one group, and that group is the parameter's Table 1 group
    seen = {}
    for group in opt.param_groups:
        for p in group["params"]:
            assert id(p) not in seen
            seen[id(p)] = group["name"]
    assert len(seen) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        assert seen[id(p)] == param_group(name)
    assert {g["name"] for g in opt.param_groups} == set(GROUPS)

    by_name = {g["name"]: g for g in opt.param_groups}
    for name, group in by_name.items():
        rule = rules.groups[name]
        assert (group["lr"], group["peak_lr"], group["weight_decay"], group["eps"]) == (
            rule.lr, rule.lr, rule.weight_decay, rule.eps)
        assert group["betas"] == (0.9, 0.95)

    # ... and the rules are Table 1 (spot checks written from docs/PARAMETERIZATION.md directly)
    hidden = by_name["hidden_weight"]
    if parameterization == "sp":
        assert hidden["lr"] == pytest.approx(2e-3) and hidden["eps"] == pytest.approx(1e-6)
    elif parameterization == "mup":
        assert hidden["lr"] == pytest.approx(2e-3 / m_n)
        assert hidden["weight_decay"] == pytest.approx(0.05 * m_n)
        assert hidden["eps"] == pytest.approx(1e-6 / m_n)
    else:
        assert hidden["lr"] == pytest.approx(2e-3 / m_n * m_l ** (a - 1))
        assert by_name["block_norm"]["lr"] == pytest.approx(2e-3 * m_l ** (a - 1))
        assert by_name["hidden_bias"]["eps"] == pytest.approx(1e-6 / m_n * m_l ** -a)
        # coupled AdamW: per-step decay of hidden weights lr·wd = η·λ·m_L^(α−1), width-free
        assert hidden["lr"] * hidden["weight_decay"] == pytest.approx(2e-3 * 0.05 * m_l ** (a - 1))
    for name in ("embedding", "final_norm", "unembedding"):
        assert by_name[name]["lr"] == pytest.approx(2e-3) and by_name[name]["eps"] == pytest.approx(1e-6)
    for name in ("block_norm", "hidden_bias", "final_norm"):
        assert by_name[name]["weight_decay"] == 0.0


def test_optimizer_step_uses_per_group_lr():
    # One step of AdamW moves every weight by about lr (Adam's normalized step) in its group.
    cfg = TrainConfig(parameterization="mup", n_embd=128, n_layer=2, d_head=16, base_n_embd=32,
                      seq_len=16, weight_decay=0.0, lr=1e-3)
    torch.manual_seed(0)
    model = GPT.from_config(cfg)
    opt = build_optimizer(model, cfg.rules())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    idx = torch.randint(0, 256, (4, 16))
    model(idx[:, :-1], idx[:, 1:])[1].backward()
    opt.step()
    moved = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert moved["transformer.h.0.mlp.c_fc.weight"] == pytest.approx(1e-3 / 4, rel=0.01)
    assert moved["lm_head.weight"] == pytest.approx(1e-3, rel=0.01)


def test_linear_schedule_warmup_then_decay_to_zero():
    total, warmup = 100, 10
    mults = [lr_multiplier(t, total, warmup, "linear") for t in range(total)]
    assert mults[0] == pytest.approx(0.1) and mults[9] == pytest.approx(1.0)
    assert mults[10] == pytest.approx(1.0)
    assert mults[55] == pytest.approx(1 - 45 / 90)
    assert mults[-1] == pytest.approx(1 / 90)  # the last update is tiny, reaching 0 at t = total
    assert all(b <= a for a, b in zip(mults[10:], mults[11:]))
    assert lr_multiplier(5, 10, 0, "linear") == pytest.approx(0.5)


def test_cosine_schedule_ends_at_ten_percent():
    total, warmup = 101, 1
    assert lr_multiplier(0, total, warmup, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(1, total, warmup, "cosine") == pytest.approx(1.0)
    assert lr_multiplier(51, total, warmup, "cosine") == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(101, total, warmup, "cosine") == pytest.approx(0.1)
    with pytest.raises(CpPlanError):
        lr_multiplier(0, 10, 2, "step")


def test_set_lr_scales_every_group_by_one_scalar():
    cfg = TrainConfig(parameterization="completep", n_embd=64, n_layer=8, d_head=16, base_n_embd=32, seq_len=16)
    opt = build_optimizer(GPT.from_config(cfg), cfg.rules())
    set_lr(opt, 0.25)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(0.25 * cfg.rules().groups[group["name"]].lr)
    ratios = {g["lr"] / g["peak_lr"] for g in opt.param_groups}
    assert len(ratios) == 1 and math.isclose(ratios.pop(), 0.25)
