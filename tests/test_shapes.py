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


def test_flops_per_token_convention():
    n, l, v, t = 128, 4, 256, 64
    p = n_params_nonembedding(n, l)
    assert flops_per_token(n, l, v, t) == 6 * p + 6 * n * v + 12 * l * n * t


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
