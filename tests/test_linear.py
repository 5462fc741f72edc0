"""Tests for convop.linear: conv layers and whole models as fully-connected layers."""

from __future__ import annotations

import math
import re
import time
from typing import NamedTuple

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import convop

from .checks import assert_close
from .modules import F64, MODULE_CASES, NO_BIAS_CASES, ModuleCase
from .strategies import COMBO_IDS, COMBOS, conv_cases

CONV_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


# ---------------------------------------------------------------------- to_linear
CASES = MODULE_CASES + NO_BIAS_CASES
CASE_IDS = [case.id for case in CASES]


def _build(case: ModuleCase) -> tuple[nn.Module, nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    module = case.make()
    x = torch.randn(3, *case.input_shape, **F64)  # (3, C_in, *spatial_in)
    return module, convop.to_linear(module, case.input_shape), x


def _terms(module: nn.Module) -> int:
    return math.prod(module.weight.shape[1:]) * module.weight.shape[0]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_to_linear_equals_module(case: ModuleCase) -> None:
    module, linear, x = _build(case)
    expected = module(x).flatten(1)
    assert_close(linear(x.flatten(1)), expected, dtype=torch.float64, terms=_terms(module))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_to_linear_keeps_dtype_and_device(case: ModuleCase) -> None:
    module, linear, _ = _build(case)
    assert (linear.weight.dtype, linear.weight.device) == (torch.float64, module.weight.device)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_to_linear_has_bias_exactly_when_module_has(case: ModuleCase) -> None:
    module, linear, _ = _build(case)
    assert (linear.bias is None) == (module.bias is None)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_to_linear_weight_is_the_dense_matrix(case: ModuleCase) -> None:
    module, linear, _ = _build(case)
    expected = convop.from_module(module, case.input_shape).to_dense()
    torch.testing.assert_close(linear.weight.detach(), expected, rtol=0, atol=0)


def test_to_linear_bias_is_repeated_over_output_positions() -> None:
    module = nn.Conv2d(2, 3, 3, stride=2, **F64)
    linear = convop.to_linear(module, (2, 7, 5))  # output (3, 3, 2)
    expected = module.bias.detach().repeat_interleave(6)
    torch.testing.assert_close(linear.bias.detach(), expected, rtol=0, atol=0)


def test_to_linear_parameters_are_fresh() -> None:
    module = nn.Conv2d(2, 3, 1, **F64)  # one output position: bias needs no repetition
    before = [p.detach().clone() for p in module.parameters()]
    linear = convop.to_linear(module, (2, 1, 1))
    with torch.no_grad():
        linear.weight.add_(1.0)
        linear.bias.add_(1.0)
    for param, old in zip(module.parameters(), before):
        torch.testing.assert_close(param.detach(), old, rtol=0, atol=0)


def test_to_linear_requires_grad_like_module() -> None:
    module = nn.Conv1d(2, 3, 3, **F64)
    module.bias.requires_grad_(False)
    linear = convop.to_linear(module, (2, 5))
    assert (linear.weight.requires_grad, linear.bias.requires_grad) == (True, False)


def test_to_linear_float32_module_gives_float32_linear() -> None:
    module = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular")
    x = torch.randn(3, 2, 5, 4)
    linear = convop.to_linear(module, (2, 5, 4))
    y = linear(x.flatten(1))
    assert (linear.weight.dtype, linear.bias.dtype, y.dtype) == (torch.float32,) * 3
    assert_close(y, module(x).flatten(1), dtype=torch.float32, terms=_terms(module))


def test_to_linear_complex_module() -> None:
    module = nn.Conv1d(2, 3, 3, padding=1, dtype=torch.complex128)
    x = torch.randn(3, 2, 6, dtype=torch.complex128)
    linear = convop.to_linear(module, (2, 6))
    assert_close(
        linear(x.flatten(1)), module(x).flatten(1), dtype=torch.complex128, terms=_terms(module)
    )


@pytest.mark.cuda
def test_to_linear_on_cuda_stays_on_cuda() -> None:
    module = nn.Conv2d(2, 3, 3, padding=1, device="cuda", **F64)
    x = torch.randn(3, 2, 5, 6, device="cuda", **F64)
    linear = convop.to_linear(module, (2, 5, 6))
    assert linear.weight.device == linear.bias.device == module.weight.device
    assert_close(linear(x.flatten(1)), module(x).flatten(1), dtype=torch.float64, terms=18)


def test_to_linear_max_bytes_guard() -> None:
    with pytest.raises(MemoryError, match=r"max_bytes"):
        convop.to_linear(nn.Conv1d(1, 1, 3, **F64), (1, 8), max_bytes=1)


def test_to_linear_refuses_a_huge_matrix_at_once() -> None:
    # Building the operator used to compute an 8000^2-grid FFT spectrum first (2.3 s, 4.4 GB).
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"todense\(\) of a 63043600 x 64000000 float32"):
        convop.to_linear(nn.Conv2d(4, 4, 31), (4, 4000, 4000), max_bytes=10**6)
    assert time.perf_counter() - start < 0.5


