"""Data for the solvers that run in torch: numpy or a tensor; one sample, flat, or a batch.

:func:`read_batch` reads ``y`` as a ``(B, *op.output_shape)`` tensor on the weight's device
(never copied where it need not be, never written to); :class:`Form` gives a solution back
in ``y``'s form: numpy or a tensor, flat, one sample or the batch.
"""

from __future__ import annotations

import numpy as np
import torch

from .._shared.arrays import result_dtype, to_numpy, to_tensor


class Form:
    """How ``y`` came in: numpy or a tensor; flat, one sample, or a batch.

    ``bare``: the one sample came without its one channel axis.
    """

    def __init__(self, numpy_in: bool, flat: bool, single: bool, bare: bool = False) -> None:
        self.numpy_in, self.flat, self.single, self.bare = numpy_in, flat, single, bare

    def back(self, x: torch.Tensor, *, read_only: bool = False):
        """``x`` of shape ``(B, *input_shape)`` in ``y``'s form (numpy: read-only on request)."""
        if self.flat:
            x = x.reshape(-1)
        elif self.single:
            x = x[0, 0] if self.bare else x[0]
        if not self.numpy_in:
            return x
        array = to_numpy(x)
        if read_only:
            array = array.view()
            array.flags.writeable = False
        return array


def read_batch(op, y: object, weight: torch.Tensor, *,
               real: str | None = None) -> tuple[torch.Tensor, Form]:  # fmt: skip
    """``y`` as a ``(B, *op.output_shape)`` tensor, and its form.

    One sample may come without its channel axis where the operator has one channel on
    both sides (an image and its object); the solution then comes back without it too.

    In the dtype of the result: numpy's promotion of the operator's and ``y``'s (as ``op @
    x``), torch's for tensors (as ``op.apply``: float16 and bfloat16 data computed in the
    weight's precision). ``real`` names a solver that refuses complex data (a
    ``TypeError``).
    """
    numpy_in = isinstance(y, np.ndarray)
    if numpy_in:
        if real is not None and y.dtype.kind == "c":
            raise TypeError(f"{real} needs real data, got y of dtype {y.dtype}")
        t = to_tensor(y, result_dtype(np.dtype(op.dtype), y.dtype, "y"), weight.device)
    elif isinstance(y, torch.Tensor):
        if not (y.is_floating_point() or y.is_complex()):
            raise TypeError(f"y must be a floating-point or complex tensor, got {y.dtype}")
        if real is not None and y.is_complex():
            raise TypeError(f"{real} needs real data, got y of dtype {y.dtype}")
        if y.device != weight.device:
            raise ValueError(
                f"y is on {y.device} but the operator's weight is on {weight.device}; "
                f"move it with .to({str(weight.device)!r})"
            )
        t = y.detach()
        t = t.to(torch.promote_types(weight.dtype, t.dtype))
    else:
        raise TypeError(f"y must be a numpy.ndarray or torch.Tensor, got {type(y).__name__}")
    out_shape = tuple(op.output_shape)
    flat = t.ndim == 1 and t.numel() == op.shape[0]
    single = tuple(t.shape) == out_shape
    # one sample without its channel axis, where both sides have one channel (an image)
    bare = out_shape[0] == 1 == op.input_shape[0] and tuple(t.shape) == out_shape[1:]
    if flat or single or bare:
        return t.reshape(1, *out_shape), Form(numpy_in, flat, single or bare, bare)
    if tuple(t.shape[1:]) == out_shape:
        return t, Form(numpy_in, flat, single)
    bare_shape = f", {out_shape[1:]}" if out_shape[0] == 1 == op.input_shape[0] else ""
    raise ValueError(
        f"y must have shape {out_shape}{bare_shape}, (B, *{out_shape}) or ({op.shape[0]},), "
        f"got {tuple(t.shape)}"
    )
