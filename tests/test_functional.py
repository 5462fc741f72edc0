"""convop.functional against torch: forward = the nn module, adjoint = torch.func.vjp."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from convop import functional

from .checks import assert_close
from .strategies import COMBO_IDS, COMBOS, ConvCase, draw_case


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_forward_equals_torch_module(combo, data):
    case, dtype, weight = draw_case(data, combo)
    x = case.random((2, *case.input_shape), dtype, offset=1)  # (B, C_in, *spatial_in)
    geometry = case.operator(weight).geometry
    expected = case.module(weight)(x)
    assert_close(functional.forward(x, weight, geometry), expected, dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_adjoint_equals_vjp_of_torch_module(combo, data):
    case, dtype, weight = draw_case(data, combo)
    x = case.random((2, *case.input_shape), dtype, offset=1)
    y, vjp = torch.func.vjp(case.module(weight), x)
    v = case.random(tuple(y.shape), dtype, offset=2)  # (B, C_out, *spatial_out)
    (expected,) = vjp(v)
    geometry = case.operator(weight).geometry
    assert_close(functional.adjoint(v, weight, geometry), expected, dtype=dtype, terms=case.terms)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_functions_leave_their_arguments_alone(combo, data):
    case, dtype, weight = draw_case(data, combo)
    geometry = case.operator(weight).geometry
    x = case.random((1, *case.input_shape), dtype, offset=1)
    saved_x, saved_w = x.clone(), weight.clone()
    y = functional.forward(x, weight, geometry)
    saved_y = y.clone()
    functional.adjoint(y, weight, geometry)
    assert torch.equal(x, saved_x)
    assert torch.equal(weight, saved_w)
    assert torch.equal(y, saved_y)


_GRAD_CASES = {
    "conv2d-reflect-stride2": ConvCase(
        2, False, 2, 2, (3, 2), (2, 5, 6), dict(stride=2, padding=2, dilation=1, groups=1,
                                                padding_mode="reflect"), 0),
    "conv1d-circular-same-dilated": ConvCase(
        1, False, 2, 4, (4,), (2, 7), dict(stride=1, padding="same", dilation=2, groups=2,
                                           padding_mode="circular"), 1),
    "conv3d-replicate": ConvCase(
        3, False, 1, 2, (2, 2, 1), (1, 3, 3, 2), dict(stride=(2, 1, 1), padding=(1, 2, 0),
                                                      dilation=1, groups=1,
                                                      padding_mode="replicate"), 2),
    "convT2d-output-padding-above-stride": ConvCase(
        2, True, 2, 2, (2, 3), (2, 3, 3), dict(stride=(1, 2), padding=(0, 1),
                                               output_padding=(1, 1), groups=1,
                                               dilation=(2, 2)), 3),
}  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["real", "complex"])
@pytest.mark.parametrize("case", list(_GRAD_CASES.values()), ids=list(_GRAD_CASES))
def test_forward_and_adjoint_are_differentiable(case, dtype):
    weight = case.weight(dtype).requires_grad_()
    geometry = case.operator(weight).geometry
    x = case.random((2, *case.input_shape), dtype, offset=1).requires_grad_()
    y = case.random((2, *geometry.output_shape), dtype, offset=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: functional.forward(x, w, geometry), (x, weight))
    assert torch.autograd.gradcheck(lambda y, w: functional.adjoint(y, w, geometry), (y, weight))