def test_to_linear_rejects_unsupported_module() -> None:
    with pytest.raises(TypeError, match=r"module must be one of .*, got Linear"):
        convop.to_linear(nn.Linear(4, 4), (4,))


class _ScaledConv(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


def test_to_linear_rejects_subclass_overriding_forward() -> None:
    with pytest.raises(TypeError, match=r"_ScaledConv overrides nn.Conv2d.forward"):
        convop.to_linear(_ScaledConv(1, 1, 3), (1, 5, 5))


def test_to_linear_accepts_parametrized_conv() -> None:
    module = nn.utils.parametrizations.weight_norm(nn.Conv2d(2, 3, 3, **F64))
    x = torch.randn(3, 2, 5, 5, **F64)
    linear = convop.to_linear(module, (2, 5, 5))
    assert_close(linear(x.flatten(1)), module(x).flatten(1), dtype=torch.float64, terms=54)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_to_linear_equals_module_for_any_case(combo, data) -> None:
    case = data.draw(conv_cases(*combo), label="case")
    module = case.module(case.weight(torch.float64))
    module.bias = nn.Parameter(case.random((case.out_channels,), torch.float64, 2))
    x = case.random((3, *case.input_shape), torch.float64, 1)  # (3, C_in, *spatial_in)
    linear = convop.to_linear(module, case.input_shape)
    expected = module(x).flatten(1)
    assert_close(linear(x.flatten(1)), expected, dtype=torch.float64, terms=case.terms)


# ---------------------------------------------------------------------- to_linear_model
class Head(nn.Module):
    """Custom submodule: a transposed conv, then convs in a ModuleDict and a ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.branches = nn.ModuleDict({"mix": nn.Conv2d(2, 2, 1)})
        self.refine = nn.ModuleList([nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.up(x))
        return self.branches["mix"](y) + self.refine[0](y)


def _cnn() -> nn.Module:
    """(3, 8, 8) -> (4, 8, 8) -> (4, 4, 4) -> (4, 2, 2) -> (2, 4, 4) -> 5 logits."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2),
        nn.MaxPool2d(2),
        Head(),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 5),
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    return model.eval()


INPUT = (3, 8, 8)


def _convs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, CONV_TYPES)]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_converted_model_equals_model() -> None:
    model = _cnn()
    x = torch.randn(4, *INPUT, **F64)
    converted = convop.to_linear_model(model, INPUT)
    torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-10)


def test_converted_model_has_no_conv_layers() -> None:
    converted = convop.to_linear_model(_cnn(), INPUT)
    assert _convs(converted) == []


def test_converted_model_replacement_layout() -> None:
    converted = convop.to_linear_model(_cnn(), INPUT)
    flatten, linear, unflatten = converted[3]
    assert (type(flatten), type(unflatten)) == (nn.Flatten, nn.Unflatten)
    assert (linear.in_features, linear.out_features) == (4 * 8 * 8, 4 * 4 * 4)
    assert unflatten.unflattened_size == (4, 4, 4)


