"""Public constructors: ``conv1d`` ... ``conv_transpose3d`` and ``from_module``.

They turn PyTorch's arguments into a :class:`~convop.geometry.ConvGeometry` (which
validates everything) and wrap the weight in a :class:`~convop.operator.ConvOperator`.
The six are made once each from a table: the two signatures, written out as the
``__call__`` of a ``Protocol`` (mirroring ``torch.nn.functional``; type checkers and IDEs
read them from the annotations ``conv2d: _Conv``, ``inspect.signature`` and the API
reference from ``__signature__``), and the two docstring templates. :data:`CONSTRUCTORS`
finds one by ``(ndim, transposed)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ._shared.arrays import as_weight_tensor
from .geometry import ConvGeometry
from .operator import ConvOperator

IntOrTuple = int | Sequence[int]
Weight = torch.Tensor | np.ndarray


def _build(
    ndim: int,
    transposed: bool,
    weight: Weight,
    input_shape: Sequence[int],
    bias: torch.Tensor | None = None,
    method: str = "auto",
    **options,
) -> ConvOperator:
    tensor = as_weight_tensor(weight)
    if tensor.ndim != ndim + 2:
        layout = "(C_in, C_out/groups, *kernel)" if transposed else "(C_out, C_in/groups, *kernel)"
        raise ValueError(
            f"weight must have {ndim + 2} dimensions {layout} for a {ndim}-d convolution, "
            f"got weight of shape {tuple(tensor.shape)}"
        )
    geometry = ConvGeometry.from_torch(
        tuple(tensor.shape), input_shape, transposed=transposed, **options
    )
    return ConvOperator(tensor, geometry, bias=bias, method=method)


#: What both templates say of errors.
_RAISES = """Raises
------
ValueError
    At construction, for any invalid configuration, naming the parameter.
TypeError
    For arguments of the wrong type (a float or bool where an int is required).
"""

_CONV_DOC = """{ndim}-d convolution as an exact lazy linear operator, like ``F.conv{ndim}d``.

Parameters
----------
weight : torch.Tensor or numpy.ndarray
    Shape ``(C_out, C_in/groups, {kernel})``, dtype float32, float64, complex64 or
    complex128, dense. A tensor is held as given (device and autograd kept) and read at
    every use, so later in-place changes to it show in every product; an array is copied.
input_shape : tuple of int
    ``(C_in, {spatial})`` of one sample, without a batch dimension.
stride : int or tuple of int, default 1
padding : int, tuple of int, 'same' or 'valid', default 0
    Implicit padding on both sides; ``'same'`` (stride 1 only) puts the odd extra sample
    of an even effective kernel after the input, as PyTorch does.
dilation : int or tuple of int, default 1
groups : int, default 1
padding_mode : {{'zeros', 'reflect', 'replicate', 'circular'}}, default 'zeros'
    As in ``torch.nn.Conv{ndim}d``.
method : {{'auto', 'direct', 'fft'}}, default 'auto'
    Evaluate products with torch's direct convolutions or with FFTs; ``'auto'`` picks the
    faster by a cost model of the geometry and the weight's dtype and device (large kernels:
    FFT), at each use. FFT round-off is relative to ``||w||_1 * max|x|``, not to each output
    sample; NaN or Inf in the data or weight make that product run directly, so results
    always have the direct convolution's exact non-finite pattern.

Returns
-------
ConvOperator
    Shape ``(prod(output_shape), prod(input_shape))``; ``rmatvec`` is the exact adjoint.

{raises}
See Also
--------
conv_transpose{ndim}d : The transposed convolution, the adjoint of a zero-padded one.
from_module : The operator of an ``nn.Conv{ndim}d`` layer, its arguments read from it.

Notes
-----
Forward ``y = conv(pad(x), w)``; adjoint ``x = pad_adjoint(conv_transpose(y, conj(w)))``
with the strided remainder restored by ``output_padding`` and reflect/replicate/circular
halos folded back onto their source samples.

Examples
--------
>>> import numpy as np, torch, convop
>>> w = torch.randn({weight_shape}, dtype=torch.float64)
>>> op = convop.conv{ndim}d(w, {input_shape}, padding=1, padding_mode="reflect")
>>> op.output_shape
{output_shape}
>>> x = np.random.default_rng(0).standard_normal(op.shape[1])
>>> y = torch.nn.functional.conv{ndim}d(
...     torch.nn.functional.pad(torch.from_numpy(x).reshape(1, *op.input_shape),
...                             ({pads}), mode="reflect"), w)
>>> bool(np.allclose(op @ x, y.reshape(-1).numpy()))
True
"""

_CONV_T_DOC = """{ndim}-d transposed convolution as an exact lazy linear operator.

