"""Hypothesis strategies that build only valid convolutions, plus their torch oracles.

A case is drawn in dependency order (groups, channels, kernel, dilation, stride, padding,
then the smallest legal input size plus a little), so no draw is thrown away.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from hypothesis import strategies as st
from torch import nn

import convop

# Every (ndim, transposed, padding_mode) combination the library supports; tests are
# parametrized over these so that each one is hit in every run.
COMBOS = [(n, False, mode) for n in (1, 2, 3) for mode in convop.geometry.PADDING_MODES] + [
    (n, True, "zeros") for n in (1, 2, 3)
]
COMBO_IDS = [f"{'convT' if t else 'conv'}{n}d-{mode}" for n, t, mode in COMBOS]

_MODULES = {
    (1, False): nn.Conv1d,
    (2, False): nn.Conv2d,
    (3, False): nn.Conv3d,
    (1, True): nn.ConvTranspose1d,
    (2, True): nn.ConvTranspose2d,
    (3, True): nn.ConvTranspose3d,
}


class ConvCase(NamedTuple):
    """One valid convolution, in PyTorch's own argument forms."""

    ndim: int
    transposed: bool
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    input_shape: tuple[int, ...]
    options: dict[str, Any]  # stride, padding, dilation, groups, padding_mode | output_padding
    seed: int

    @property
    def weight_shape(self) -> tuple[int, ...]:
        groups = self.options["groups"]
        if self.transposed:
            return (self.in_channels, self.out_channels // groups, *self.kernel_size)
        return (self.out_channels, self.in_channels // groups, *self.kernel_size)

    @property
    def terms(self) -> int:
        """Rough number of products summed into one output (for float tolerances)."""
        channels = max(self.in_channels, self.out_channels) // self.options["groups"]
        return channels * math.prod(self.kernel_size) * 3**self.ndim

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + offset)

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        return torch.randn(self.weight_shape, dtype=dtype, generator=self.generator())

    def random(self, shape: tuple[int, ...], dtype: torch.dtype, offset: int) -> torch.Tensor:
        return torch.randn(shape, dtype=dtype, generator=self.generator(offset))

    def operator(self, weight: Any, method: str = "direct") -> convop.ConvOperator:
        build = convop.constructors.CONSTRUCTORS[self.ndim, self.transposed]
        return build(weight, self.input_shape, method=method, **self.options)

    def module(self, weight: torch.Tensor) -> nn.Module:
        """The torch layer (no bias) that is the oracle for this case."""
        module = _MODULES[self.ndim, self.transposed](
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            bias=False,
            dtype=weight.dtype,
            **self.options,
        )
        with torch.no_grad():
            module.weight.copy_(weight)
        return module


def _ints(n: int, lo: int, hi: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.tuples(*[st.integers(lo, hi)] * n)


@st.composite
def conv_cases(draw, ndim: int, transposed: bool, padding_mode: str = "zeros") -> ConvCase:
    """Valid-by-construction convolution of the given kind."""
    groups = draw(st.integers(1, 3))
    in_channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = draw(_ints(ndim, 1, 4 if ndim < 3 else 3))
    dilation = draw(_ints(ndim, 1, 3))
    extra = draw(_ints(ndim, 0, 4 if ndim < 3 else 2))
    if transposed:
        stride = draw(_ints(ndim, 1, 3))
        padding = draw(_ints(ndim, 0, 2))
        output_padding = tuple(
            draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)
        )
        # smallest n with (n - 1) s - 2 p + d (k - 1) + op + 1 >= 1
        sizes = tuple(
            1 + -(-max(0, 2 * p - d * (k - 1) - op) // s) + e
            for p, d, k, op, s, e in zip(padding, dilation, kernel, output_padding, stride, extra)
        )
        own = {"output_padding": output_padding}  # the option only transposed ones have
    else:
        form = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
        stride = (1,) * ndim if form == "same" else draw(_ints(ndim, 1, 3))
        if form == "int":
            padding = draw(st.integers(0, 3))
            pairs = [(padding, padding)] * ndim
        elif form == "tuple":
            padding = draw(_ints(ndim, 0, 3))
            pairs = [(p, p) for p in padding]
        elif form == "same":
            padding = "same"
            pairs = [
                (d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                for k, d in zip(kernel, dilation)
            ]
        else:
            padding = "valid"
            pairs = [(0, 0)] * ndim
        minimum = {"reflect": 1, "circular": 0}.get(padding_mode)  # pad < n, pad <= n
        sizes = tuple(
            max(
                1,
                d * (k - 1) + 1 - lo - hi,
                0 if minimum is None else max(lo, hi) + minimum,
            )
            + e
            for (lo, hi), k, d, e in zip(pairs, kernel, dilation, extra)
        )
        own = {"padding_mode": padding_mode}  # the option only plain ones have
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, **own)
    return ConvCase(
        ndim=ndim,
        transposed=transposed,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernel,
        input_shape=(in_channels, *sizes),
        options=options,
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def any_conv_case() -> st.SearchStrategy[ConvCase]:
    """A case of any supported kind."""
    return st.sampled_from(COMBOS).flatmap(lambda combo: conv_cases(*combo))


real_or_complex = st.sampled_from([torch.float64, torch.complex128])


def draw_case(
    data: st.DataObject, combo: tuple, dtypes: st.SearchStrategy[torch.dtype] = real_or_complex
) -> tuple[ConvCase, torch.dtype, torch.Tensor]:
    """``(case, dtype, weight)``: a case of ``combo = (ndim, transposed, padding_mode)``
    and its random weight of a drawn dtype."""
    case = data.draw(conv_cases(*combo), label="case")
    dtype = data.draw(dtypes, label="dtype")
    return case, dtype, case.weight(dtype)


def draw_operator(
    data: st.DataObject, combo: tuple, *, numpy_weight: bool = False
) -> tuple[ConvCase, torch.dtype, torch.Tensor, convop.ConvOperator]:
    """``(case, dtype, weight, op)`` as :func:`draw_case`, plus the convop operator (built
    from the weight as a numpy array if ``numpy_weight``)."""
    case, dtype, weight = draw_case(data, combo)
    return case, dtype, weight, case.operator(weight.numpy() if numpy_weight else weight)
