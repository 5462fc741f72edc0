"""Tests for convop.geometry: shapes against torch modules, padding pairs, validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

import convop
from convop import ConvGeometry

NAMES = {
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
    nn.ConvTranspose1d: "conv_transpose1d",
    nn.ConvTranspose2d: "conv_transpose2d",
    nn.ConvTranspose3d: "conv_transpose3d",
}
TRANSPOSED = {nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d}


# ---------------------------------------------------------------------- shapes vs torch
class ShapeCase(NamedTuple):
    id: str
    module: type[nn.Module]
    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, ...]
    input_size: tuple[int, ...]
    options: Mapping[str, object]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, *self.input_size)

    def torch_module(self) -> nn.Module:
        return self.module(
            self.in_channels, self.out_channels, self.kernel_size, bias=False, **self.options
        )

    def geometry(self) -> ConvGeometry:
        weight_shape = tuple(self.torch_module().weight.shape)
        transposed = self.module in TRANSPOSED
        return ConvGeometry.from_torch(
            weight_shape, self.input_shape, transposed=transposed, **self.options
        )


SHAPE_CASES = [
    # conv1d
    ShapeCase("conv1d-plain", nn.Conv1d, 2, 3, 3, (10,), {}),
    ShapeCase("conv1d-stride3-remainder", nn.Conv1d, 2, 3, 3, (11,), dict(stride=3, padding=1)),
    ShapeCase("conv1d-dilation3-pad2", nn.Conv1d, 1, 2, 3, (12,), dict(dilation=3, padding=2)),
    ShapeCase("conv1d-groups4-stride2", nn.Conv1d, 4, 8, 2, (7,), dict(groups=4, stride=2)),
    ShapeCase("conv1d-same-even-k4", nn.Conv1d, 1, 1, 4, (9,), dict(padding="same")),
    ShapeCase(
        "conv1d-same-even-k2-dilation3", nn.Conv1d, 2, 2, 2, (6,), dict(padding="same", dilation=3)
    ),
    ShapeCase("conv1d-valid", nn.Conv1d, 1, 1, 5, (9,), dict(padding="valid")),
    ShapeCase(
        "conv1d-reflect-pad-size-minus-1",
        nn.Conv1d,
        1,
        1,
        3,
        (5,),
        dict(padding=4, padding_mode="reflect"),
    ),
    ShapeCase(
        "conv1d-circular-pad-equals-size",
        nn.Conv1d,
        1,
        1,
        3,
        (4,),
        dict(padding=4, padding_mode="circular"),
    ),
    ShapeCase(
        "conv1d-replicate-pad-exceeds-size",
        nn.Conv1d,
        1,
        1,
        3,
        (3,),
        dict(padding=7, padding_mode="replicate"),
    ),
    # conv2d
    ShapeCase(
        "conv2d-tuple-stride-padding",
        nn.Conv2d,
        3,
        4,
        3,
        (8, 7),
        dict(stride=(2, 1), padding=(1, 0)),
    ),
    ShapeCase(
        "conv2d-dilation-groups", nn.Conv2d, 4, 6, (3, 2), (9, 10), dict(dilation=(2, 3), groups=2)
    ),
    ShapeCase("conv2d-same-even-kernel", nn.Conv2d, 2, 3, (4, 2), (6, 5), dict(padding="same")),
    ShapeCase(
        "conv2d-same-dilated-even-kernel",
        nn.Conv2d,
        1,
        2,
        (2, 3),
        (7, 7),
        dict(padding="same", dilation=(3, 2)),
    ),
    ShapeCase(
        "conv2d-same-reflect",
        nn.Conv2d,
        2,
        2,
        4,
        (5, 6),
        dict(padding="same", padding_mode="reflect"),
    ),
    ShapeCase(
        "conv2d-circular-stride2",
        nn.Conv2d,
        1,
        2,
        3,
        (5, 4),
        dict(stride=2, padding=(2, 1), padding_mode="circular"),
    ),
    ShapeCase(
        "conv2d-replicate-tuple",
        nn.Conv2d,
        2,
        1,
        (3, 1),
        (4, 2),
        dict(padding=(2, 3), padding_mode="replicate"),
    ),
    ShapeCase("conv2d-kernel-equals-padded-input", nn.Conv2d, 1, 1, 5, (3, 3), dict(padding=1)),
    ShapeCase("conv2d-depthwise", nn.Conv2d, 3, 3, 3, (6, 6), dict(groups=3, padding=1)),
    # conv3d
    ShapeCase("conv3d-plain", nn.Conv3d, 2, 3, (2, 3, 1), (4, 5, 3), {}),
    ShapeCase(
        "conv3d-stride-dilation",
        nn.Conv3d,
        1,
        2,
        3,
        (7, 6, 8),
        dict(stride=(1, 2, 3), dilation=(2, 1, 1), padding=(2, 1, 0)),
    ),
    ShapeCase(
        "conv3d-same-even-dilated",
        nn.Conv3d,
        1,
        1,
        (2, 4, 3),
        (4, 5, 6),
        dict(padding="same", dilation=(1, 1, 2)),
    ),
    ShapeCase(
        "conv3d-circular-groups",
        nn.Conv3d,
        4,
        2,
        2,
        (3, 3, 3),
        dict(groups=2, padding=1, padding_mode="circular"),
    ),
    ShapeCase(
        "conv3d-reflect",
        nn.Conv3d,
        1,
        1,
        3,
        (4, 3, 5),
        dict(padding=(1, 2, 0), padding_mode="reflect"),
    ),
    # conv_transpose
    ShapeCase("conv_transpose1d-plain", nn.ConvTranspose1d, 3, 2, 3, (5,), {}),
    ShapeCase(
        "conv_transpose1d-stride-pad-output-padding",
        nn.ConvTranspose1d,
        2,
        2,
        4,
        (6,),
        dict(stride=3, padding=2, output_padding=2),
    ),
    ShapeCase(
        "conv_transpose1d-output-padding-ge-stride-lt-dilation",
        nn.ConvTranspose1d,
        1,
        1,
        3,
        (5,),
        dict(dilation=3, output_padding=2),
    ),
    ShapeCase(
        "conv_transpose2d-groups-dilation",
        nn.ConvTranspose2d,
        4,
        6,
        (3, 2),
        (4, 5),
        dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2), groups=2),
    ),
    ShapeCase(
        "conv_transpose2d-padding-crops-to-one",
        nn.ConvTranspose2d,
        2,
        1,
        3,
        (1, 1),
        dict(padding=1),
    ),
    ShapeCase(
        "conv_transpose3d-stride-groups",
        nn.ConvTranspose3d,
        2,
        4,
        (2, 3, 2),
        (3, 4, 3),
        dict(stride=2, padding=(0, 1, 1), output_padding=(1, 0, 1), groups=2),
    ),
    ShapeCase(
        "conv_transpose3d-output-padding-lt-dilation",
        nn.ConvTranspose3d,
        1,
        2,
        2,
        (2, 3, 2),
        dict(dilation=2, output_padding=1),
    ),
]


@pytest.mark.parametrize("case", SHAPE_CASES, ids=lambda c: c.id)
def test_output_shape_matches_torch_module(case: ShapeCase) -> None:
    module = case.torch_module()
    with torch.no_grad():
        expected = tuple(module(torch.zeros(1, *case.input_shape)).shape[1:])
    assert case.geometry().output_shape == expected


@pytest.mark.parametrize("case", SHAPE_CASES, ids=lambda c: c.id)
def test_weight_shape_matches_torch_module(case: ShapeCase) -> None:
    assert case.geometry().weight_shape == tuple(case.torch_module().weight.shape)


@pytest.mark.parametrize("case", SHAPE_CASES, ids=lambda c: c.id)
def test_input_shape_is_kept(case: ShapeCase) -> None:
    assert case.geometry().input_shape == case.input_shape


@pytest.mark.parametrize("case", SHAPE_CASES, ids=lambda c: c.id)
def test_name_is_torch_function_name(case: ShapeCase) -> None:
    assert case.geometry().name == NAMES[case.module]


# ---------------------------------------------------------------------- padding pairs
class PaddingCase(NamedTuple):
    id: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    options: Mapping[str, object]
    expected: tuple[tuple[int, int], ...]


PADDING_CASES = [
    PaddingCase("int", (1, 1, 3), (1, 8), dict(padding=2), ((2, 2),)),
    PaddingCase("tuple", (1, 1, 3, 3), (1, 8, 8), dict(padding=(0, 3)), ((0, 0), (3, 3))),
    PaddingCase("valid", (1, 1, 3, 3), (1, 8, 8), dict(padding="valid"), ((0, 0), (0, 0))),
    PaddingCase("same-odd-k3", (1, 1, 3), (1, 8), dict(padding="same"), ((1, 1),)),
    PaddingCase("same-even-k4-extra-after", (1, 1, 4), (1, 10), dict(padding="same"), ((1, 2),)),
    PaddingCase("same-even-k2", (1, 1, 2), (1, 10), dict(padding="same"), ((0, 1),)),
    PaddingCase(
        "same-k4-dilation2-even-total",
        (1, 1, 4),
        (1, 10),
        dict(padding="same", dilation=2),
        ((3, 3),),
    ),
    PaddingCase(
        "same-k2-dilation3-odd-total",
        (1, 1, 2),
        (1, 10),
        dict(padding="same", dilation=3),
        ((1, 2),),
    ),
    PaddingCase("same-2d-mixed", (1, 1, 4, 3), (1, 9, 9), dict(padding="same"), ((1, 2), (1, 1))),
    PaddingCase(
        "same-3d-mixed-dilation",
        (1, 1, 2, 4, 3),
        (1, 6, 6, 6),
        dict(padding="same", dilation=(1, 1, 2)),
        ((0, 1), (1, 2), (2, 2)),
    ),
    PaddingCase(
        "transposed-symmetric",
        (1, 1, 3, 3),
        (1, 4, 4),
        dict(padding=(1, 2), transposed=True),
        ((1, 1), (2, 2)),
    ),
]


@pytest.mark.parametrize("case", PADDING_CASES, ids=lambda c: c.id)
def test_padding_pairs(case: PaddingCase) -> None:
    geometry = ConvGeometry.from_torch(case.weight_shape, case.input_shape, **case.options)
    assert geometry.padding == case.expected


@pytest.mark.parametrize(
    "case", [c for c in PADDING_CASES if c.options.get("padding") == "same"], ids=lambda c: c.id
)
def test_same_padding_keeps_input_size(case: PaddingCase) -> None:
    geometry = ConvGeometry.from_torch(case.weight_shape, case.input_shape, **case.options)
    assert geometry.output_size == geometry.input_size


# ---------------------------------------------------------------------- adjoint remainder
class RemainderCase(NamedTuple):
    id: str
    weight_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    options: Mapping[str, object]
    expected: tuple[int, ...]


REMAINDER_CASES = [
    RemainderCase("n6-k3-s2-p0", (1, 1, 3), (1, 6), dict(stride=2), (1,)),
    RemainderCase("n7-k3-s2-p0-exact", (1, 1, 3), (1, 7), dict(stride=2), (0,)),
    RemainderCase("n10-k3-s3-p1", (1, 1, 3), (1, 10), dict(stride=3, padding=1), (0,)),
    RemainderCase("n10-k2-s3-d2", (1, 1, 2), (1, 10), dict(stride=3, dilation=2), (1,)),
    RemainderCase("n9-k1-s4", (1, 1, 1), (1, 9), dict(stride=4), (0,)),
    RemainderCase("n8-k1-s3", (1, 1, 1), (1, 8), dict(stride=3), (1,)),
    RemainderCase(
        "2d-mixed", (1, 1, 3, 2), (1, 8, 9), dict(stride=(3, 4), padding=(1, 0)), (1, 3)
    ),
    RemainderCase("stride1-always-zero", (1, 1, 3, 3), (1, 7, 5), dict(padding=1), (0, 0)),
]


@pytest.mark.parametrize("case", REMAINDER_CASES, ids=lambda c: c.id)
def test_adjoint_output_padding(case: RemainderCase) -> None:
    geometry = ConvGeometry.from_torch(case.weight_shape, case.input_shape, **case.options)
    assert geometry.adjoint_output_padding == case.expected


@pytest.mark.parametrize("case", REMAINDER_CASES, ids=lambda c: c.id)
def test_adjoint_output_padding_restores_padded_size_in_torch(case: RemainderCase) -> None:
    geometry = ConvGeometry.from_torch(case.weight_shape, case.input_shape, **case.options)
    conv_transpose = {
        1: torch.nn.functional.conv_transpose1d,
        2: torch.nn.functional.conv_transpose2d,
    }[geometry.ndim]
    out = conv_transpose(
        torch.zeros(1, *geometry.output_shape),
        torch.zeros(geometry.weight_shape),
        stride=geometry.stride,
        output_padding=geometry.adjoint_output_padding,
        dilation=geometry.dilation,
    )
    assert tuple(out.shape[2:]) == geometry.padded_size


# ---------------------------------------------------------------------- frozen, ints
def test_geometry_is_frozen() -> None:
    geometry = ConvGeometry.from_torch((1, 1, 3), (1, 8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        geometry.stride = (2,)  # type: ignore[misc]


def test_numpy_integers_accepted_as_stride() -> None:
    weight = torch.zeros(2, 1, 3, 3)
    op = convop.conv2d(weight, (1, 9, 9), stride=np.int64(2))
    assert op.geometry == convop.conv2d(weight, (1, 9, 9), stride=2).geometry


def test_numpy_integers_accepted_everywhere() -> None:
    i = np.int64
    geometry = ConvGeometry.from_torch(
        (i(4), i(1), i(3), i(3)),
        (i(2), i(9), i(9)),
        stride=(i(2), i(1)),
        padding=i(1),
        dilation=[i(1), i(2)],
        groups=i(2),
    )
    assert geometry == ConvGeometry.from_torch(
        (4, 1, 3, 3), (2, 9, 9), stride=(2, 1), padding=1, dilation=(1, 2), groups=2
    )


def test_numpy_integers_stored_as_python_ints() -> None:
    geometry = ConvGeometry.from_torch((1, 1, 3), (1, 8), stride=np.int64(2), groups=np.int32(1))
    assert [type(v) for v in (*geometry.stride, geometry.groups)] == [int, int]


# ---------------------------------------------------------------------- invalid: constructors
class ConstructorError(NamedTuple):
    id: str
    build: Callable[[], object]
    error: type[Exception]
    match: str


def _w(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


CONSTRUCTOR_ERRORS = [
    # channels and groups
    ConstructorError(
        "conv2d-channel-mismatch",
        lambda: convop.conv2d(_w(4, 3, 3, 3), (2, 8, 8)),
        ValueError,
        r"input_shape\[0\]=2 does not match the weight: expected in_channels = "
        r"weight\.shape\[1\] \* groups = 3",
    ),
    ConstructorError(
        "conv2d-channel-mismatch-with-groups",
        lambda: convop.conv2d(_w(4, 2, 3, 3), (3, 8, 8), groups=2),
        ValueError,
        r"input_shape\[0\]=3 does not match .* = 4 .* groups=2",
    ),
    ConstructorError(
        "conv_transpose2d-channel-mismatch",
        lambda: convop.conv_transpose2d(_w(4, 2, 3, 3), (3, 5, 5)),
        ValueError,
        r"input_shape\[0\]=3 does not match the weight: expected in_channels = "
        r"weight\.shape\[0\] = 4",
    ),
    ConstructorError(
        "conv2d-groups-not-dividing-out-channels",
        lambda: convop.conv2d(_w(3, 2, 3, 3), (4, 8, 8), groups=2),
        ValueError,
        r"groups=2 must divide out_channels=3",
    ),
    ConstructorError(
        "conv1d-groups-not-dividing-out-channels",
        lambda: convop.conv1d(_w(5, 1, 3), (3, 8), groups=3),
        ValueError,
        r"groups=3 must divide out_channels=5",
    ),
    ConstructorError(
        "conv_transpose2d-groups-not-dividing-in-channels",
        lambda: convop.conv_transpose2d(_w(3, 2, 3, 3), (3, 5, 5), groups=2),
        ValueError,
        r"groups=2 must divide in_channels=3",
    ),
    ConstructorError(
        "conv2d-groups-0",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), groups=0),
        ValueError,
        r"groups must be >= 1, got groups=0",
    ),
    ConstructorError(
        "conv_transpose1d-groups-negative",
        lambda: convop.conv_transpose1d(_w(2, 1, 3), (2, 8), groups=-1),
        ValueError,
        r"groups must be >= 1, got groups=-1",
    ),
    # stride and dilation
    ConstructorError(
        "conv2d-stride-0",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), stride=0),
        ValueError,
        r"stride must be >= 1 in every dimension, got stride=0",
    ),
    ConstructorError(
        "conv2d-stride-negative-entry",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), stride=(1, -2)),
        ValueError,
        r"stride must be >= 1 in every dimension, got stride=\(1, -2\)",
    ),
    ConstructorError(
        "conv_transpose2d-stride-0",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (1, 8, 8), stride=(0, 1)),
        ValueError,
        r"stride must be >= 1 in every dimension, got stride=\(0, 1\)",
    ),
    ConstructorError(
        "conv3d-dilation-0",
        lambda: convop.conv3d(_w(1, 1, 2, 2, 2), (1, 4, 4, 4), dilation=0),
        ValueError,
        r"dilation must be >= 1 in every dimension, got dilation=0",
    ),
    ConstructorError(
        "conv_transpose1d-dilation-negative",
        lambda: convop.conv_transpose1d(_w(1, 1, 3), (1, 8), dilation=-1),
        ValueError,
        r"dilation must be >= 1 in every dimension, got dilation=-1",
    ),
    # padding
    ConstructorError(
        "conv2d-padding-negative",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding=-1),
        ValueError,
        r"padding must be >= 0 in every dimension, got padding=-1",
    ),
    ConstructorError(
        "conv1d-padding-negative-reflect",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 8), padding=-1, padding_mode="reflect"),
        ValueError,
        r"padding must be >= 0 in every dimension, got padding=-1",
    ),
    ConstructorError(
        "conv_transpose2d-padding-negative",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (1, 8, 8), padding=(0, -1)),
        ValueError,
        r"padding must be >= 0 in every dimension, got padding=\(0, -1\)",
    ),
    ConstructorError(
        "conv2d-same-stride2",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding="same", stride=2),
        ValueError,
        r"padding='same' requires stride=1, got stride=\(2, 2\)",
    ),
    ConstructorError(
        "conv3d-same-stride-in-one-dim",
        lambda: convop.conv3d(_w(1, 1, 3, 3, 3), (1, 8, 8, 8), padding="same", stride=(1, 1, 2)),
        ValueError,
        r"padding='same' requires stride=1, got stride=\(1, 1, 2\)",
    ),
    ConstructorError(
        "conv2d-padding-full",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding="full"),
        ValueError,
        r"padding must be one of 'same', 'valid', got padding='full'",
    ),
    ConstructorError(
        "conv2d-padding-mode-mirror",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding_mode="mirror"),
        ValueError,
        r"padding_mode must be one of .*'circular', got padding_mode='mirror'",
    ),
    ConstructorError(
        "conv_transpose2d-padding-same",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (1, 8, 8), padding="same"),
        ValueError,
        r"padding must be an int or a tuple of 2 ints for a transposed convolution, "
        r"got padding='same'",
    ),
    ConstructorError(
        "conv_transpose1d-padding-valid",
        lambda: convop.conv_transpose1d(_w(1, 1, 3), (1, 8), padding="valid"),
        ValueError,
        r"padding must be .* for a transposed convolution, got padding='valid'",
    ),
    ConstructorError(
        "conv2d-reflect-padding-equals-size",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 3, 8), padding=3, padding_mode="reflect"),
        ValueError,
        r"padding_mode='reflect' needs padding < input size .* got padding \(3, 3\) for "
        r"input size 3 in spatial dimension 0",
    ),
    ConstructorError(
        "conv1d-reflect-same-padding-too-large",
        lambda: convop.conv1d(_w(1, 1, 8), (1, 3), padding="same", padding_mode="reflect"),
        ValueError,
        r"padding_mode='reflect' needs padding < input size .* got padding \(3, 4\) for "
        r"input size 3",
    ),
    ConstructorError(
        "conv3d-reflect-padding-too-large-last-dim",
        lambda: convop.conv3d(
            _w(1, 1, 1, 1, 1), (1, 5, 5, 2), padding=(1, 1, 2), padding_mode="reflect"
        ),
        ValueError,
        r"padding_mode='reflect' .* got padding \(2, 2\) for input size 2 in spatial "
        r"dimension 2",
    ),
    ConstructorError(
        "conv1d-circular-padding-exceeds-size",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 2), padding=3, padding_mode="circular"),
        ValueError,
        r"padding_mode='circular' needs padding <= input size .* got padding \(3, 3\) for "
        r"input size 2 in spatial dimension 0",
    ),
    # kernel and output size
    ConstructorError(
        "conv2d-kernel-larger-than-input",
        lambda: convop.conv2d(_w(1, 1, 5, 5), (1, 4, 8)),
        ValueError,
        r"kernel_size=\(5, 5\) with dilation=\(1, 1\) spans 5 samples in spatial dimension 0, "
        r"more than the padded input size 4",
    ),
    ConstructorError(
        "conv1d-dilated-kernel-larger-than-input",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 6), dilation=3),
        ValueError,
        r"kernel_size=\(3,\) with dilation=\(3,\) spans 7 samples .* padded input size 6",
    ),
    ConstructorError(
        "conv2d-kernel-larger-than-padded-input",
        lambda: convop.conv2d(_w(1, 1, 3, 6), (1, 8, 2), padding=(0, 1)),
        ValueError,
        r"kernel_size=\(3, 6\) .* spans 6 samples in spatial dimension 1, more than the "
        r"padded input size 4",
    ),
    ConstructorError(
        "conv_transpose2d-output-size-below-1",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (1, 1, 1), padding=2),
        ValueError,
        r"padding=2 is too large in spatial dimension 0: the transposed convolution of "
        r"input size 1 would have output size -1",
    ),
    ConstructorError(
        "conv_transpose1d-output-size-0",
        lambda: convop.conv_transpose1d(_w(1, 1, 1), (1, 2), stride=2, padding=2),
        ValueError,
        r"padding=2 is too large .* would have output size -1",
    ),
    # input_shape
    ConstructorError(
        "conv2d-input-shape-too-short",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8)),
        ValueError,
        r"input_shape must have 3 entries \(C, \*spatial\) .* got input_shape=\(1, 8\)",
    ),
    ConstructorError(
        "conv1d-input-shape-too-long",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 8, 8)),
        ValueError,
        r"input_shape must have 2 entries .* got input_shape=\(1, 8, 8\)",
    ),
    ConstructorError(
        "conv2d-input-shape-zero-size",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 0, 8)),
        ValueError,
        r"input_shape must be >= 1 in every dimension, got input_shape=\(1, 0, 8\)",
    ),
    ConstructorError(
        "conv_transpose2d-input-shape-zero-channels",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (0, 4, 4)),
        ValueError,
        r"input_shape must be >= 1 in every dimension, got input_shape=\(0, 4, 4\)",
    ),
    ConstructorError(
        "conv1d-input-shape-int",
        lambda: convop.conv1d(_w(1, 1, 3), 5),
        TypeError,
        r"input_shape must be a tuple \(C, \*spatial\), got 5\b",
    ),
    ConstructorError(
        "conv1d-input-shape-string",
        lambda: convop.conv1d(_w(1, 1, 3), "1x8"),
        TypeError,
        r"input_shape must be a tuple \(C, \*spatial\), got '1x8'",
    ),
    ConstructorError(
        "conv2d-input-shape-float-entry",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8.0, 8)),
        TypeError,
        r"input_shape must contain only ints, got input_shape=\(1, 8\.0, 8\)",
    ),
    # weight shape
    ConstructorError(
        "conv2d-weight-3d",
        lambda: convop.conv2d(_w(4, 3, 3), (3, 8, 8)),
        ValueError,
        r"weight must have 4 dimensions \(C_out, C_in/groups, \*kernel\) for a 2-d "
        r"convolution, got weight of shape \(4, 3, 3\)",
    ),
    ConstructorError(
        "conv_transpose3d-weight-4d",
        lambda: convop.conv_transpose3d(_w(2, 2, 3, 3), (2, 4, 4, 4)),
        ValueError,
        r"weight must have 5 dimensions \(C_in, C_out/groups, \*kernel\) for a 3-d "
        r"convolution, got weight of shape \(2, 2, 3, 3\)",
    ),
    ConstructorError(
        "conv2d-weight-zero-in-channels",
        lambda: convop.conv2d(_w(4, 0, 3, 3), (3, 8, 8)),
        ValueError,
        r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(4, 0, 3, 3\)",
    ),
    ConstructorError(
        "conv1d-weight-zero-kernel",
        lambda: convop.conv1d(_w(1, 1, 0), (1, 8)),
        ValueError,
        r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(1, 1, 0\)",
    ),
    ConstructorError(
        "conv_transpose2d-weight-zero-out-channels",
        lambda: convop.conv_transpose2d(_w(1, 0, 3, 3), (1, 8, 8)),
        ValueError,
        r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(1, 0, 3, 3\)",
    ),
    # tuple lengths
    ConstructorError(
        "conv2d-stride-length-3",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), stride=(1, 2, 3)),
        ValueError,
        r"stride must be an int or a tuple of 2 ints, got stride=\(1, 2, 3\) of length 3",
    ),
    ConstructorError(
        "conv2d-padding-length-1",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding=(1,)),
        ValueError,
        r"padding must be an int or a tuple of 2 ints, got padding=\(1,\) of length 1",
    ),
    ConstructorError(
        "conv3d-dilation-length-2",
        lambda: convop.conv3d(_w(1, 1, 1, 1, 1), (1, 4, 4, 4), dilation=(1, 1)),
        ValueError,
        r"dilation must be an int or a tuple of 3 ints, got dilation=\(1, 1\) of length 2",
    ),
    ConstructorError(
        "conv_transpose2d-output-padding-length-3",
        lambda: convop.conv_transpose2d(
            _w(1, 1, 3, 3), (1, 4, 4), stride=2, output_padding=(1, 1, 1)
        ),
        ValueError,
        r"output_padding must be an int or a tuple of 2 ints, got output_padding=\(1, 1, 1\)",
    ),
    # output_padding
    ConstructorError(
        "conv_transpose2d-output-padding-equals-stride",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (1, 4, 4), stride=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than either stride or dilation, got "
        r"output_padding=\(2, 2\), stride=\(2, 2\), dilation=\(1, 1\)",
    ),
    ConstructorError(
        "conv_transpose1d-output-padding-equals-dilation",
        lambda: convop.conv_transpose1d(_w(1, 1, 3), (1, 4), dilation=2, output_padding=2),
        ValueError,
        r"output_padding must be smaller than either stride or dilation, got "
        r"output_padding=\(2,\), stride=\(1,\), dilation=\(2,\)",
    ),
    ConstructorError(
        "conv_transpose3d-output-padding-one-dim",
        lambda: convop.conv_transpose3d(
            _w(1, 1, 2, 2, 2), (1, 3, 3, 3), stride=(2, 1, 2), output_padding=(1, 1, 0)
        ),
        ValueError,
        r"output_padding must be smaller .* got output_padding=\(1, 1, 0\), "
        r"stride=\(2, 1, 2\)",
    ),
    ConstructorError(
        "conv_transpose2d-output-padding-negative",
        lambda: convop.conv_transpose2d(_w(1, 1, 3, 3), (1, 4, 4), output_padding=-1),
        ValueError,
        r"output_padding must be >= 0 in every dimension, got output_padding=-1",
    ),
    # floats and bools where ints are required
    ConstructorError(
        "conv2d-stride-float",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), stride=1.0),
        TypeError,
        r"stride must be an int or a tuple of 2 ints, got 1\.0 of type float",
    ),
    ConstructorError(
        "conv2d-stride-tuple-with-float",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), stride=(1, 2.0)),
        TypeError,
        r"stride must contain only ints, got stride=\(1, 2\.0\)",
    ),
    ConstructorError(
        "conv2d-padding-float",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding=1.5),
        TypeError,
        r"padding must be an int or a tuple of 2 ints, got 1\.5 of type float",
    ),
    ConstructorError(
        "conv2d-groups-float",
        lambda: convop.conv2d(_w(2, 1, 3, 3), (2, 8, 8), groups=2.0),
        TypeError,
        r"groups must be an int, got 2\.0 of type float",
    ),
    ConstructorError(
        "conv_transpose1d-dilation-float",
        lambda: convop.conv_transpose1d(_w(1, 1, 3), (1, 8), dilation=2.0),
        TypeError,
        r"dilation must be an int or a tuple of 1 ints, got 2\.0 of type float",
    ),
    ConstructorError(
        "conv_transpose1d-output-padding-float",
        lambda: convop.conv_transpose1d(_w(1, 1, 3), (1, 8), stride=2, output_padding=1.0),
        TypeError,
        r"output_padding must be an int or a tuple of 1 ints, got 1\.0 of type float",
    ),
    ConstructorError(
        "conv2d-stride-bool",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), stride=True),
        TypeError,
        r"stride must be an int or a tuple of 2 ints, got True of type bool",
    ),
    ConstructorError(
        "conv2d-padding-tuple-with-bool",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding=(True, 0)),
        TypeError,
        r"padding must contain only ints, got padding=\(True, 0\)",
    ),
    ConstructorError(
        "conv1d-groups-bool",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 8), groups=True),
        TypeError,
        r"groups must be an int, got True of type bool",
    ),
    ConstructorError(
        "conv3d-padding-none",
        lambda: convop.conv3d(_w(1, 1, 1, 1, 1), (1, 4, 4, 4), padding=None),
        TypeError,
        r"padding must be an int or a tuple of 3 ints, got None of type NoneType",
    ),
    # sizes torch could never index (int64): refused when built, not at the first product
    ConstructorError(
        "conv1d-stride-beyond-int64",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 8), stride=2**63),
        ValueError,
        r"stride=\(9223372036854775808,\) is too large: torch indexes with int64",
    ),
    ConstructorError(
        "conv2d-padding-overflows-int64",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding=2**62),
        ValueError,
        r"the padded input size 9223372036854775816 in spatial dimension 0 is too large",
    ),
    ConstructorError(
        "conv1d-dilation-overflows-int64",
        lambda: convop.conv1d(_w(1, 1, 3), (1, 8), dilation=2**62),
        ValueError,
        r"the dilated kernel span 9223372036854775809 in spatial dimension 0 is too large",
    ),
    ConstructorError(
        "conv2d-output-beyond-int64-elements",
        lambda: convop.conv2d(_w(1, 1, 3, 3), (1, 8, 8), padding=2**40),
        ValueError,
        r"the output shape \(1, 2199023255558, 2199023255558\) has .* elements, too many",
    ),
    ConstructorError(
        "conv_transpose1d-stride-overflows-int64",
        lambda: convop.conv_transpose1d(_w(1, 1, 3), (1, 8), stride=2**61),
        ValueError,
        r"the upsampled input size 16140901064495857667 in spatial dimension 0 is too large",
    ),
]


@pytest.mark.parametrize("case", CONSTRUCTOR_ERRORS, ids=lambda c: c.id)
def test_invalid_configuration_rejected_by_constructor(case: ConstructorError) -> None:
    with pytest.raises(case.error, match=case.match):
        case.build()


# ---------------------------------------------------------------------- invalid: from_torch
class GeometryError(NamedTuple):
    id: str
    weight_shape: object
    input_shape: object
    options: Mapping[str, object]
    error: type[Exception]
    match: str


GEOMETRY_ERRORS = [
    GeometryError(
        "channel-mismatch",
        (4, 3, 3, 3),
        (2, 8, 8),
        {},
        ValueError,
        r"input_shape\[0\]=2 does not match the weight: expected in_channels = "
        r"weight\.shape\[1\] \* groups = 3",
    ),
    GeometryError(
        "transposed-channel-mismatch",
        (4, 3, 3, 3),
        (3, 8, 8),
        dict(transposed=True),
        ValueError,
        r"input_shape\[0\]=3 does not match .* weight\.shape\[0\] = 4",
    ),
    GeometryError(
        "groups-not-dividing-out-channels",
        (3, 2, 3),
        (4, 8),
        dict(groups=2),
        ValueError,
        r"groups=2 must divide out_channels=3",
    ),
    GeometryError(
        "transposed-groups-not-dividing-in-channels",
        (3, 2, 3),
        (3, 8),
        dict(groups=2, transposed=True),
        ValueError,
        r"groups=2 must divide in_channels=3",
    ),
    GeometryError(
        "groups-0",
        (1, 1, 3),
        (1, 8),
        dict(groups=0),
        ValueError,
        r"groups must be >= 1, got groups=0",
    ),
    GeometryError(
        "stride-0",
        (1, 1, 3),
        (1, 8),
        dict(stride=0),
        ValueError,
        r"stride must be >= 1 in every dimension, got stride=0",
    ),
    GeometryError(
        "dilation-negative",
        (1, 1, 3, 3),
        (1, 8, 8),
        dict(dilation=(1, -1)),
        ValueError,
        r"dilation must be >= 1 in every dimension, got dilation=\(1, -1\)",
    ),
    GeometryError(
        "padding-negative",
        (1, 1, 3),
        (1, 8),
        dict(padding=-2),
        ValueError,
        r"padding must be >= 0 in every dimension, got padding=-2",
    ),
    GeometryError(
        "same-with-stride",
        (1, 1, 3),
        (1, 8),
        dict(padding="same", stride=2),
        ValueError,
        r"padding='same' requires stride=1, got stride=\(2,\)",
    ),
    GeometryError(
        "padding-full",
        (1, 1, 3),
        (1, 8),
        dict(padding="full"),
        ValueError,
        r"padding must be one of 'same', 'valid', got padding='full'",
    ),
    GeometryError(
        "padding-mode-mirror",
        (1, 1, 3),
        (1, 8),
        dict(padding_mode="mirror"),
        ValueError,
        r"padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', "
        r"got padding_mode='mirror'",
    ),
    GeometryError(
        "transposed-padding-same",
        (1, 1, 3),
        (1, 8),
        dict(padding="same", transposed=True),
        ValueError,
        r"padding must be an int or a tuple of 1 ints for a transposed convolution, "
        r"got padding='same'",
    ),
    GeometryError(
        "transposed-padding-mode-reflect",
        (1, 1, 3),
        (1, 8),
        dict(padding_mode="reflect", transposed=True),
        ValueError,
        r"padding_mode must be 'zeros' for a transposed convolution, got padding_mode='reflect'",
    ),
    GeometryError(
        "reflect-padding-equals-size",
        (1, 1, 3),
        (1, 4),
        dict(padding=4, padding_mode="reflect"),
        ValueError,
        r"padding_mode='reflect' needs padding < input size .* got padding \(4, 4\) for "
        r"input size 4",
    ),
    GeometryError(
        "circular-padding-exceeds-size",
        (1, 1, 3, 3),
        (1, 8, 3),
        dict(padding=(1, 4), padding_mode="circular"),
        ValueError,
        r"padding_mode='circular' needs padding <= input size .* got padding \(4, 4\) for "
        r"input size 3 in spatial dimension 1",
    ),
    GeometryError(
        "kernel-larger-than-padded-input",
        (1, 1, 4),
        (1, 1),
        dict(padding=1),
        ValueError,
        r"kernel_size=\(4,\) with dilation=\(1,\) spans 4 samples .* padded input size 3",
    ),
    GeometryError(
        "transposed-output-size-below-1",
        (1, 1, 1),
        (1, 1),
        dict(padding=1, transposed=True),
        ValueError,
        r"padding=1 is too large in spatial dimension 0: .* would have output size -1",
    ),
    GeometryError(
        "input-shape-wrong-length",
        (1, 1, 3, 3, 3),
        (1, 8, 8),
        {},
        ValueError,
        r"input_shape must have 4 entries .* got input_shape=\(1, 8, 8\)",
    ),
    GeometryError(
        "input-shape-zero-size",
        (1, 1, 3),
        (1, 0),
        {},
        ValueError,
        r"input_shape must be >= 1 in every dimension, got input_shape=\(1, 0\)",
    ),
    GeometryError(
        "input-shape-int",
        (1, 1, 3),
        8,
        {},
        TypeError,
        r"input_shape must be a tuple \(C, \*spatial\), got 8\b",
    ),
    GeometryError(
        "input-shape-string",
        (1, 1, 3),
        "18",
        {},
        TypeError,
        r"input_shape must be a tuple \(C, \*spatial\), got '18'",
    ),
    GeometryError(
        "input-shape-float-entry",
        (1, 1, 3),
        (1, 8.5),
        {},
        TypeError,
        r"input_shape must contain only ints, got input_shape=\(1, 8\.5\)",
    ),
    GeometryError(
        "weight-shape-2d",
        (4, 3),
        (3,),
        {},
        ValueError,
        r"weight must have 3, 4 or 5 dimensions .* got weight of shape \(4, 3\)",
    ),
    GeometryError(
        "weight-shape-6d",
        (1, 1, 2, 2, 2, 2),
        (1, 4, 4, 4, 4),
        {},
        ValueError,
        r"weight must have 3, 4 or 5 dimensions .* got weight of shape \(1, 1, 2, 2, 2, 2\)",
    ),
    GeometryError(
        "weight-shape-zero-kernel",
        (1, 1, 0, 3),
        (1, 8, 8),
        {},
        ValueError,
        r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(1, 1, 0, 3\)",
    ),
    GeometryError(
        "weight-shape-float-entry",
        (1, 1, 3.0),
        (1, 8),
        {},
        TypeError,
        r"weight\.shape must contain only ints, got weight\.shape=\(1, 1, 3\.0\)",
    ),
    GeometryError(
        "stride-wrong-length",
        (1, 1, 3, 3),
        (1, 8, 8),
        dict(stride=(1, 2, 3)),
        ValueError,
        r"stride must be an int or a tuple of 2 ints, got stride=\(1, 2, 3\) of length 3",
    ),
    GeometryError(
        "output-padding-not-smaller-than-stride-or-dilation",
        (1, 1, 3, 3),
        (1, 4, 4),
        dict(stride=(2, 1), dilation=(1, 2), output_padding=(2, 1), transposed=True),
        ValueError,
        r"output_padding must be smaller than either stride or dilation, got "
        r"output_padding=\(2, 1\), stride=\(2, 1\), dilation=\(1, 2\)",
    ),
    GeometryError(
        "output-padding-for-plain-conv",
        (1, 1, 3, 3),
        (1, 8, 8),
        dict(stride=2, output_padding=1),
        ValueError,
        r"output_padding is only for transposed convolutions, got output_padding=\(1, 1\)",
    ),
    GeometryError(
        "stride-float",
        (1, 1, 3),
        (1, 8),
        dict(stride=1.0),
        TypeError,
        r"stride must be an int or a tuple of 1 ints, got 1\.0 of type float",
    ),
    GeometryError(
        "padding-float",
        (1, 1, 3),
        (1, 8),
        dict(padding=1.5),
        TypeError,
        r"padding must be an int or a tuple of 1 ints, got 1\.5 of type float",
    ),
    GeometryError(
        "groups-float",
        (2, 1, 3),
        (2, 8),
        dict(groups=2.0),
        TypeError,
        r"groups must be an int, got 2\.0 of type float",
    ),
    GeometryError(
        "stride-bool",
        (1, 1, 3),
        (1, 8),
        dict(stride=True),
        TypeError,
        r"stride must be an int or a tuple of 1 ints, got True of type bool",
    ),
    GeometryError(
        "transposed-not-bool",
        (1, 1, 3),
        (1, 8),
        dict(transposed=1),
        TypeError,
        r"transposed must be a bool, got 1",
    ),
]


@pytest.mark.parametrize("case", GEOMETRY_ERRORS, ids=lambda c: c.id)
def test_invalid_configuration_rejected_by_from_torch(case: GeometryError) -> None:
    with pytest.raises(case.error, match=case.match):
        ConvGeometry.from_torch(case.weight_shape, case.input_shape, **case.options)


# ---------------------------------------------------------------------- invalid: dataclass
class FieldsError(NamedTuple):
    id: str
    fields: Mapping[str, object]
    error: type[Exception]
    match: str


_VALID_FIELDS = dict(
    in_channels=2,
    out_channels=2,
    kernel_size=(3,),
    input_size=(8,),
    stride=(1,),
    padding=((1, 1),),
    dilation=(1,),
)

FIELDS_ERRORS = [
    FieldsError(
        "output-padding-for-plain-conv",
        dict(output_padding=(1,)),
        ValueError,
        r"output_padding is only for transposed convolutions, got output_padding=\(1,\)",
    ),
    FieldsError(
        "groups-not-dividing-in-channels",
        dict(in_channels=3, out_channels=4, groups=2),
        ValueError,
        r"groups=2 must divide in_channels=3",
    ),
    FieldsError(
        "transposed-asymmetric-padding",
        dict(padding=((1, 2),), transposed=True),
        ValueError,
        r"a transposed convolution pads symmetrically, got padding=\(\(1, 2\),\)",
    ),
    FieldsError(
        "padding-not-pairs",
        dict(padding=(1,)),
        ValueError,
        r"padding must hold one \(before, after\) pair per dimension \(1\), got padding=\(1,\)",
    ),
    FieldsError(
        "padding-pair-negative",
        dict(padding=((0, -1),)),
        ValueError,
        r"padding must be >= 0 in every dimension, got padding=\(0, -1\)",
    ),
    FieldsError(
        "kernel-size-4d",
        dict(kernel_size=(1, 1, 1, 1)),
        ValueError,
        r"kernel_size must have 1, 2 or 3 entries .* got kernel_size=\(1, 1, 1, 1\)",
    ),
    FieldsError(
        "in-channels-0",
        dict(in_channels=0),
        ValueError,
        r"in_channels must be >= 1, got in_channels=0",
    ),
    FieldsError(
        "padding-mode-unknown",
        dict(padding_mode="mirror"),
        ValueError,
        r"padding_mode must be one of .* got padding_mode='mirror'",
    ),
    FieldsError(
        "transposed-padding-mode-circular",
        dict(padding_mode="circular", transposed=True),
        ValueError,
        r"padding_mode must be 'zeros' for a transposed convolution, "
        r"got padding_mode='circular'",
    ),
]


@pytest.mark.parametrize("case", FIELDS_ERRORS, ids=lambda c: c.id)
def test_invalid_fields_rejected_by_dataclass(case: FieldsError) -> None:
    with pytest.raises(case.error, match=case.match):
        ConvGeometry(**{**_VALID_FIELDS, **case.fields})


def test_direct_construction_normalises_fields():
    geometry = ConvGeometry(
        in_channels=np.int64(2),
        out_channels=4,
        kernel_size=(3, 3),
        input_size=(8, np.int32(9)),
        stride=2,
        padding=((1, 1), (0, 2)),
        dilation=1,
    )
    assert geometry.stride == (2, 2)
    assert geometry.dilation == (1, 1)
    assert geometry.output_padding == (0, 0)
    assert type(geometry.in_channels) is int
    assert type(geometry.input_size[1]) is int
    assert geometry.output_shape == (4, 4, 5)  # (9 + 0 + 2 - 3) // 2 + 1
