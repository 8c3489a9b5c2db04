"""Shape and FLOP arithmetic."""

import pytest

from planner.errors import CpPlanError
from planner.shapes import (flops_per_token, make_shape, n_params_nonembedding, shape_for_params,
                            shapes_for_params)


def test_param_count_formula_matches_per_module_sum():
    n, l = 96, 5
    per_block = (3 * n * n + 3 * n) + (n * n + n) + (4 * n * n + 4 * n) + (4 * n * n + n) + 4 * n
    assert n_params_nonembedding(n, l) == l * per_block + 2 * n


def test_pythia_counts():
    # Pythia-160M: d=768, L=12 has 85,056,000 non-embedding params (shared/data/external README).
    assert n_params_nonembedding(768, 12) == 85_056_000


def test_flops_per_token_matches_the_trainer_model_counted_by_torch():
    """6P + 6NV + 12LNT against the matmul FLOPs torch counts in a forward and backward pass of the
    trainer's own model (the attention term counts QKᵀ and AV over the full context, as PaLM's
    appendix B does); LayerNorm and bias parameters do no matmuls, hence the 3% tolerance."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from trainer.config import TrainConfig
    from trainer.model import GPT

    n, l, v, t, batch = 128, 4, 256, 64, 2
    cfg = TrainConfig(parameterization="completep", n_embd=n, n_layer=l, d_head=32, seq_len=t, batch_size=batch,
                      base_n_embd=n, base_n_layer=l, tokenizer="byte")
    model = GPT.from_config(cfg)
    assert model.vocab_size == v
    x = torch.randint(0, v, (batch, t))
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:  # attention as counted matmuls
        logits, _ = model(x)
        logits.float().pow(2).mean().backward()
    per_token = counter.get_total_flops() / (batch * t)
    assert per_token == pytest.approx(flops_per_token(n, l, v, t), rel=0.03)


@pytest.mark.parametrize("ratio", [4, 16, 64, 128])
def test_shape_for_params_hits_target(ratio):
    s = shape_for_params(1.5e9, ratio)
    assert s.n_embd % 64 == 0 and s.n_head == s.n_embd // 64
    assert abs(s.n_params / 1.5e9 - 1) < 0.1
    assert 0.5 < s.ratio / ratio < 2


def test_shapes_for_params_enumerates_widths():
    shapes = shapes_for_params(1e6, d_head=16)
    assert [s.n_embd for s in shapes] == list(range(16, 16 * (len(shapes) + 1), 16))
    assert all(s.n_layer >= 1 for s in shapes)
    assert shapes[0].n_layer > shapes[-1].n_layer


def test_bad_width_message_names_value_and_fix():
    with pytest.raises(CpPlanError, match=r"n_embd=100 is not a multiple of d_head=64; use 128"):
        make_shape(100, 4)


def test_bad_params():
    with pytest.raises(CpPlanError, match="n_params=-1"):
        shape_for_params(-1, 32)
