"""The resolved rules equal docs/PARAMETERIZATION.md's Table 1, group by group."""

import math

import pytest

from planner.errors import CpPlanError
from planner.rules import GROUPS, BaseHParams, parse_parameterization, resolve, resolve_shape

BASE = BaseHParams(lr=2e-3, init_std=0.03, weight_decay=0.05, eps=1e-7, output_mult=1.5)
SHAPES = [(1.0, 1.0), (2.0, 4.0), (4.0, 0.5), (0.5, 16.0), (8.0, 64.0)]
ALPHAS = [0.5, 0.75, 1.0]


def expected(family, alpha, m_n, m_l):
    """Table 1 written out independently of planner.rules (the oracle)."""
    eta, sig, lam, eps = BASE.lr, BASE.init_std, BASE.weight_decay, BASE.eps
    if family == "sp":
        return dict(
            emb=(sig, eta, lam, eps), norm=(eta, eps), hw=(sig, eta, lam, eps), hb=(eta, eps),
            fnorm=(eta, eps), unemb=(sig, eta, lam, eps), res=1.0, logit=BASE.output_mult,
            attn="1/sqrt(d)")
    if family == "mup":
        return dict(
            emb=(sig, eta, lam, eps), norm=(eta, eps / m_n),
            hw=(sig / math.sqrt(m_n), eta / m_n, lam * m_n, eps / m_n), hb=(eta, eps / m_n),
            fnorm=(eta, eps), unemb=(sig, eta, lam, eps), res=1.0, logit=BASE.output_mult / m_n,
            attn="1/d")
    blk_eps = eps / m_n * m_l ** (-alpha)
    return dict(
        emb=(sig, eta, lam, eps), norm=(eta * m_l ** (alpha - 1), blk_eps),
        hw=(sig / math.sqrt(m_n), eta / m_n * m_l ** (alpha - 1), lam * m_n, blk_eps),
        hb=(eta * m_l ** (alpha - 1), blk_eps), fnorm=(eta, eps), unemb=(sig, eta, lam, eps),
        res=m_l ** (-alpha), logit=BASE.output_mult / m_n, attn="1/d")


def cases():
    for m_n, m_l in SHAPES:
        yield "sp", None, "sp", None, m_n, m_l
        yield "mup", None, "mup", None, m_n, m_l
        yield "completep", None, "depth", 1.0, m_n, m_l
        yield "alpha0.5", None, "depth", 0.5, m_n, m_l
        for a in ALPHAS:
            yield "depth-alpha", a, "depth", a, m_n, m_l


@pytest.mark.parametrize("name,alpha,family,true_alpha,m_n,m_l", list(cases()))
class TestTable1:
    def rules(self, name, alpha, m_n, m_l):
        return resolve(name, m_n, m_l, BASE, alpha)

    @pytest.mark.parametrize("group,key", [("embedding", "emb"), ("hidden_weight", "hw"), ("unembedding", "unemb")])
    def test_weight_group(self, name, alpha, family, true_alpha, m_n, m_l, group, key):
        """The three weight groups' rows of the table: (init std, LR, weight decay, ε)."""
        g = self.rules(name, alpha, m_n, m_l).groups[group]
        want = expected(family, true_alpha, m_n, m_l)[key]
        assert (g.init_std, g.lr, g.weight_decay, g.eps) == pytest.approx(want, rel=1e-12)

    def test_block_layernorm(self, name, alpha, family, true_alpha, m_n, m_l):
        g = self.rules(name, alpha, m_n, m_l).groups["block_norm"]
        lr, eps = expected(family, true_alpha, m_n, m_l)["norm"]
        assert g.init == "ones/zeros" and g.init_std is None and g.weight_decay == 0.0
        assert (g.lr, g.eps) == pytest.approx((lr, eps), rel=1e-12)

    def test_hidden_biases(self, name, alpha, family, true_alpha, m_n, m_l):
        g = self.rules(name, alpha, m_n, m_l).groups["hidden_bias"]
        lr, eps = expected(family, true_alpha, m_n, m_l)["hb"]
        assert g.init == "zeros" and g.weight_decay == 0.0
        assert (g.lr, g.eps) == pytest.approx((lr, eps), rel=1e-12)

    def test_final_layernorm(self, name, alpha, family, true_alpha, m_n, m_l):
        g = self.rules(name, alpha, m_n, m_l).groups["final_norm"]
        lr, eps = expected(family, true_alpha, m_n, m_l)["fnorm"]
        assert g.weight_decay == 0.0 and (g.lr, g.eps) == pytest.approx((lr, eps), rel=1e-12)

    def test_forward_multipliers(self, name, alpha, family, true_alpha, m_n, m_l):
        r = self.rules(name, alpha, m_n, m_l)
        e = expected(family, true_alpha, m_n, m_l)
        assert r.residual_mult == pytest.approx(e["res"], rel=1e-12)
        assert r.output_mult == pytest.approx(e["logit"], rel=1e-12)
        assert r.attn_scale_kind == e["attn"]
        assert r.attn_scale(64) == pytest.approx(1 / 64 if e["attn"] == "1/d" else 1 / 8)

    def test_every_group_present_and_lr_mult_consistent(self, name, alpha, family, true_alpha, m_n, m_l):
        r = self.rules(name, alpha, m_n, m_l)
        assert tuple(r.groups) == GROUPS
        for g in r.groups.values():
            assert g.lr == pytest.approx(BASE.lr * g.lr_mult, rel=1e-12)