def test_original_model_untouched() -> None:
    model = _cnn()
    convs, before = _convs(model), _snapshot(model)
    convop.to_linear_model(model, INPUT)
    assert _convs(model) == convs
    assert all(not m._forward_pre_hooks for m in model.modules())
    for name, value in _snapshot(model).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, msg=name)


def test_train_mode_kept_and_running_stats_unchanged() -> None:
    model = _cnn().train()
    before = _snapshot(model)
    converted = convop.to_linear_model(model, INPUT)
    assert all(m.training for m in [*model.modules(), *converted.modules()])
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        torch.testing.assert_close(model.state_dict()[name], before[name], rtol=0, atol=0)
        torch.testing.assert_close(converted.state_dict()[name], before[name], rtol=0, atol=0)


def test_converted_model_equals_model_in_train_mode() -> None:
    model = _cnn().train()
    x = torch.randn(4, *INPUT, **F64)
    converted = convop.to_linear_model(model, INPUT)
    torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-10)


def test_mixed_modes_restored() -> None:
    model = _cnn().train()
    model[5].eval()
    converted = convop.to_linear_model(model, INPUT)
    assert converted[0].training
    assert not any(m.training for m in converted[5].modules())


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Conv2d(2, 2, 3, padding=1, **F64)
        self.second = self.first  # one layer, two names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


def test_shared_conv_stays_shared() -> None:
    model = Shared()
    converted = convop.to_linear_model(model, (2, 5, 5))
    assert converted.first is converted.second
    assert isinstance(converted.first, nn.Sequential)


def test_shared_conv_converted_model_equals_model() -> None:
    model = Shared()
    x = torch.randn(3, 2, 5, 5, **F64)
    converted = convop.to_linear_model(model, (2, 5, 5))
    torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-10)


class TwoShapes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(nn.functional.avg_pool2d(self.body(x), 2))


def test_conv_called_with_two_shapes_raises() -> None:
    with pytest.raises(
        ValueError, match=r"'body\.0' is called with inputs of 2 .*\(2, 8, 8\), \(2, 4, 4\)"
    ):
        convop.to_linear_model(TwoShapes(), (2, 8, 8))


def test_failed_conversion_leaves_model_without_hooks() -> None:
    model = TwoShapes()
    with pytest.raises(ValueError, match=r"different per-sample shapes"):
        convop.to_linear_model(model, (2, 8, 8))
    assert not model.body[0]._forward_pre_hooks


class Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Conv1d(1, 2, 3, **F64)
        self.unused = nn.Conv1d(2, 2, 3, **F64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_uncalled_conv_left_alone() -> None:
    model = Unused()
    converted = convop.to_linear_model(model, (1, 6))
    assert (type(converted.used), type(converted.unused)) == (nn.Sequential, nn.Conv1d)
    assert converted.unused is not model.unused
    assert not converted.unused._forward_pre_hooks
    torch.testing.assert_close(converted.unused.weight, model.unused.weight, rtol=0, atol=0)


def test_model_that_is_a_conv() -> None:
    conv = nn.ConvTranspose1d(2, 3, 3, stride=2, **F64)
    x = torch.randn(3, 2, 5, **F64)
    converted = convop.to_linear_model(conv, (2, 5))
    torch.testing.assert_close(converted(x), conv(x), rtol=0, atol=1e-12)


def test_model_that_is_a_conv_is_replaced() -> None:
    converted = convop.to_linear_model(nn.Conv2d(1, 2, 3, **F64), (1, 4, 4))
    assert isinstance(converted, nn.Sequential)
    assert _convs(converted) == []


class OutputSize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose1d(1, 1, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x, output_size=[12])


def test_conv_transpose_called_with_output_size_raises() -> None:
    with pytest.raises(ValueError, match=r"'up' is called with output_size"):
        convop.to_linear_model(OutputSize(), (1, 5))


class Unbatched(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[0])


def test_conv_called_unbatched_raises() -> None:
    with pytest.raises(ValueError, match=r"'conv' is called with input of shape \(1, 6\)"):
        convop.to_linear_model(Unbatched(), (1, 6))


def test_model_with_uninitialised_lazy_conv_raises() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Unflatten(1, (1, 2)), nn.LazyConv1d(1, 1))
    with pytest.raises(ValueError, match=r"'2' \(LazyConv1d\) has uninitialised parameters"):
        convop.to_linear_model(model, (2,))


