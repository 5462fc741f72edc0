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


# fmt: off
PADDING_CASES = [
    PaddingCase("int", (1, 1, 3), (1, 8), dict(padding=2), ((2, 2),)),
    PaddingCase("tuple", (1, 1, 3, 3), (1, 8, 8), dict(padding=(0, 3)), ((0, 0), (3, 3))),
    PaddingCase("valid", (1, 1, 3, 3), (1, 8, 8), dict(padding="valid"), ((0, 0), (0, 0))),
    PaddingCase("same-odd-k3", (1, 1, 3), (1, 8), dict(padding="same"), ((1, 1),)),
    PaddingCase("same-even-k4-extra-after", (1, 1, 4), (1, 10), dict(padding="same"), ((1, 2),)),
    PaddingCase("same-even-k2", (1, 1, 2), (1, 10), dict(padding="same"), ((0, 1),)),
    PaddingCase("same-k4-dilation2-even-total", (1, 1, 4), (1, 10),
                dict(padding="same", dilation=2), ((3, 3),)),
    PaddingCase("same-k2-dilation3-odd-total", (1, 1, 2), (1, 10),
                dict(padding="same", dilation=3), ((1, 2),)),
    PaddingCase("same-2d-mixed", (1, 1, 4, 3), (1, 9, 9), dict(padding="same"), ((1, 2), (1, 1))),
    PaddingCase("same-3d-mixed-dilation", (1, 1, 2, 4, 3), (1, 6, 6, 6),
                dict(padding="same", dilation=(1, 1, 2)), ((0, 1), (1, 2), (2, 2))),
    PaddingCase("transposed-symmetric", (1, 1, 3, 3), (1, 4, 4),
                dict(padding=(1, 2), transposed=True), ((1, 1), (2, 2))),
]
# fmt: on


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


# ---------------------------------------------------------------------- invalid configurations
class Invalid(NamedTuple):
    """An invalid convolution and the error it must raise through every entry point it fits.

    ``weight_shape``, ``input_shape`` and ``options`` are ``ConvGeometry.from_torch``'s
    arguments. An id that starts with a constructor's name (``conv2d-...``) builds that
    constructor's operator as well, and ``transposed`` comes from the name. A case that only
    ConvGeometry's fields can express has no shapes: its options replace ``_VALID_FIELDS``.
    """

    id: str
    weight_shape: object
    input_shape: object
    options: Mapping[str, object]
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

