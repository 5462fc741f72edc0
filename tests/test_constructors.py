"""Tests for convop.constructors: from_module against torch layers, weight handling."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

import convop
from convop.constructors import CONSTRUCTORS, MODULE_KINDS

from .modules import MODULE_CASES, ModuleCase

RTOL = 1e-12  # float64, short accumulations


def _atol(reference: np.ndarray) -> float:
    return RTOL * float(np.max(np.abs(reference)))


# ---------------------------------------------------------------------- from_module
class Built(NamedTuple):
    module: nn.Module
    op: convop.ConvOperator
    x: torch.Tensor  # (*input_shape)
    expected: torch.Tensor  # (*output_shape), module(x) with bias


def _build(case: ModuleCase) -> Built:
    torch.manual_seed(0)
    module = case.make()
    op = convop.from_module(module, case.input_shape)
    x = torch.randn(case.input_shape, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x[None])[0]
    return Built(module, op, x, expected)


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_matvec_plus_bias_matches_module(case: ModuleCase) -> None:
    built = _build(case)
    expected = built.expected.numpy().ravel()
    actual = built.op @ built.x.numpy().ravel() + built.op.bias
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=_atol(expected))


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_shape(case: ModuleCase) -> None:
    built = _build(case)
    assert built.op.shape == (built.expected.numel(), math.prod(case.input_shape))


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_input_and_output_shape(case: ModuleCase) -> None:
    built = _build(case)
    shapes = (built.op.input_shape, built.op.output_shape)
    assert shapes == (case.input_shape, tuple(built.expected.shape))


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_dtype(case: ModuleCase) -> None:
    assert _build(case).op.dtype == np.dtype(np.float64)


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_uses_module_weight_object(case: ModuleCase) -> None:
    built = _build(case)
    assert built.op.weight is built.module.weight


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_bias_length_is_output_size(case: ModuleCase) -> None:
    built = _build(case)
    assert built.op.bias.shape == (built.op.shape[0],)


@pytest.mark.parametrize("case", MODULE_CASES, ids=lambda c: c.id)
def test_from_module_apply_gives_module_weight_gradient(case: ModuleCase) -> None:
    built = _build(case)
    x = torch.randn(2, *case.input_shape, dtype=torch.float64)
    upstream = torch.randn(2, *built.op.output_shape, dtype=torch.float64)
    # The bias only shifts the output, so it does not change the weight gradient.
    (expected,) = torch.autograd.grad(built.module(x), built.module.weight, upstream)
    (actual,) = torch.autograd.grad(built.op.apply(x), built.module.weight, upstream)
    np.testing.assert_allclose(
        actual.numpy(), expected.numpy(), rtol=RTOL, atol=_atol(expected.numpy())
    )


NO_BIAS_MODULES = [
    ModuleCase("conv1d", lambda: nn.Conv1d(2, 3, 3, bias=False), (2, 8)),
    ModuleCase(
        "conv2d-reflect",
        lambda: nn.Conv2d(2, 3, 3, bias=False, padding_mode="reflect", padding=1),
        (2, 5, 5),
    ),
    ModuleCase("conv3d", lambda: nn.Conv3d(1, 2, 2, bias=False), (1, 3, 3, 3)),
    ModuleCase("conv_transpose1d", lambda: nn.ConvTranspose1d(2, 3, 3, bias=False), (2, 8)),
    ModuleCase(
        "conv_transpose2d", lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, bias=False), (2, 4, 4)
    ),
    ModuleCase("conv_transpose3d", lambda: nn.ConvTranspose3d(1, 2, 2, bias=False), (1, 3, 3, 3)),
]


@pytest.mark.parametrize("case", NO_BIAS_MODULES, ids=lambda c: c.id)
def test_from_module_without_bias_has_bias_none(case: ModuleCase) -> None:
    assert convop.from_module(case.make(), case.input_shape).bias is None


@pytest.mark.parametrize("case", NO_BIAS_MODULES, ids=lambda c: c.id)
def test_from_module_keeps_float32(case: ModuleCase) -> None:
    assert convop.from_module(case.make(), case.input_shape).dtype == np.dtype(np.float32)


class ModuleError(NamedTuple):
    id: str
    make: Callable[[], nn.Module]
    input_shape: object
    error: type[Exception]
    match: str


MODULE_ERRORS = [
    ModuleError(
        "linear",
        lambda: nn.Linear(3, 4),
        (3,),
        TypeError,
        r"module must be one of nn\.Conv1d, .*nn\.ConvTranspose3d, got Linear",
    ),
    ModuleError(
        "sequential-of-conv",
        lambda: nn.Sequential(nn.Conv2d(1, 1, 3)),
        (1, 8, 8),
        TypeError,
        r"module must be one of .* got Sequential",
    ),
    ModuleError(
        "max-pool",
        lambda: nn.MaxPool2d(2),
        (1, 8, 8),
        TypeError,
        r"module must be one of .* got MaxPool2d",
    ),
    ModuleError(
        "uninitialised-lazy-conv2d",
        lambda: nn.LazyConv2d(4, 3),
        (3, 8, 8),
        ValueError,
        r"module LazyConv2d has uninitialised parameters",
    ),
    ModuleError(
        "uninitialised-lazy-conv-transpose1d",
        lambda: nn.LazyConvTranspose1d(4, 3),
        (3, 8),
        ValueError,
        r"module LazyConvTranspose1d has uninitialised parameters",
    ),
    ModuleError(
        "conv2d-input-channels-mismatch",
        lambda: nn.Conv2d(3, 4, 3),
        (2, 8, 8),
        ValueError,
        r"input_shape\[0\]=2 does not match the weight: expected in_channels = .* = 3",
    ),
    ModuleError(
        "conv2d-input-shape-wrong-length",
        lambda: nn.Conv2d(3, 4, 3),
        (3, 8),
        ValueError,
        r"input_shape must have 3 entries .* got input_shape=\(3, 8\)",
    ),
    ModuleError(
        "conv1d-reflect-padding-too-large-for-input",
        lambda: nn.Conv1d(1, 1, 3, padding=3, padding_mode="reflect"),
        (1, 3),
        ValueError,
        r"padding_mode='reflect' needs padding < input size .* got padding \(3, 3\) for "
        r"input size 3",
    ),
    ModuleError(
        "conv2d-negative-padding",
        lambda: nn.Conv2d(1, 1, 3, padding=-1),
        (1, 8, 8),
        ValueError,
        r"padding must be >= 0 in every dimension, got padding=\(-1, -1\)",
    ),
    ModuleError(
        "conv2d-stride-0",
        lambda: nn.Conv2d(1, 1, 3, stride=0),
        (1, 8, 8),
        ValueError,
        r"stride must be >= 1 in every dimension, got stride=\(0, 0\)",
    ),
    ModuleError(
        "conv_transpose2d-padding-same",
        lambda: nn.ConvTranspose2d(1, 1, 3, padding="same"),
        (1, 8, 8),
        ValueError,
        # torch stores padding="same" as ("s", "a", "m", "e") in a transposed module
        r"padding must be an int or a tuple of 2 ints.* got padding=",
    ),
    ModuleError(
        "float16-module",
        lambda: nn.Conv1d(1, 1, 3, dtype=torch.float16),
        (1, 8),
        TypeError,
        r"weight must have dtype float32, float64, complex64 or complex128, "
        r"got weight\.dtype=torch\.float16",
    ),
]


@pytest.mark.parametrize("case", MODULE_ERRORS, ids=lambda c: c.id)
def test_from_module_rejects(case: ModuleError) -> None:
    module = case.make()
    with pytest.raises(case.error, match=case.match):
        convop.from_module(module, case.input_shape)


def test_from_module_accepts_lazy_conv_after_first_forward() -> None:
    torch.manual_seed(0)
    module = nn.LazyConv2d(4, 3, padding=1, dtype=torch.float64)
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x[None]).numpy().ravel()
    op = convop.from_module(module, (3, 6, 5))
    actual = op @ x.numpy().ravel() + op.bias
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=_atol(expected))


# ---------------------------------------------------------------------- weight handling
WEIGHT_SHAPE = (4, 2, 3, 3)
INPUT_SHAPE = (2, 7, 6)


def _weight_array() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(WEIGHT_SHAPE)


def _sample() -> np.ndarray:
    return np.random.default_rng(2).standard_normal(math.prod(INPUT_SHAPE))


def test_numpy_weight_is_copied() -> None:
    weight = _weight_array()
    op = convop.conv2d(weight, INPUT_SHAPE, padding=1)
    before = op @ _sample()
    weight *= 2.0
    np.testing.assert_array_equal(op @ _sample(), before)


def test_numpy_weight_not_modified_by_construction_or_products() -> None:
    weight = _weight_array()
    op = convop.conv2d(weight, INPUT_SHAPE, padding=1, padding_mode="reflect")
    op @ _sample()
    op.H @ np.ones(op.shape[0])
    np.testing.assert_array_equal(weight, _weight_array())


def test_numpy_weight_matches_torch_oracle() -> None:
    weight = _weight_array()
    x = _sample()
    op = convop.conv2d(weight, INPUT_SHAPE, stride=2, padding=1)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x).reshape(1, *INPUT_SHAPE), torch.from_numpy(weight), stride=2, padding=1
    )
    expected = expected.numpy().ravel()
    np.testing.assert_allclose(op @ x, expected, rtol=RTOL, atol=_atol(expected))


class TorchWeightCase(NamedTuple):
    id: str
    build: Callable[[torch.Tensor], convop.ConvOperator]
    weight_shape: tuple[int, ...]


TORCH_WEIGHT_CASES = [
    TorchWeightCase("conv1d", lambda w: convop.conv1d(w, (2, 8)), (3, 2, 3)),
    TorchWeightCase("conv2d", lambda w: convop.conv2d(w, (2, 8, 8), padding=1), (3, 2, 3, 3)),
    TorchWeightCase("conv3d", lambda w: convop.conv3d(w, (2, 4, 4, 4)), (3, 2, 2, 2, 2)),
    TorchWeightCase("conv_transpose1d", lambda w: convop.conv_transpose1d(w, (3, 8)), (3, 2, 3)),
    TorchWeightCase(
        "conv_transpose2d", lambda w: convop.conv_transpose2d(w, (3, 4, 4), stride=2), (3, 2, 3, 3)
    ),
    TorchWeightCase(
        "conv_transpose3d", lambda w: convop.conv_transpose3d(w, (3, 3, 3, 3)), (3, 2, 2, 2, 2)
    ),
]


@pytest.mark.parametrize("case", TORCH_WEIGHT_CASES, ids=lambda c: c.id)
def test_torch_weight_used_as_given(case: TorchWeightCase) -> None:
    weight = torch.randn(case.weight_shape, dtype=torch.float64)
    assert case.build(weight).weight is weight


def test_torch_weight_requiring_grad_used_as_given() -> None:
    weight = torch.randn(WEIGHT_SHAPE, dtype=torch.float64, requires_grad=True)
    assert convop.conv2d(weight, INPUT_SHAPE).weight is weight


class LayoutCase(NamedTuple):
    id: str
    relayout: Callable[[np.ndarray], np.ndarray]  # same values, unusual memory layout


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


LAYOUT_CASES = [
    LayoutCase("non-contiguous", lambda a: np.repeat(a, 2, axis=-1)[..., ::2]),
    LayoutCase("fortran", np.asfortranarray),
    LayoutCase("negative-strides", lambda a: a[::-1, :, ::-1].copy()[::-1, :, ::-1]),
    LayoutCase("big-endian", lambda a: a.astype(">f8")),
    LayoutCase("read-only", _read_only),
    LayoutCase("offset-slice-of-padded", lambda a: np.pad(a, 1)[1:-1, 1:-1, 1:-1, 1:-1]),
]


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=lambda c: c.id)
def test_unusual_numpy_weight_layout_gives_same_result(case: LayoutCase) -> None:
    weight = _weight_array()
    x = _sample()
    odd = case.relayout(weight)
    expected = convop.conv2d(np.ascontiguousarray(odd, dtype=np.float64), INPUT_SHAPE) @ x
    np.testing.assert_array_equal(convop.conv2d(odd, INPUT_SHAPE) @ x, expected)


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=lambda c: c.id)
def test_unusual_numpy_weight_layout_is_float64(case: LayoutCase) -> None:
    odd = case.relayout(_weight_array())
    assert convop.conv2d(odd, INPUT_SHAPE).dtype == np.dtype(np.float64)


class WeightError(NamedTuple):
    id: str
    weight: object
    match: str


#: What every constructor says of a weight of another dtype, up to the dtype's name.
DTYPE_ERROR = (
    r"weight must have dtype float32, float64, complex64 or complex128, got weight\.dtype="
)
WEIGHT_ERRORS = [
    WeightError(
        "list",
        np.zeros(WEIGHT_SHAPE).tolist(),
        r"weight must be a torch\.Tensor or numpy\.ndarray, got list",
    ),
    *(
        WeightError(f"numpy-{np.dtype(d)}", np.zeros(WEIGHT_SHAPE, dtype=d),
                    DTYPE_ERROR + re.escape(str(np.dtype(d))) + "$")
        for d in (np.int64, np.float16, np.bool_)
    ),
    *(
        WeightError(f"torch-{d}", torch.zeros(WEIGHT_SHAPE, dtype=d),
                    DTYPE_ERROR + re.escape(str(d)) + "$")
        for d in (torch.int32, torch.float16, torch.bfloat16)
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", WEIGHT_ERRORS, ids=lambda c: c.id)
def test_invalid_weight_rejected(case: WeightError) -> None:
    with pytest.raises(TypeError, match=case.match):
        convop.conv2d(case.weight, INPUT_SHAPE)


@pytest.mark.parametrize("case", WEIGHT_ERRORS, ids=lambda c: c.id)
def test_invalid_weight_rejected_by_transposed_constructor(case: WeightError) -> None:
    with pytest.raises(TypeError, match=case.match):
        convop.conv_transpose2d(case.weight, (4, 5, 5))


class _Standardised(nn.Conv2d):
    """A conv whose forward is not determined by its weight and configuration alone."""

    def forward(self, x):
        return super().forward(x) * 2


def test_from_module_rejects_a_subclass_that_overrides_forward():
    with pytest.raises(TypeError, match=r"_Standardised overrides nn\.Conv2d\.forward"):
        convop.from_module(_Standardised(1, 1, 3), (1, 5, 5))


# ---------------------------------------------------------------------- signatures
@pytest.mark.parametrize(
    "kind", list(CONSTRUCTORS), ids=lambda k: f"{k[0]}d-{'T' if k[1] else 'conv'}"
)
def test_constructor_keywords_are_the_layers_with_torchs_defaults(kind) -> None:
    """Each constructor takes ``weight`` and ``input_shape``, then by keyword the geometry of
    the matching ``torch.nn`` layer, in the layer's order and with its defaults."""
    ours = inspect.signature(CONSTRUCTORS[kind]).parameters
    layer = next(cls for cls, found in MODULE_KINDS.items() if found == kind)
    torchs = inspect.signature(layer.__init__).parameters
    keywords = [n for n, p in ours.items() if p.kind is p.KEYWORD_ONLY and n != "method"]
    assert [n for n, p in ours.items() if p.kind is not p.KEYWORD_ONLY] == [
        "weight",
        "input_shape",
    ]
    assert keywords == [n for n in torchs if n in keywords]
    assert {n: ours[n].default for n in keywords} == {n: torchs[n].default for n in keywords}


W = torch.ones(WEIGHT_SHAPE)


class CallError(NamedTuple):
    id: str
    call: Callable[[], object]
    match: str


CALL_ERRORS = [
    CallError("unknown-keyword", lambda: convop.conv_transpose2d(W, (4, 5, 5), padding_mode="a"),
              r"^conv_transpose2d\(\): got an unexpected keyword argument 'padding_mode'$"),
    CallError("stride-by-position", lambda: convop.conv2d(W, INPUT_SHAPE, 2),
              r"^conv2d\(\): too many positional arguments$"),
    CallError("no-input-shape", lambda: convop.conv3d(torch.ones(1, 1, 3, 3, 3)),
              r"^conv3d\(\): missing a required argument: 'input_shape'$"),
]  # fmt: skip


@pytest.mark.parametrize("case", CALL_ERRORS, ids=lambda c: c.id)
def test_constructor_call_errors_name_the_constructor_and_the_argument(case: CallError) -> None:
    with pytest.raises(TypeError, match=case.match):
        case.call()
