"""One frozen description of a convolution: shapes, padding, validation.

Everything else in convop (the torch functions, the operators, the explicit matrices)
reads the convolution from a :class:`ConvGeometry`, so the rules live here once. That is
why this module runs a little past 400 lines: every check of every argument is here, each
with a message naming the parameter, and nowhere else.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ._shared.checks import as_int, as_int_tuple, check_choice

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
#: torch indexes tensors with int64: every size and count must stay below this.
INT64_LIMIT = 2**63
PADDING_STRINGS = ("same", "valid")


@dataclass(frozen=True)
class ConvGeometry:
    """Geometry of one N-d convolution or transposed convolution, as PyTorch defines it.

    Build it with :meth:`ConvGeometry.from_torch` (which accepts PyTorch's argument forms);
    the fields below are the canonical, per-dimension form.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the operator's input and output.
    kernel_size : tuple of int
        Kernel extent per spatial dimension (without dilation).
    input_size : tuple of int
        Spatial size of one input sample.
    stride : tuple of int
        Per spatial dimension, each >= 1.
    padding : tuple of (int, int)
        ``(before, after)`` per spatial dimension. Transposed convolutions pad symmetrically
        (the implicit crop of ``conv_transpose``), so there both entries are equal.
    dilation : tuple of int
        Per spatial dimension, each >= 1.
    groups : int
        Number of blocked connections; divides both channel counts.
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}
        How the input is extended before a (non-transposed) convolution.
    transposed : bool
        ``True`` for ``conv_transposeNd``.
    output_padding : tuple of int
        Extra size added to one side of a transposed convolution's output; zeros otherwise.

    Notes
    -----
    Output size per dimension, for a convolution and a transposed convolution::

        out = floor((n + before + after - d*(k - 1) - 1) / s) + 1
        out = (n - 1)*s - 2*p + d*(k - 1) + output_padding + 1

    Examples
    --------
    >>> g = ConvGeometry.from_torch((16, 3, 3, 3), (3, 32, 32), stride=2, padding=1)
    >>> g.output_shape
    (16, 16, 16)
    >>> ConvGeometry.from_torch((4, 1, 4), (1, 10), padding="same").padding
    ((1, 2),)
    """

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    input_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        ndim = len(self.kernel_size) if isinstance(self.kernel_size, Sequence) else 0
        if ndim not in (1, 2, 3):
            raise ValueError(
                f"kernel_size must have 1, 2 or 3 entries (conv1d/2d/3d), "
                f"got kernel_size={self.kernel_size!r}"
            )
        # Normalise in place (ints broadcast, numpy ints become Python ints) so that a
        # geometry built directly is as canonical as one from ``from_torch``.
        normalised = dict(
            in_channels=as_int(self.in_channels, "in_channels", minimum=1),
            out_channels=as_int(self.out_channels, "out_channels", minimum=1),
            groups=as_int(self.groups, "groups", minimum=1),
            kernel_size=as_int_tuple(self.kernel_size, ndim, "kernel_size", minimum=1),
            input_size=as_int_tuple(self.input_size, ndim, "input_shape[1:]", minimum=1),
            stride=as_int_tuple(self.stride, ndim, "stride", minimum=1),
            dilation=as_int_tuple(self.dilation, ndim, "dilation", minimum=1),
            output_padding=as_int_tuple(
                0 if self.output_padding is None else self.output_padding,
                ndim,
                "output_padding",
                minimum=0,
            ),
        )
        for name, value in normalised.items():
            object.__setattr__(self, name, value)
        check_choice(self.padding_mode, "padding_mode", PADDING_MODES)
        if not isinstance(self.transposed, bool):
            raise TypeError(f"transposed must be a bool, got {self.transposed!r}")
        self._check_padding_pairs(ndim)
        self._check_channels()
        self._check_padding_mode()
        self._check_output_padding()
        self._check_int64()
        self._check_output_size()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_torch(
        cls,
        weight_shape: Sequence[int],
        input_shape: Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | str | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        output_padding: int | Sequence[int] = 0,
        transposed: bool = False,
    ) -> ConvGeometry:
        """Build a geometry from a weight shape, an input shape and PyTorch's arguments.

        Parameters
        ----------
        weight_shape : sequence of int
            ``(C_out, C_in/groups, *k)`` for a convolution, ``(C_in, C_out/groups, *k)``
            for a transposed convolution (PyTorch's layouts).
        input_shape : sequence of int
            ``(C_in, *spatial)`` of one sample, without a batch dimension.
        stride : int or sequence of int, default 1
            As in ``torch.nn.functional.convNd`` / ``conv_transposeNd``.
        padding : int, sequence of int or str, default 0
            An int, a per-dimension tuple, ``'same'`` or ``'valid'`` (strings only for
            convolutions, as in PyTorch).
        dilation : int or sequence of int, default 1
        groups : int, default 1
        padding_mode : str, default 'zeros'
            ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'`` (convolutions only).
        output_padding : int or sequence of int, default 0
            Transposed convolutions only; smaller than the stride or the dilation.
        transposed : bool, default False
            Describe ``conv_transposeNd`` instead of ``convNd``.

        Raises
        ------
        ValueError
            For any configuration PyTorch would reject, or accept and compute nonsense for.
        TypeError
            For arguments of the wrong type (a float or bool where an int is required).
        """
        # Only PyTorch's own forms are checked here: the weight and input shapes, groups
        # (the channel counts are computed with it) and the padding argument. Every other
        # argument goes to the fields as given, and __post_init__ checks them all.
        if not isinstance(weight_shape, Sequence):
            raise TypeError(
                f"weight_shape must be a tuple of ints, got {weight_shape!r} of type "
                f"{type(weight_shape).__name__}"
            )
        weight_shape = tuple(weight_shape)
        ndim = len(weight_shape) - 2
        if ndim not in (1, 2, 3):
            raise ValueError(
                f"weight must have 3, 4 or 5 dimensions (C_out, C_in/groups, *kernel) for "
                f"conv1d/2d/3d, got weight of shape {weight_shape}"
            )
        if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
            raise TypeError(
                f"input_shape must be a tuple (C, *spatial), got {input_shape!r} of type "
                f"{type(input_shape).__name__}"
            )
        input_shape = tuple(input_shape)
        if len(input_shape) != ndim + 1:
            raise ValueError(
                f"input_shape must have {ndim + 1} entries (C, *spatial) for a {ndim}-d weight "
                f"of shape {weight_shape}, got input_shape={input_shape}"
            )
        input_shape = as_int_tuple(input_shape, ndim + 1, "input_shape", minimum=1)
        weight_shape = as_int_tuple(weight_shape, ndim + 2, "weight.shape", minimum=1)
        groups = as_int(groups, "groups", minimum=1)
        kernel_size = weight_shape[2:]
        if transposed:
            in_channels, out_channels = weight_shape[0], weight_shape[1] * groups
            expected = "weight.shape[0]"
        else:
            in_channels, out_channels = weight_shape[1] * groups, weight_shape[0]
            expected = "weight.shape[1] * groups"
        if input_shape[0] != in_channels:
            raise ValueError(
                f"input_shape[0]={input_shape[0]} does not match the weight: expected "
                f"in_channels = {expected} = {in_channels} for weight of shape {weight_shape} "
                f"and groups={groups}"
            )
        if transposed and isinstance(padding, str):
            raise ValueError(
                f"padding must be an int or a tuple of {ndim} ints for a transposed "
                f"convolution, got padding={padding!r}"
            )
        return cls(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            input_size=input_shape[1:],
            stride=stride,
            padding=_padding_pairs(padding, kernel_size, stride, dilation),
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
            transposed=transposed,
            output_padding=output_padding,
        )

    # ------------------------------------------------------------------ derived shapes
    @functools.cached_property
    def conv_padding(self) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...] | None]:
        """``(implicit, explicit)``: how a direct product pads.

        ``implicit`` is the symmetric zero padding torch's conv kernel does itself;
        ``explicit`` the rest, ``(before, after)`` per spatial dimension, done beforehand by
        :func:`convop.padding.pad` (``None`` when there is none). Computed once: a small
        layer's product takes tens of microseconds, so each one counts.

        Examples
        --------
        >>> ConvGeometry.from_torch((1, 1, 4), (1, 9), padding="same").conv_padding
        ((1,), ((0, 1),))
        >>> ConvGeometry.from_torch((1, 1, 3), (1, 9), padding=1,
        ...                         padding_mode="circular").conv_padding
        ((0,), ((1, 1),))
        """
        if self.padding_mode != "zeros":
            implicit, explicit = (0,) * self.ndim, self.padding
        else:
            implicit = tuple(min(pair) for pair in self.padding)
            explicit = tuple((lo - p, hi - p) for (lo, hi), p in zip(self.padding, implicit))
        return implicit, (explicit if any(any(pair) for pair in explicit) else None)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (1, 2 or 3)."""
        return len(self.kernel_size)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C_in, *spatial)`` of one input sample."""
        return (self.in_channels, *self.input_size)

    @property
    def output_size(self) -> tuple[int, ...]:
        """Spatial size of one output sample, exactly as PyTorch computes it."""
        return tuple(_output_length(self, i) for i in range(self.ndim))

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(C_out, *spatial)`` of one output sample."""
        return (self.out_channels, *self.output_size)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The weight's shape in PyTorch's layout for this kind of convolution."""
        if self.transposed:
            lead = (self.in_channels, self.out_channels // self.groups)
        else:
            lead = (self.out_channels, self.in_channels // self.groups)
        return (*lead, *self.kernel_size)

    @property
    def padded_size(self) -> tuple[int, ...]:
        """Spatial size of the padded input of a convolution."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.input_size, self.padding))

    @property
    def adjoint_output_padding(self) -> tuple[int, ...]:
        """Remainder ``(n + before + after - d(k-1) - 1) mod s`` per dimension.

        The trailing samples a strided convolution never reaches; ``conv_transpose``
        needs it as ``output_padding`` to produce the full padded input size.
        """
        return tuple(
            (p - d * (k - 1) - 1) % s
            for p, k, s, d in zip(self.padded_size, self.kernel_size, self.stride, self.dilation)
        )

    def as_convolution(self) -> ConvGeometry:
        """The zero-padded convolution whose adjoint this transposed convolution is.

        ``conv_transpose(x, w)`` is the transpose of ``conv(., w)`` on the returned
        geometry (whose input is this geometry's output), restricted to its first
        ``input_size`` outputs per dimension; see :func:`convop.functional.adjoint`.

        Examples
        --------
        >>> g = ConvGeometry.from_torch((2, 3, 4), (2, 5), stride=2, transposed=True)
        >>> c = g.as_convolution()
        >>> c.input_shape == g.output_shape, c.output_size, c.weight_shape == g.weight_shape
        (True, (5,), True)
        """
        if not self.transposed:
            raise ValueError("as_convolution() is for transposed convolutions")
        return ConvGeometry(
            in_channels=self.out_channels,
            out_channels=self.in_channels,
            kernel_size=self.kernel_size,
            input_size=self.output_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    @property
    def name(self) -> str:
        """PyTorch's name for this convolution, e.g. ``'conv2d'`` or ``'conv_transpose3d'``."""
        return f"conv{'_transpose' if self.transposed else ''}{self.ndim}d"

    def describe(self) -> str:
        """Short human description of the non-default parameters."""
        parts = [f"kernel_size={self.kernel_size}"]
        for field in ("stride", "dilation"):
            value = getattr(self, field)
            if any(v != 1 for v in value):
                parts.append(f"{field}={value}")
        if any(lo or hi for lo, hi in self.padding):
            symmetric = all(lo == hi for lo, hi in self.padding)
            shown = tuple(lo for lo, _ in self.padding) if symmetric else self.padding
            parts.append(f"padding={shown}")
        if any(self.output_padding):
            parts.append(f"output_padding={self.output_padding}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        return ", ".join(parts)

    # ------------------------------------------------------------------ validation
    def _check_padding_pairs(self, ndim: int) -> None:
        pairs = self.padding
        ok = isinstance(pairs, Sequence) and len(pairs) == ndim
        ok = ok and all(isinstance(p, Sequence) and len(p) == 2 for p in pairs)
        if not ok:
            raise ValueError(
                f"padding must hold one (before, after) pair per dimension ({ndim}), "
                f"got padding={pairs!r}"
            )
        pairs = tuple(as_int_tuple(pair, 2, "padding", minimum=0) for pair in pairs)
        object.__setattr__(self, "padding", pairs)
        if self.transposed and any(lo != hi for lo, hi in pairs):
            raise ValueError(f"a transposed convolution pads symmetrically, got padding={pairs!r}")

    def _check_channels(self) -> None:
        for name in ("in_channels", "out_channels"):
            value = getattr(self, name)
            if value % self.groups:
                raise ValueError(f"groups={self.groups} must divide {name}={value}")

    def _check_padding_mode(self) -> None:
        if self.transposed and self.padding_mode != "zeros":
            raise ValueError(
                f"padding_mode must be 'zeros' for a transposed convolution, "
                f"got padding_mode={self.padding_mode!r}"
            )
        # reflect never repeats the edge sample, so it needs pad < n; circular wraps at most once.
        limit = {"reflect": "<", "circular": "<="}.get(self.padding_mode)
        if limit is None:
            return
        for i, (n, (lo, hi)) in enumerate(zip(self.input_size, self.padding)):
            too_big = max(lo, hi) >= n if limit == "<" else max(lo, hi) > n
            if too_big:
                raise ValueError(
                    f"padding_mode={self.padding_mode!r} needs padding {limit} input size in "
                    f"every dimension, got padding {(lo, hi)} for input size {n} in spatial "
                    f"dimension {i}"
                )

    def _check_output_padding(self) -> None:
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op and not self.transposed:
                raise ValueError(
                    f"output_padding is only for transposed convolutions, "
                    f"got output_padding={self.output_padding}"
                )
            if op >= s and op >= d:
                raise ValueError(
                    f"output_padding must be smaller than either stride or dilation, got "
                    f"output_padding={self.output_padding}, stride={self.stride}, "
                    f"dilation={self.dilation}"
                )

    def _check_int64(self) -> None:
        """Refuse what torch could never index: every size, step and count below 2**63."""
        fields = ("in_channels", "out_channels", "groups", "kernel_size", "input_size",
                  "stride", "dilation", "padding", "output_padding")  # fmt: skip
        for name in fields:
            value = getattr(self, name)
            flat = value if isinstance(value, tuple) else (value,)
            flat = [v for item in flat for v in (item if isinstance(item, tuple) else (item,))]
            if max(flat) >= INT64_LIMIT:
                raise ValueError(
                    f"{name}={value} is too large: torch indexes with int64, so every size "
                    f"must be below 2**63"
                )
        for i in range(self.ndim):
            n, (lo, hi) = self.input_size[i], self.padding[i]
            k, s, d = self.kernel_size[i], self.stride[i], self.dilation[i]
            extents = {
                "padded input size": n + lo + hi,
                "dilated kernel span": d * (k - 1) + 1,
                "upsampled input size": (n - 1) * s + 1 + d * (k - 1) + self.output_padding[i],
            }
            for what, size in extents.items():
                if size >= INT64_LIMIT:
                    raise ValueError(
                        f"the {what} {size} in spatial dimension {i} is too large: torch "
                        f"indexes with int64, so it must be below 2**63"
                    )
        shapes = {"input": self.input_shape, "output": self.output_shape,
                  "weight": self.weight_shape}  # fmt: skip
        for what, shape in shapes.items():
            if math.prod(shape) >= INT64_LIMIT:
                raise ValueError(
                    f"the {what} shape {shape} has {math.prod(shape)} elements, too many for "
                    f"torch's int64 indexing (below 2**63)"
                )

    def _check_output_size(self) -> None:
        for i in range(self.ndim):
            n, (lo, hi) = self.input_size[i], self.padding[i]
            k, d = self.kernel_size[i], self.dilation[i]
            span = d * (k - 1) + 1
            if self.transposed:
                if _output_length(self, i) < 1:
                    raise ValueError(
                        f"padding={lo} is too large in spatial dimension {i}: the transposed "
                        f"convolution of input size {n} would have output size "
                        f"{_output_length(self, i)}"
                    )
            elif span > n + lo + hi:
                raise ValueError(
                    f"kernel_size={self.kernel_size} with dilation={self.dilation} spans {span} "
                    f"samples in spatial dimension {i}, more than the padded input size "
                    f"{n + lo + hi} (input {n} + padding {(lo, hi)})"
                )


def _output_length(geom: ConvGeometry, i: int) -> int:
    n, (lo, hi) = geom.input_size[i], geom.padding[i]
    k, s, d = geom.kernel_size[i], geom.stride[i], geom.dilation[i]
    if geom.transposed:
        return (n - 1) * s - lo - hi + d * (k - 1) + geom.output_padding[i] + 1
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def _padding_pairs(
    padding: object, kernel_size: tuple[int, ...], stride: object, dilation: object
) -> tuple[tuple[int, int], ...]:
    """PyTorch's padding argument as ``(before, after)`` per dimension."""
    ndim = len(kernel_size)
    if isinstance(padding, str):
        check_choice(padding, "padding", PADDING_STRINGS)
        if padding == "valid":
            return ((0, 0),) * ndim
        # 'same' is computed from the stride and the dilation, so they are read here.
        stride = as_int_tuple(stride, ndim, "stride", minimum=1)
        dilation = as_int_tuple(dilation, ndim, "dilation", minimum=1)
        if any(s != 1 for s in stride):
            raise ValueError(f"padding='same' requires stride=1, got stride={stride}")
        # PyTorch puts the odd extra sample of an even effective kernel after the input.
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        return tuple((t // 2, t - t // 2) for t in totals)
    pads = as_int_tuple(padding, ndim, "padding", minimum=0)
    return tuple((p, p) for p in pads)