# fmt: off
INVALID = [
    # channels and groups
    Invalid("conv2d-channel-mismatch", (4, 3, 3, 3), (2, 8, 8), {}, ValueError,
            r"input_shape\[0\]=2 does not match the weight: expected in_channels = "
            r"weight\.shape\[1\] \* groups = 3"),
    Invalid("conv2d-channel-mismatch-with-groups", (4, 2, 3, 3), (3, 8, 8), dict(groups=2),
            ValueError, r"input_shape\[0\]=3 does not match .* = 4 .* groups=2"),
    Invalid("conv_transpose2d-channel-mismatch", (4, 2, 3, 3), (3, 5, 5), {}, ValueError,
            r"input_shape\[0\]=3 does not match the weight: expected in_channels = "
            r"weight\.shape\[0\] = 4"),
    Invalid("conv2d-groups-not-dividing-out-channels", (3, 2, 3, 3), (4, 8, 8), dict(groups=2),
            ValueError, r"groups=2 must divide out_channels=3"),
    Invalid("conv1d-groups-not-dividing-out-channels", (5, 1, 3), (3, 8), dict(groups=3),
            ValueError, r"groups=3 must divide out_channels=5"),
    Invalid("conv_transpose2d-groups-not-dividing-in-channels", (3, 2, 3, 3), (3, 5, 5),
            dict(groups=2), ValueError, r"groups=2 must divide in_channels=3"),
    Invalid("conv2d-groups-0", (1, 1, 3, 3), (1, 8, 8), dict(groups=0), ValueError,
            r"groups must be >= 1, got groups=0"),
    Invalid("conv_transpose1d-groups-negative", (2, 1, 3), (2, 8), dict(groups=-1), ValueError,
            r"groups must be >= 1, got groups=-1"),
    # stride and dilation
    Invalid("conv2d-stride-0", (1, 1, 3, 3), (1, 8, 8), dict(stride=0), ValueError,
            r"stride must be >= 1 in every dimension, got stride=0"),
    Invalid("conv2d-stride-negative-entry", (1, 1, 3, 3), (1, 8, 8), dict(stride=(1, -2)),
            ValueError, r"stride must be >= 1 in every dimension, got stride=\(1, -2\)"),
    Invalid("conv_transpose2d-stride-0", (1, 1, 3, 3), (1, 8, 8), dict(stride=(0, 1)), ValueError,
            r"stride must be >= 1 in every dimension, got stride=\(0, 1\)"),
    Invalid("conv3d-dilation-0", (1, 1, 2, 2, 2), (1, 4, 4, 4), dict(dilation=0), ValueError,
            r"dilation must be >= 1 in every dimension, got dilation=0"),
    Invalid("conv_transpose1d-dilation-negative", (1, 1, 3), (1, 8), dict(dilation=-1), ValueError,
            r"dilation must be >= 1 in every dimension, got dilation=-1"),
    # padding
    Invalid("conv2d-padding-negative", (1, 1, 3, 3), (1, 8, 8), dict(padding=-1), ValueError,
            r"padding must be >= 0 in every dimension, got padding=-1"),
    Invalid("conv1d-padding-negative-reflect", (1, 1, 3), (1, 8),
            dict(padding=-1, padding_mode="reflect"), ValueError,
            r"padding must be >= 0 in every dimension, got padding=-1"),
    Invalid("conv_transpose2d-padding-negative", (1, 1, 3, 3), (1, 8, 8), dict(padding=(0, -1)),
            ValueError, r"padding must be >= 0 in every dimension, got padding=\(0, -1\)"),
    Invalid("conv2d-same-stride2", (1, 1, 3, 3), (1, 8, 8), dict(padding="same", stride=2),
            ValueError, r"padding='same' requires stride=1, got stride=\(2, 2\)"),
    Invalid("conv3d-same-stride-in-one-dim", (1, 1, 3, 3, 3), (1, 8, 8, 8),
            dict(padding="same", stride=(1, 1, 2)), ValueError,
            r"padding='same' requires stride=1, got stride=\(1, 1, 2\)"),
    Invalid("conv2d-padding-full", (1, 1, 3, 3), (1, 8, 8), dict(padding="full"), ValueError,
            r"padding must be one of 'same', 'valid', got padding='full'"),
    Invalid("conv2d-padding-mode-mirror", (1, 1, 3, 3), (1, 8, 8), dict(padding_mode="mirror"),
            ValueError,
            r"padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', "
            r"got padding_mode='mirror'"),
    Invalid("transposed-padding-mode-reflect", (1, 1, 3), (1, 8),
            dict(padding_mode="reflect", transposed=True), ValueError,
            r"padding_mode must be 'zeros' for a transposed convolution, "
            r"got padding_mode='reflect'"),
    Invalid("conv_transpose2d-padding-same", (1, 1, 3, 3), (1, 8, 8), dict(padding="same"),
            ValueError,
            r"padding must be an int or a tuple of 2 ints for a transposed convolution, "
            r"got padding='same'"),
    Invalid("conv_transpose1d-padding-valid", (1, 1, 3), (1, 8), dict(padding="valid"), ValueError,
            r"padding must be .* for a transposed convolution, got padding='valid'"),
    Invalid("conv2d-reflect-padding-equals-size", (1, 1, 3, 3), (1, 3, 8),
            dict(padding=3, padding_mode="reflect"), ValueError,
            r"padding_mode='reflect' needs padding < input size .* got padding \(3, 3\) for "
            r"input size 3 in spatial dimension 0"),
    Invalid("conv1d-reflect-same-padding-too-large", (1, 1, 8), (1, 3),
            dict(padding="same", padding_mode="reflect"), ValueError,
            r"padding_mode='reflect' needs padding < input size .* got padding \(3, 4\) for "
            r"input size 3"),
    Invalid("conv3d-reflect-padding-too-large-last-dim", (1, 1, 1, 1, 1), (1, 5, 5, 2),
            dict(padding=(1, 1, 2), padding_mode="reflect"), ValueError,
            r"padding_mode='reflect' .* got padding \(2, 2\) for input size 2 in spatial "
            r"dimension 2"),
    Invalid("conv1d-circular-padding-exceeds-size", (1, 1, 3), (1, 2),
            dict(padding=3, padding_mode="circular"), ValueError,
            r"padding_mode='circular' needs padding <= input size .* got padding \(3, 3\) for "
            r"input size 2 in spatial dimension 0"),
    # kernel and output size
    Invalid("conv2d-kernel-larger-than-input", (1, 1, 5, 5), (1, 4, 8), {}, ValueError,
            r"kernel_size=\(5, 5\) with dilation=\(1, 1\) spans 5 samples in spatial dimension 0, "
            r"more than the padded input size 4"),
    Invalid("conv1d-dilated-kernel-larger-than-input", (1, 1, 3), (1, 6), dict(dilation=3),
            ValueError,
            r"kernel_size=\(3,\) with dilation=\(3,\) spans 7 samples .* padded input size 6"),
    Invalid("conv2d-kernel-larger-than-padded-input", (1, 1, 3, 6), (1, 8, 2),
            dict(padding=(0, 1)), ValueError,
            r"kernel_size=\(3, 6\) .* spans 6 samples in spatial dimension 1, more than the "
            r"padded input size 4"),
    Invalid("conv_transpose2d-output-size-below-1", (1, 1, 3, 3), (1, 1, 1), dict(padding=2),
            ValueError,
            r"padding=2 is too large in spatial dimension 0: the transposed convolution of "
            r"input size 1 would have output size -1"),
    Invalid("conv_transpose1d-output-size-0", (1, 1, 1), (1, 2), dict(stride=2, padding=2),
            ValueError, r"padding=2 is too large .* would have output size -1"),
    # input_shape
    Invalid("conv2d-input-shape-too-short", (1, 1, 3, 3), (1, 8), {}, ValueError,
            r"input_shape must have 3 entries \(C, \*spatial\) .* got input_shape=\(1, 8\)"),
    Invalid("conv1d-input-shape-too-long", (1, 1, 3), (1, 8, 8), {}, ValueError,
            r"input_shape must have 2 entries .* got input_shape=\(1, 8, 8\)"),
    Invalid("conv2d-input-shape-zero-size", (1, 1, 3, 3), (1, 0, 8), {}, ValueError,
            r"input_shape must be >= 1 in every dimension, got input_shape=\(1, 0, 8\)"),
    Invalid("conv_transpose2d-input-shape-zero-channels", (1, 1, 3, 3), (0, 4, 4), {}, ValueError,
            r"input_shape must be >= 1 in every dimension, got input_shape=\(0, 4, 4\)"),
    Invalid("conv1d-input-shape-int", (1, 1, 3), 5, {}, TypeError,
            r"input_shape must be a tuple \(C, \*spatial\), got 5\b"),
    Invalid("conv1d-input-shape-string", (1, 1, 3), "1x8", {}, TypeError,
            r"input_shape must be a tuple \(C, \*spatial\), got '1x8'"),
    Invalid("conv2d-input-shape-float-entry", (1, 1, 3, 3), (1, 8.0, 8), {}, TypeError,
            r"input_shape must contain only ints, got input_shape=\(1, 8\.0, 8\)"),
    # weight shape
    Invalid("conv2d-weight-3d", (4, 3, 3), (3, 8, 8), {}, ValueError,
            r"weight must have 4 dimensions \(C_out, C_in/groups, \*kernel\) for a 2-d "
            r"convolution, got weight of shape \(4, 3, 3\)"),
    Invalid("conv_transpose3d-weight-4d", (2, 2, 3, 3), (2, 4, 4, 4), {}, ValueError,
            r"weight must have 5 dimensions \(C_in, C_out/groups, \*kernel\) for a 3-d "
            r"convolution, got weight of shape \(2, 2, 3, 3\)"),
    Invalid("conv2d-weight-zero-in-channels", (4, 0, 3, 3), (3, 8, 8), {}, ValueError,
            r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(4, 0, 3, 3\)"),
    Invalid("conv1d-weight-zero-kernel", (1, 1, 0), (1, 8), {}, ValueError,
            r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(1, 1, 0\)"),
    Invalid("conv_transpose2d-weight-zero-out-channels", (1, 0, 3, 3), (1, 8, 8), {}, ValueError,
            r"weight\.shape must be >= 1 in every dimension, got weight\.shape=\(1, 0, 3, 3\)"),
    Invalid("weight-shape-2d", (4, 3), (3,), {}, ValueError,
            r"weight must have 3, 4 or 5 dimensions .* got weight of shape \(4, 3\)"),
    Invalid("weight-shape-6d", (1, 1, 2, 2, 2, 2), (1, 4, 4, 4, 4), {}, ValueError,
            r"weight must have 3, 4 or 5 dimensions .* got weight of shape \(1, 1, 2, 2, 2, 2\)"),
    Invalid("weight-shape-float-entry", (1, 1, 3.0), (1, 8), {}, TypeError,
            r"weight\.shape must contain only ints, got weight\.shape=\(1, 1, 3\.0\)"),
    # tuple lengths
    Invalid("conv2d-stride-length-3", (1, 1, 3, 3), (1, 8, 8), dict(stride=(1, 2, 3)), ValueError,
            r"stride must be an int or a tuple of 2 ints, got stride=\(1, 2, 3\) of length 3"),
    Invalid("conv2d-padding-length-1", (1, 1, 3, 3), (1, 8, 8), dict(padding=(1,)), ValueError,
            r"padding must be an int or a tuple of 2 ints, got padding=\(1,\) of length 1"),
    Invalid("conv3d-dilation-length-2", (1, 1, 1, 1, 1), (1, 4, 4, 4), dict(dilation=(1, 1)),
            ValueError,
            r"dilation must be an int or a tuple of 3 ints, got dilation=\(1, 1\) of length 2"),
    Invalid("conv_transpose2d-output-padding-length-3", (1, 1, 3, 3), (1, 4, 4),
            dict(stride=2, output_padding=(1, 1, 1)), ValueError,
            r"output_padding must be an int or a tuple of 2 ints, got output_padding=\(1, 1, 1\)"),
    # output_padding
    Invalid("conv_transpose2d-output-padding-equals-stride", (1, 1, 3, 3), (1, 4, 4),
            dict(stride=2, output_padding=2), ValueError,
            r"output_padding must be smaller than either stride or dilation, got "
            r"output_padding=\(2, 2\), stride=\(2, 2\), dilation=\(1, 1\)"),
    Invalid("conv_transpose1d-output-padding-equals-dilation", (1, 1, 3), (1, 4),
            dict(dilation=2, output_padding=2), ValueError,
            r"output_padding must be smaller than either stride or dilation, got "
            r"output_padding=\(2,\), stride=\(1,\), dilation=\(2,\)"),
    Invalid("conv_transpose3d-output-padding-one-dim", (1, 1, 2, 2, 2), (1, 3, 3, 3),
            dict(stride=(2, 1, 2), output_padding=(1, 1, 0)), ValueError,
            r"output_padding must be smaller .* got output_padding=\(1, 1, 0\), "
            r"stride=\(2, 1, 2\)"),
    Invalid("conv_transpose2d-output-padding-negative", (1, 1, 3, 3), (1, 4, 4),
            dict(output_padding=-1), ValueError,
            r"output_padding must be >= 0 in every dimension, got output_padding=-1"),
    Invalid("conv_transpose2d-output-padding-not-smaller-than-stride-or-dilation", (1, 1, 3, 3),
            (1, 4, 4), dict(stride=(2, 1), dilation=(1, 2), output_padding=(2, 1)), ValueError,
            r"output_padding must be smaller than either stride or dilation, got "
            r"output_padding=\(2, 1\), stride=\(2, 1\), dilation=\(1, 2\)"),
    Invalid("output-padding-for-plain-conv", (1, 1, 3, 3), (1, 8, 8),
            dict(stride=2, output_padding=1), ValueError,
            r"output_padding is only for transposed convolutions, got output_padding=\(1, 1\)"),
    # floats and bools where ints are required
    Invalid("conv2d-stride-float", (1, 1, 3, 3), (1, 8, 8), dict(stride=1.0), TypeError,
            r"stride must be an int or a tuple of 2 ints, got 1\.0 of type float"),
    Invalid("conv2d-stride-tuple-with-float", (1, 1, 3, 3), (1, 8, 8), dict(stride=(1, 2.0)),
            TypeError, r"stride must contain only ints, got stride=\(1, 2\.0\)"),
    Invalid("conv2d-padding-float", (1, 1, 3, 3), (1, 8, 8), dict(padding=1.5), TypeError,
            r"padding must be an int or a tuple of 2 ints, got 1\.5 of type float"),
    Invalid("conv2d-groups-float", (2, 1, 3, 3), (2, 8, 8), dict(groups=2.0), TypeError,
            r"groups must be an int, got 2\.0 of type float"),
    Invalid("conv_transpose1d-dilation-float", (1, 1, 3), (1, 8), dict(dilation=2.0), TypeError,
            r"dilation must be an int or a tuple of 1 ints, got 2\.0 of type float"),
    Invalid("conv_transpose1d-output-padding-float", (1, 1, 3), (1, 8),
            dict(stride=2, output_padding=1.0), TypeError,
            r"output_padding must be an int or a tuple of 1 ints, got 1\.0 of type float"),
    Invalid("conv2d-stride-bool", (1, 1, 3, 3), (1, 8, 8), dict(stride=True), TypeError,
            r"stride must be an int or a tuple of 2 ints, got True of type bool"),
    Invalid("conv2d-padding-tuple-with-bool", (1, 1, 3, 3), (1, 8, 8), dict(padding=(True, 0)),
            TypeError, r"padding must contain only ints, got padding=\(True, 0\)"),
    Invalid("conv1d-groups-bool", (1, 1, 3), (1, 8), dict(groups=True), TypeError,
            r"groups must be an int, got True of type bool"),
    Invalid("conv3d-padding-none", (1, 1, 1, 1, 1), (1, 4, 4, 4), dict(padding=None), TypeError,
            r"padding must be an int or a tuple of 3 ints, got None of type NoneType"),
    Invalid("transposed-not-bool", (1, 1, 3), (1, 8), dict(transposed=1), TypeError,
            r"transposed must be a bool, got 1"),
    # sizes torch could never index (int64): refused when built, not at the first product
    Invalid("conv1d-stride-beyond-int64", (1, 1, 3), (1, 8), dict(stride=2**63), ValueError,
            r"stride=\(9223372036854775808,\) is too large: torch indexes with int64"),
    Invalid("conv2d-padding-overflows-int64", (1, 1, 3, 3), (1, 8, 8), dict(padding=2**62),
            ValueError,
            r"the padded input size 9223372036854775816 in spatial dimension 0 is too large"),
    Invalid("conv1d-dilation-overflows-int64", (1, 1, 3), (1, 8), dict(dilation=2**62), ValueError,
            r"the dilated kernel span 9223372036854775809 in spatial dimension 0 is too large"),
    Invalid("conv2d-output-beyond-int64-elements", (1, 1, 3, 3), (1, 8, 8), dict(padding=2**40),
            ValueError,
            r"the output shape \(1, 2199023255558, 2199023255558\) has .* elements, too many"),
    Invalid("conv_transpose1d-stride-overflows-int64", (1, 1, 3), (1, 8), dict(stride=2**61),
            ValueError,
            r"the upsampled input size 16140901064495857667 in spatial dimension 0 is too large"),
    # what only ConvGeometry's own fields can say
    Invalid("groups-not-dividing-in-channels", None, None,
            dict(in_channels=3, out_channels=4, groups=2), ValueError,
            r"groups=2 must divide in_channels=3"),
    Invalid("transposed-asymmetric-padding", None, None, dict(padding=((1, 2),), transposed=True),
            ValueError, r"a transposed convolution pads symmetrically, got padding=\(\(1, 2\),\)"),
    Invalid("padding-not-pairs", None, None, dict(padding=(1,)), ValueError,
            r"padding must hold one \(before, after\) pair per dimension \(1\), "
            r"got padding=\(1,\)"),
    Invalid("padding-pair-negative", None, None, dict(padding=((0, -1),)), ValueError,
            r"padding must be >= 0 in every dimension, got padding=\(0, -1\)"),
    Invalid("kernel-size-4d", None, None, dict(kernel_size=(1, 1, 1, 1)), ValueError,
            r"kernel_size must have 1, 2 or 3 entries .* got kernel_size=\(1, 1, 1, 1\)"),
    Invalid("in-channels-0", None, None, dict(in_channels=0), ValueError,
            r"in_channels must be >= 1, got in_channels=0"),

]
# fmt: on

#: constructor name -> (number of spatial dimensions, transposed)
CONSTRUCTORS = {f"conv{t}{n}d": (n, t != "") for t in ("", "_transpose") for n in (1, 2, 3)}


def _constructor(case: Invalid) -> str | None:
    name = case.id.split("-")[0]
    return name if name in CONSTRUCTORS else None


def _torch_options(case: Invalid) -> dict[str, object]:
    name = _constructor(case)
    return {"transposed": CONSTRUCTORS[name][1], **case.options} if name else dict(case.options)


def _via_constructor(case: Invalid) -> Callable[[], object] | None:
    name = _constructor(case)
    if name is None:
        return None
    weight = case.weight_shape
    return lambda: getattr(convop, name)(torch.zeros(weight), case.input_shape, **case.options)


def _via_from_torch(case: Invalid) -> Callable[[], object] | None:
    name = _constructor(case)
    if case.weight_shape is None:
        return None  # a case in the fields
    if name and len(case.weight_shape) != CONSTRUCTORS[name][0] + 2:
        return None  # the constructor's own check of the weight's dimensions
    options = _torch_options(case)
    return lambda: ConvGeometry.from_torch(case.weight_shape, case.input_shape, **options)


def _via_fields(case: Invalid) -> Callable[[], object] | None:
    """The case in ConvGeometry's own fields, where it can be said there.

    from_torch reads the weight and input shapes, groups and the padding argument and gives
    every other argument to the fields as it is: where those four are valid, the fields
    must refuse the case with the same error.
    """
    if case.weight_shape is None:
        fields = {**_VALID_FIELDS, **case.options}
        return lambda: ConvGeometry(**fields)
    options = _torch_options(case)
    weight, shape = case.weight_shape, case.input_shape
    groups, padding = options.pop("groups", 1), options.pop("padding", 0)
    ndim = len(weight) - 2
    pads = (padding,) * ndim if type(padding) is int else padding
    forms = (weight, shape, pads, (groups,))
    if not all(type(f) is tuple and all(type(v) is int for v in f) for f in forms):
        return None
    if ndim not in (1, 2, 3) or len(shape) != ndim + 1 or len(pads) != ndim:
        return None
    if min(*weight, *shape, groups) < 1 or min(pads) < 0:
        return None
    lead = (weight[0], weight[1] * groups)
    in_channels, out_channels = lead if options.get("transposed") else lead[::-1]
    if shape[0] != in_channels:
        return None
    fields = dict(
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=weight[2:],
        input_size=shape[1:],
        stride=options.pop("stride", 1),
        padding=tuple((p, p) for p in pads),
        dilation=options.pop("dilation", 1),
        groups=groups,
        **options,
    )
    return lambda: ConvGeometry(**fields)


ENTRY_POINTS = {
    "constructor": _via_constructor,
    "from_torch": _via_from_torch,
    "fields": _via_fields,
}


@pytest.mark.parametrize(
    ("case", "entry_point"),
    [
        pytest.param(case, name, id=f"{name}-{case.id}")
        for case in INVALID
        for name, via in ENTRY_POINTS.items()
        if via(case) is not None
    ],
)
def test_invalid_configuration_rejected(case: Invalid, entry_point: str) -> None:
    build = ENTRY_POINTS[entry_point](case)
    with pytest.raises(case.error, match=case.match):
        build()


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


def test_as_convolution_is_for_transposed_convolutions_only():
    with pytest.raises(ValueError, match="as_convolution"):
        ConvGeometry.from_torch((2, 3, 4), (3, 9)).as_convolution()