def test_model_max_bytes_guard() -> None:
    with pytest.raises(MemoryError, match=r"replacing 5 conv layers by fully-connected ones "
                                          r"needs .*max_bytes"):  # fmt: skip
        convop.to_linear_model(_cnn(), INPUT, max_bytes=1)


def test_model_max_bytes_guards_all_layers_together() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, **F64), nn.ReLU(), nn.Conv2d(2, 1, 3, **F64))
    ops = [convop.from_module(model[0], (1, 8, 8)), convop.from_module(model[2], (2, 6, 6))]
    results = sum((op.shape[0] * op.shape[1] + op.shape[0]) * 8 for op in ops)
    with pytest.raises(MemoryError) as refused:
        convop.to_linear_model(model, (1, 8, 8), max_bytes=results - 1)
    needed = int(re.search(r"pass max_bytes=(\d+) or more", str(refused.value)).group(1))
    assert needed >= results  # both results at once, plus the planning of one
    with pytest.raises(MemoryError):
        convop.to_linear_model(model, (1, 8, 8), max_bytes=needed - 1)
    assert _convs(convop.to_linear_model(model, (1, 8, 8), max_bytes=needed)) == []


class SeesOnlyMeta(nn.Module):
    """Records the devices its forward sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.devices: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.devices.append(x.device.type)
        return self.conv(x)


def test_model_guard_comes_before_any_real_forward_pass() -> None:
    # A real forward pass on (1, 1, 40000, 40000) would allocate 12 GB; the guard is first.
    model = SeesOnlyMeta()
    start = time.perf_counter()
    with pytest.raises(MemoryError, match=r"replacing 1 conv layer by fully-connected ones"):
        convop.to_linear_model(model, (1, 40000, 40000))
    assert time.perf_counter() - start < 1.0
    converted = convop.to_linear_model(model, (1, 5, 5))
    assert converted.devices == ["meta"]  # the copy traced on the meta device only


class DataDependent(nn.Module):
    """Control flow on values: cannot run on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, **F64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x if bool(x.sum() >= 0) else -x)


def test_model_that_cannot_run_on_meta_is_traced_on_real_zeros() -> None:
    model = DataDependent()
    converted = convop.to_linear_model(model, (1, 7))
    x = torch.rand(3, 1, 7, **F64)
    torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-12)
    assert isinstance(converted.conv, nn.Sequential)


def test_model_with_subclass_overriding_forward_raises() -> None:
    model = nn.Sequential(nn.Identity(), _ScaledConv(1, 1, 3))
    with pytest.raises(TypeError, match=r"conv layer '1': module _ScaledConv overrides"):
        convop.to_linear_model(model, (1, 5, 5))


class BadShape(NamedTuple):
    id: str
    input_shape: object
    error: type[Exception]
    match: str


BAD_SHAPES = [
    BadShape("string", "3x8x8", TypeError, r"input_shape must be a tuple of ints"),
    BadShape("int", 3, TypeError, r"input_shape must be a tuple of ints .*got 3 of type int"),
    BadShape("empty", (), ValueError, r"input_shape must have at least one entry .*got \(\)"),
    BadShape("zero", (3, 0, 8), ValueError, r"input_shape\[1\] must be >= 1, got input_shape"),
    BadShape("float", (3, 8.0, 8), TypeError, r"input_shape\[1\] must be an int, got 8\.0"),
]


@pytest.mark.parametrize("case", BAD_SHAPES, ids=[case.id for case in BAD_SHAPES])
def test_model_input_shape_validated(case: BadShape) -> None:
    with pytest.raises(case.error, match=case.match):
        convop.to_linear_model(_cnn(), case.input_shape)


def test_model_must_be_a_module() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function"):
        convop.to_linear_model(lambda x: x, INPUT)