Parameters
----------
weight : torch.Tensor or numpy.ndarray
    Shape ``(C_in, C_out/groups, {kernel})`` (PyTorch's transposed layout); held and read
    at every use like :func:`conv{ndim}d`'s.
input_shape : tuple of int
    ``(C_in, {spatial})`` of one sample, without a batch dimension.
stride : int or tuple of int, default 1
padding : int or tuple of int, default 0
    Samples cropped from both sides of the full transposed convolution.
output_padding : int or tuple of int, default 0
    Extra samples on one side of the output; smaller than stride or dilation.
groups : int, default 1
dilation : int or tuple of int, default 1
method : {{'auto', 'direct', 'fft'}}, default 'auto'
    Evaluate products with torch's direct convolutions or with FFTs; ``'auto'`` picks the
    faster by a cost model of the geometry and the weight's dtype and device, at each use
    (FFT accuracy and non-finite data: see :func:`conv{ndim}d`).

Returns
-------
ConvOperator

{raises}
See Also
--------
conv{ndim}d : The convolution, with PyTorch's convolution weight layout.
from_module : The operator of an ``nn.ConvTranspose{ndim}d`` layer.

Notes
-----
Forward ``y = conv_transpose(x, w)``; adjoint ``x = conv(y, conj(w))`` cropped to the input
size (``output_padding >= stride`` adds output samples that no input reaches).

Examples
--------
>>> import torch, convop
>>> w = torch.randn({weight_shape})
>>> op = convop.conv_transpose{ndim}d(w, {input_transposed}, stride=2, output_padding=1)
>>> op.output_shape
{output_transposed}
>>> op.H
ConvOperator(adjoint of conv_transpose{ndim}d, ...)
"""

_EXAMPLE_SHAPES = {
    1: dict(weight_shape="4, 2, 3", input_shape="(2, 16)", output_shape="(4, 16)",
            pads="1, 1", input_transposed="(4, 16)", output_transposed="(2, 34)"),
    2: dict(weight_shape="4, 2, 3, 3", input_shape="(2, 8, 8)", output_shape="(4, 8, 8)",
            pads="1, 1, 1, 1", input_transposed="(4, 8, 8)",
            output_transposed="(2, 18, 18)"),
    3: dict(weight_shape="4, 2, 3, 3, 3", input_shape="(2, 4, 4, 4)",
            output_shape="(4, 4, 4, 4)", pads="1, 1, 1, 1, 1, 1", input_transposed="(4, 4, 4, 4)",
            output_transposed="(2, 10, 10, 10)"),
}  # fmt: skip


class _Conv(Protocol):
    """The signature of :func:`conv1d`, :func:`conv2d` and :func:`conv3d`."""

    def __call__(self, weight: Weight, input_shape: Sequence[int], *, stride: IntOrTuple = 1,
                 padding: IntOrTuple | str = 0, dilation: IntOrTuple = 1, groups: int = 1,
                 padding_mode: str = "zeros", method: str = "auto") -> ConvOperator:  # fmt: skip
        ...


class _ConvTranspose(Protocol):
    """The signature of :func:`conv_transpose1d` ... :func:`conv_transpose3d`."""

    def __call__(self, weight: Weight, input_shape: Sequence[int], *, stride: IntOrTuple = 1,
                 padding: IntOrTuple = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                 dilation: IntOrTuple = 1, method: str = "auto") -> ConvOperator:  # fmt: skip
        ...


def _constructor(ndim: int, transposed: bool) -> Callable[..., ConvOperator]:
    """The public constructor of one kind: its name, signature and docstring, and ``_build``."""
    name = f"conv_transpose{ndim}d" if transposed else f"conv{ndim}d"
    call = inspect.signature((_ConvTranspose if transposed else _Conv).__call__)
    signature = call.replace(parameters=list(call.parameters.values())[1:])  # without self

    def constructor(*args, **kwargs) -> ConvOperator:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:  # what Python says of a plain function, with its name
            raise TypeError(f"{name}(): {error}") from None
        bound.apply_defaults()
        return _build(ndim, transposed, **bound.arguments)

    constructor.__name__ = constructor.__qualname__ = name
    constructor.__module__ = __name__
    constructor.__signature__ = signature
    constructor.__doc__ = (_CONV_T_DOC if transposed else _CONV_DOC).format(
        ndim=ndim,
        raises=_RAISES,
        kernel=", ".join(f"k{i}" for i in range(ndim)),
        spatial=", ".join(f"n{i}" for i in range(ndim)),
        **_EXAMPLE_SHAPES[ndim],
    )
    return constructor


#: The constructor of each kind of convolution, by ``(ndim, transposed)``.
CONSTRUCTORS: dict[tuple[int, bool], Callable[..., ConvOperator]] = {
    (ndim, transposed): _constructor(ndim, transposed)
    for transposed in (False, True)
    for ndim in (1, 2, 3)
}
conv1d: _Conv = CONSTRUCTORS[1, False]
conv2d: _Conv = CONSTRUCTORS[2, False]
conv3d: _Conv = CONSTRUCTORS[3, False]
conv_transpose1d: _ConvTranspose = CONSTRUCTORS[1, True]
conv_transpose2d: _ConvTranspose = CONSTRUCTORS[2, True]
conv_transpose3d: _ConvTranspose = CONSTRUCTORS[3, True]

MODULE_KINDS = {
    nn.Conv1d: (1, False),
    nn.Conv2d: (2, False),
    nn.Conv3d: (3, False),
    nn.ConvTranspose1d: (1, True),
    nn.ConvTranspose2d: (2, True),
    nn.ConvTranspose3d: (3, True),
}


def from_module(
    module: nn.Module, input_shape: Sequence[int], *, method: str = "auto"
) -> ConvOperator:
    """The linear part of a PyTorch conv layer as an exact lazy operator.

    Parameters
    ----------
    module : torch.nn.Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d or ConvTranspose3d
        Its weight tensor is held, not copied, and read at every use (same device and
        dtype; gradients flow to it through :meth:`ConvOperator.apply`): optimizer steps,
        ``load_state_dict`` and ``module.to(dtype)`` show in the operator. Stride, padding
        (including ``'same'``/``'valid'``), dilation, groups, padding_mode and
        output_padding are read from it once.
    input_shape : tuple of int
        ``(C_in, *spatial)`` of one sample, without a batch dimension.
    method : {'auto', 'direct', 'fft'}, default 'auto'
        How products are evaluated (see :func:`conv2d`).

    Returns
    -------
    ConvOperator
        ``op @ x + op.bias`` equals ``module(x)`` flattened, for one flattened sample ``x``.

    Raises
    ------
    TypeError
        If ``module`` is not one of the supported conv layers, or is a subclass that
        overrides its forward (what it computes is then not its weight and configuration).
    ValueError
        If the layer's parameters are not yet initialised or do not fit ``input_shape``.

    See Also
    --------
    conv2d : The same from a weight and PyTorch's arguments (and ``conv1d`` ...
        ``conv_transpose3d``).
    to_linear : The layer as an ``nn.Linear``, its explicit matrix.

    Examples
    --------
    >>> import numpy as np, torch, convop
    >>> layer = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="circular")
    >>> op = convop.from_module(layer, (3, 16, 16))
    >>> op.shape
    (512, 768)
    >>> x = torch.randn(3, 16, 16)
    >>> y = op @ x.numpy().ravel() + op.bias
    >>> bool(np.allclose(y, layer(x[None]).detach().numpy().ravel(), atol=1e-5))
    True
    """
    kind = next((v for cls, v in MODULE_KINDS.items() if isinstance(module, cls)), None)
    if kind is None:
        names = ", ".join(f"nn.{cls.__name__}" for cls in MODULE_KINDS)
        raise TypeError(f"module must be one of {names}, got {type(module).__name__}")
    base = next(cls for cls in MODULE_KINDS if isinstance(module, cls))
    for name in ("forward", "_conv_forward"):
        if getattr(type(module), name, None) is not getattr(base, name, None):
            raise TypeError(
                f"module {type(module).__name__} overrides nn.{base.__name__}.{name}; "
                f"expected a layer that computes exactly nn.{base.__name__}'s forward, since "
                f"only its weight and configuration are read"
            )
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"module {type(module).__name__} has uninitialised parameters; run one forward "
            f"pass before converting it"
        )
    ndim, transposed = kind
    padding = module.padding
    if isinstance(padding, tuple) and padding and all(isinstance(p, str) for p in padding):
        padding = "".join(padding)  # ConvTranspose stores padding='same' as ('s', 'a', ...)
    options = dict(
        stride=module.stride,
        padding=padding,
        dilation=module.dilation,
        groups=module.groups,
        padding_mode=module.padding_mode,
    )
    if transposed:
        options["output_padding"] = module.output_padding
    return _build(
        ndim, transposed, module.weight, input_shape, bias=module.bias, method=method, **options
    )