@pytest.mark.parametrize("name", ["sp", "mup", "completep", "alpha0.5"])
def test_base_shape_identity(name):
    """At m_N = m_L = 1 μP = CompleteP = SP, apart from the attention-logit scale."""
    sp = resolve("sp", 1.0, 1.0, BASE)
    other = resolve(name, 1.0, 1.0, BASE)
    assert other.groups == sp.groups
    assert (other.residual_mult, other.output_mult, other.input_mult) == (1.0, BASE.output_mult, 1.0)


@pytest.mark.parametrize("m_n,m_l", SHAPES)
def test_completep_decay_per_step_independent_of_width_and_depth(m_n, m_l):
    r = resolve("completep", m_n, m_l, BASE)
    g = r.groups["hidden_weight"]
    assert g.lr * g.weight_decay == pytest.approx(BASE.lr * BASE.weight_decay, rel=1e-12)


def test_completep_differs_from_mup_only_in_residual_mult_and_block_eps():
    cp, mup = resolve("completep", 2.0, 8.0, BASE), resolve("mup", 2.0, 8.0, BASE)
    assert cp.residual_mult == pytest.approx(1 / 8) and mup.residual_mult == 1.0
    for name in GROUPS:
        a, b = cp.groups[name], mup.groups[name]
        assert (a.init_std, a.lr, a.weight_decay) == (b.init_std, b.lr, b.weight_decay)
        assert a.eps == pytest.approx(b.eps / 8 if name in ("block_norm", "hidden_weight", "hidden_bias") else b.eps)


def test_resolve_shape_uses_multipliers():
    r = resolve_shape("completep", 256, 16, 64, 2, BASE)
    assert (r.width_mult, r.depth_mult) == (4.0, 8.0)


@pytest.mark.parametrize("name,alpha,msg", [
    ("foo", None, "unknown parameterization 'foo'"),
    ("depth-alpha", None, "needs --alpha"),
    ("depth-alpha", 0.3, "outside [0.5, 1]"),
    ("mup", 0.7, "has no depth exponent"),
    ("completep", 0.5, "contradicts"),
])
def test_bad_parameterization(name, alpha, msg):
    with pytest.raises(CpPlanError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        parse_parameterization(name, alpha)


def test_depth_alpha_canonicalizes_presets():
    assert parse_parameterization("depth-alpha", 1.0) == ("completep", 1.0)
    assert parse_parameterization("DEPTH-ALPHA", 0.5) == ("alpha0.5", 0.5)
    assert parse_parameterization("depth-alpha", 0.75) == ("depth-alpha", 0.75)


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(init_std=0.0), dict(eps=float("nan")), dict(weight_decay=-0.1)])
def test_bad_base_hparams(bad):
    with pytest.raises(CpPlanError):
        BaseHParams(**bad)


def test_bad_multipliers():
    with pytest.raises(CpPlanError, match="width_mult"):
        resolve("mup", 0.0, 1.0)
    with pytest.raises(CpPlanError, match="n_layer"):
        resolve_shape("mup", 64, 0, 64, 2)
