"""Conv layers as fully-connected layers: ``nn.ConvNd`` -> ``nn.Linear``, whole models.

A conv layer applied to inputs of one fixed shape is an affine map ``x -> A x + b``; this module
writes ``A`` out exactly (:meth:`ConvOperator.to_dense`, by index arithmetic, on the layer's
device) and wraps it in an ``nn.Linear``. :func:`to_linear_model` does that for every conv
layer of a model, finding each layer's input shape with one traced forward pass.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from . import _materialize
from ._shared.checks import as_int
from ._shared.memory import check_memory
from .constructors import MODULE_KINDS, from_module
from .operator import ConvOperator

#: The conv layers :func:`convop.from_module` (and so this module) converts.
CONV_TYPES = tuple(MODULE_KINDS)


def _convert(
    module: nn.Module, op: ConvOperator, max_bytes: int | None
) -> tuple[nn.Linear, tuple[int, ...]]:
    """``(linear, output_shape)`` of one conv layer whose operator is ``op``."""
    with torch.no_grad():
        weight = op.to_dense(max_bytes=max_bytes)  # (prod(S_out), prod(S_in)), fresh
        bias = module.bias
        if bias is not None:
            positions = math.prod(op.output_shape[1:])
            bias = bias.detach().repeat_interleave(positions)  # (prod(S_out),), fresh
    # Built on the meta device so no random initialisation of a large matrix is computed.
    linear = nn.Linear(
        op.shape[1], op.shape[0], bias=bias is not None, device="meta", dtype=weight.dtype
    )
    linear.weight = nn.Parameter(weight, requires_grad=module.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=module.bias.requires_grad)
    linear.train(module.training)
    return linear, op.output_shape


def _linear_bytes(op: ConvOperator) -> int:
    """Peak memory of :func:`_convert`: the dense weight, its planning, and the bias."""
    plan = _materialize.plan(op.weight, op.geometry, adjoint=False)
    return _materialize.dense_bytes(plan) + op.shape[0] * op.dtype.itemsize


def to_linear(
    module: nn.Module, input_shape: Sequence[int], *, max_bytes: int | None = None
) -> nn.Linear:
    r"""The fully-connected layer that equals a conv layer on inputs of one shape.

    Parameters
    ----------
    module : torch.nn.Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d or ConvTranspose3d
        Any layer :func:`convop.from_module` supports (every padding, stride, dilation,
        groups, padding_mode and output_padding), with or without bias.
    input_shape : tuple of int
        ``(C_in, *spatial)`` of one sample, without a batch dimension.
    max_bytes : int, optional
        Refuse (``MemoryError``, before allocating) weight matrices larger than this.
        Default: half of the memory available now on the layer's device.

    Returns
    -------
    torch.nn.Linear
        ``linear(x.flatten(1))`` equals ``module(x).flatten(1)`` for every batch ``x`` of
        shape ``(B, *input_shape)``. Same dtype and device as the layer; its parameters are
        new tensors (changing them leaves the layer alone) that require gradients exactly
        when the layer's do. Its training flag is the layer's.

    Raises
    ------
    TypeError
        If ``module`` is not a supported conv layer, or is a subclass that overrides its
        forward (what it computes is then not determined by its weight and configuration).
    ValueError
        If ``input_shape`` does not fit the layer, or its parameters are uninitialised.
    MemoryError
        If the weight matrix would exceed ``max_bytes``.

    See Also
    --------
    to_linear_model : Every conv layer of a model replaced at once.
    convop.from_module : The layer's exact operator, without writing the matrix out.
    convop.ConvOperator.to_dense : The matrix itself.

    Notes
    -----
    With ``A = convop.from_module(module, input_shape).to_dense()`` (shape
    ``(prod(S_out), prod(S_in))``, built exactly by index arithmetic, no probing) and
    ``P = prod(S_out[1:])`` output positions per channel::

        linear.weight = A
        linear.bias[o * P + p] = module.bias[o]       # bias.repeat_interleave(P)

    so ``linear(x.flatten(1)) = x.flatten(1) @ A.T + bias``, the layer's output in C order of
    ``(C_out, *spatial_out)``. Nothing is conjugated: for a complex layer ``A`` is the matrix
    of the convolution itself, as ``nn.Linear`` computes ``x @ W.T``. The matrix has
    ``prod(S_out) * prod(S_in)`` entries, most of them zero: keep inputs small.

    For a convolution, per dimension (``docs/conventions.md``, section 9), row
    :math:`(o, p)` holds the taps that read input sample :math:`i` of channel :math:`c` (in
    :math:`o`'s group, :math:`c'` its index there), summed where the padding copies
    several padded samples from one input sample:

    .. math::

        A_{(o, p), (c, i)} = \sum_{\kappa \,:\, \mathrm{src}(p s + \kappa d - b) = i}
        w[o, c', \kappa],

    with :math:`\mathrm{src}` the padding mode's source map and :math:`b` the padding
    before the input; zero-padding halo samples have no source.

    Examples
    --------
    >>> import torch, convop
    >>> conv = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, padding_mode="reflect",
    ...                        dtype=torch.float64)
    >>> linear = convop.to_linear(conv, (2, 6, 6))
    >>> linear
    Linear(in_features=72, out_features=36, bias=True)
    >>> x = torch.randn(5, 2, 6, 6, dtype=torch.float64)
    >>> torch.allclose(linear(x.flatten(1)), conv(x).flatten(1))
    True
    """
    op = from_module(module, input_shape)  # TypeError for unsupported or overridden modules
    linear, _ = _convert(module, op, max_bytes)
    return linear


# ---------------------------------------------------------------------- whole models
def _check_input_shape(input_shape: object) -> tuple[int, ...]:
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(
            f"input_shape must be a tuple of ints (one sample, without the batch dimension), "
            f"got {input_shape!r} of type {type(input_shape).__name__}"
        )
    if len(input_shape) == 0:
        raise ValueError(
            "input_shape must have at least one entry (one sample, without the batch "
            "dimension), got ()"
        )
    return tuple(as_int(v, f"input_shape[{i}]", minimum=1) for i, v in enumerate(input_shape))


def _describe(names: list[str]) -> str:
    """``'features.0'``, ``'a' (also registered as 'b')`` or ``the model itself``."""
    shown = [repr(name) if name else "the model itself" for name in names]
    also = f" (also registered as {', '.join(shown[1:])})" if len(shown) > 1 else ""
    return f"conv layer {shown[0]}{also}"


def _trace(
    model: nn.Module, input_shape: tuple[int, ...], names: dict[int, list[str]]
) -> dict[int, tuple[int, ...]]:
    """Per-sample input shape of every conv layer ``model`` calls, by ``id`` of the layer.

    Runs ``model`` once in eval mode without gradients on the meta device (shapes only,
    nothing allocated); a model that cannot run there runs on one real sample of zeros.
    Hooks and training flags are restored afterwards, even on error.
    """
    calls: dict[int, list[tuple[int, ...]]] = {}  # full input shapes, in call order
    output_size: set[int] = set()

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["input"]
        calls.setdefault(id(module), []).append(tuple(x.shape))  # (B, C, *spatial)
        given = args[1] if len(args) > 1 else kwargs.get("output_size")
        if given is not None:
            output_size.add(id(module))

    first = next(model.parameters(), None)
    dtype = torch.get_default_dtype() if first is None else first.dtype
    device = torch.device("cpu") if first is None else first.device
    modes = [(m, m.training) for m in model.modules()]
    handles = []
    try:
        for m in model.modules():
            if isinstance(m, CONV_TYPES):
                handles.append(m.register_forward_pre_hook(record, with_kwargs=True))
        model.eval()
        with torch.no_grad():
            try:
                _run_on_meta(model, input_shape, dtype)
            except Exception:  # an operation without a meta kernel, data-dependent control flow
                calls.clear()
                output_size.clear()
                x_bytes = math.prod(input_shape) * torch.empty((), dtype=dtype).element_size()
                check_memory(x_bytes, None, "the forward pass that finds the layers' inputs",
                             device)  # fmt: skip
                model(torch.zeros(1, *input_shape, dtype=dtype, device=device))  # (1, *shape)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes:
            m.training = training

    shapes = {}
    modules = {id(m): m for m in model.modules()}
    for key, seen in calls.items():
        what = _describe(names[key])
        ndim = next(n for cls, (n, _) in MODULE_KINDS.items() if isinstance(modules[key], cls))
        unbatched = [s for s in seen if len(s) != ndim + 2]
        if unbatched:
            raise ValueError(
                f"{what} is called with input of shape {unbatched[0]}; expected a batched "
                f"input (B, C, *spatial) with {ndim} spatial dimensions, as only those can be "
                f"flattened into a fully-connected layer"
            )
        if key in output_size:
            raise ValueError(
                f"{what} is called with output_size, which overrides its output_padding; "
                f"expected calls without output_size, as only the layer's own configuration "
                f"is converted"
            )
        distinct = list(dict.fromkeys(s[1:] for s in seen))
        if len(distinct) > 1:
            listed = ", ".join(map(str, distinct))
            raise ValueError(
                f"{what} is called with inputs of {len(distinct)} different per-sample shapes "
                f"({listed}) in one forward pass; expected one shape, since one "
                f"fully-connected layer has one input size"
            )
        shapes[key] = distinct[0]
    return shapes


def _run_on_meta(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype) -> None:
    """``model`` on one sample with every parameter and buffer on the meta device."""
    tensors = {
        name: torch.empty_like(t, device="meta")
        for named in (model.named_parameters, model.named_buffers)
        for name, t in named(remove_duplicate=False)
    }
    x = torch.empty(1, *input_shape, dtype=dtype, device="meta")  # (1, *input_shape)
    torch.func.functional_call(model, tensors, (x,), strict=True)


def to_linear_model(
    model: nn.Module, input_shape: Sequence[int], *, max_bytes: int | None = None
) -> nn.Module:
    """A copy of a model with every conv layer replaced by an equivalent fully-connected one.

    Parameters
    ----------
    model : torch.nn.Module
        Conv layers may sit anywhere: in ``nn.Sequential``, ``nn.ModuleList``,
        ``nn.ModuleDict`` or custom modules, or be the model itself.
    input_shape : tuple of int
        Shape of one sample of the model's input, without the batch dimension.
    max_bytes : int, optional
        Refuse (``MemoryError``) when the weight matrices of all replacements together would
        take more than this, before any is built. Default: half of the memory available now.

    Returns
    -------
    torch.nn.Module
        A deep copy of ``model`` (``model`` itself is not modified) in which each conv layer
        called in the forward pass is replaced by
        ``nn.Sequential(nn.Flatten(1), linear, nn.Unflatten(1, S_out))`` with ``linear``
        from :func:`to_linear`, so layers after it see the same ``(B, *S_out)`` tensors and
        the copy computes what ``model`` computes on batches of shape
        ``(B, *input_shape)``. Every module keeps its training flag; a replacement takes its
        conv's. A layer registered under several names is converted once and stays shared.

    Raises
    ------
    TypeError
        If ``input_shape`` is not a sequence of ints, or a conv layer cannot be converted
        (see :func:`to_linear`).
    ValueError
        If ``input_shape`` has no entries or an entry below 1; if a layer has uninitialised
        (lazy) parameters; if, in the traced forward pass, a conv layer is called with inputs
        of different shapes, with unbatched input, or (transposed) with ``output_size``.
    MemoryError
        If a weight matrix would exceed ``max_bytes``.

    See Also
    --------
    to_linear : One conv layer, and the matrix it is replaced by.

    Notes
    -----
    Every error about one layer names it by its qualified name, e.g. ``'features.0'``.

    Input shapes are found by one forward pass of the copy on one sample of shape
    ``(1, *input_shape)`` under ``torch.no_grad()``, with forward pre-hooks on the conv
    layers that are removed afterwards, even if the pass fails. The pass runs on the **meta
    device** (shapes only: nothing is computed or allocated, so the memory guard comes
    first); a model that cannot run there (an operation without a meta kernel,
    data-dependent control flow) runs on ``torch.zeros(1, *input_shape)`` with the dtype
    and device of its first parameter instead. The pass runs in **eval mode** and every module's
    training flag is restored afterwards: in train mode it would update BatchNorm running
    statistics and draw dropout masks, and BatchNorm rejects a training batch with one value
    per channel. Consequences:

    - a conv layer the forward pass does not call (including one reached only in training
      mode) is left as it is, a conv layer;
    - a conv layer called several times with one input shape is replaced once; called with
      different shapes it cannot be one fully-connected layer, and ``ValueError`` says so.

    Each replacement is exact in every mode (a conv layer has no mode-dependent behaviour).
    Forward hooks registered on a conv layer are not carried over to its replacement.

    Examples
    --------
    >>> import torch, convop
    >>> from torch import nn
    >>> model = nn.Sequential(
    ...     nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
    ...     nn.Conv2d(4, 2, 3, stride=2), nn.Flatten(), nn.Linear(2 * 3 * 3, 3),
    ... ).double().eval()
    >>> dense = convop.to_linear_model(model, (1, 8, 8))
    >>> dense[0]
    Sequential(
      (0): Flatten(start_dim=1, end_dim=-1)
      (1): Linear(in_features=64, out_features=256, bias=True)
      (2): Unflatten(dim=1, unflattened_size=(4, 8, 8))
    )
    >>> x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    >>> torch.allclose(dense(x), model(x))
    True
    >>> any(isinstance(m, nn.Conv2d) for m in dense.modules())
    False
    """
    input_shape = _check_input_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.lazy.LazyModuleMixin) and m.has_uninitialized_params():
            raise ValueError(
                f"module {repr(name) if name else 'the model itself'} ({type(m).__name__}) has "
                f"uninitialised parameters; run one forward pass before converting the model"
            )
    converted = copy.deepcopy(model)
    names: dict[int, list[str]] = {}
    for name, m in converted.named_modules(remove_duplicate=False):
        names.setdefault(id(m), []).append(name)
    shapes = _trace(converted, input_shape, names)

    modules = {id(m): m for m in converted.modules()}
    ops = {}
    for key, shape in shapes.items():
        try:
            ops[key] = from_module(modules[key], shape)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{_describe(names[key])}: {error}") from error
    check_memory(
        sum(_linear_bytes(op) for op in ops.values()),
        max_bytes,
        f"replacing {len(ops)} conv layer{'s' * (len(ops) != 1)} by fully-connected ones",
    )
    replacements = {}
    for key, op in ops.items():
        conv = modules[key]
        try:  # guarded above, all together; each layer still meets the default guard
            linear, output_shape = _convert(conv, op, None)
        except (TypeError, ValueError, MemoryError) as error:
            raise type(error)(f"{_describe(names[key])}: {error}") from error
        replacement = nn.Sequential(nn.Flatten(1), linear, nn.Unflatten(1, output_shape))
        replacements[key] = replacement.train(conv.training)
    if id(converted) in replacements:
        return replacements[id(converted)]
    for parent in list(converted.modules()):
        for name, child in list(parent._modules.items()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    return converted
