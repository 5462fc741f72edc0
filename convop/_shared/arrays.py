"""The single place where numpy and torch meet: dtype table and conversions."""

from __future__ import annotations

import numpy as np
import torch

#: Supported dtypes, torch -> numpy. Everything convop computes is in one of these.
TORCH_TO_NUMPY = {
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
    torch.complex64: np.dtype(np.complex64),
    torch.complex128: np.dtype(np.complex128),
}
NUMPY_TO_TORCH = {v: k for k, v in TORCH_TO_NUMPY.items()}
_SUPPORTED = "float32, float64, complex64 or complex128"


def numpy_dtype(dtype: torch.dtype, name: str = "weight") -> np.dtype:
    """numpy dtype of a supported torch dtype; ``TypeError`` naming ``name`` otherwise."""
    if dtype not in TORCH_TO_NUMPY:
        raise TypeError(f"{name} must have dtype {_SUPPORTED}, got {name}.dtype={dtype}")
    return TORCH_TO_NUMPY[dtype]


def check_weight_tensor(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """A tensor products can use: dense (strided), with data, of a supported dtype.

    Raises
    ------
    TypeError
        For sparse (or other non-strided) layouts and unsupported dtypes.
    ValueError
        For a tensor on the meta device (shapes only, no values).
    """
    if weight.layout != torch.strided:
        raise TypeError(
            f"{name} must be a dense (strided) tensor, got layout {weight.layout}; "
            f"pass {name}.to_dense()"
        )
    if weight.is_meta:
        raise ValueError(
            f"{name} is on the meta device, which holds no values; materialise it first "
            f"(e.g. module.to_empty(device='cpu'), then initialise or load its parameters)"
        )
    numpy_dtype(weight.dtype, name)
    return weight


def as_weight_tensor(weight: object, name: str = "weight") -> torch.Tensor:
    """A torch weight is used as given (autograd and device kept); a numpy one is copied.

    Raises
    ------
    TypeError
        If ``weight`` is not a tensor or ndarray, or its dtype or layout is unsupported.
    ValueError
        If it is a tensor on the meta device.
    """
    if isinstance(weight, np.ndarray):
        dtype = weight.dtype.newbyteorder("=")
        if dtype not in NUMPY_TO_TORCH:
            raise TypeError(
                f"{name} must have dtype {_SUPPORTED}, got {name}.dtype={weight.dtype}"
            )
        # A private, native-endian, contiguous, writable copy: the caller keeps their array.
        return torch.from_numpy(np.array(weight, dtype=dtype, order="C", copy=True))
    if isinstance(weight, torch.Tensor):
        return check_weight_tensor(weight, name)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(weight).__name__}")


def result_dtype(op_dtype: np.dtype, data_dtype: np.dtype, name: str) -> np.dtype:
    """numpy promotion of the operator's and the data's dtype, restricted to supported ones.

    A float32 operator applied to float64 data computes in float64, a real operator applied
    to complex data computes in complex: exactly what ``A @ x`` does for a dense matrix ``A``.
    """
    if data_dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers, got dtype {data_dtype}")
    dtype = np.result_type(op_dtype, data_dtype)
    if dtype not in NUMPY_TO_TORCH:
        raise TypeError(
            f"{name} of dtype {data_dtype} promotes with the operator's {op_dtype} to {dtype}, "
            f"which is not supported ({_SUPPORTED})"
        )
    return dtype


def to_tensor(array: np.ndarray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """A tensor view or copy of ``array`` in ``dtype`` on ``device``; never writes to ``array``.

    Handles non-contiguous, negative-strided, Fortran-ordered, big-endian and read-only input.
    Read-only arrays are copied so that the tensor never aliases memory torch may not own.
    """
    flags = array.flags
    ready = array.dtype == dtype and flags.c_contiguous and flags.aligned and flags.writeable
    tensor = torch.from_numpy(
        array if ready else np.require(array, dtype=dtype, requirements=("C", "A", "W"))
    )
    return tensor if device.type == "cpu" else tensor.to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """numpy array of a (detached) tensor, moved to host memory if needed."""
    if tensor.is_cpu and not tensor.requires_grad and not tensor.is_conj():
        return tensor.numpy()  # the common case, without three no-op calls
    return tensor.detach().resolve_conj().cpu().numpy()


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero tensor; on the CPU backed by calloc'd numpy memory.

    The kernel hands out calloc'd pages already zeroed, on first touch, so a large, mostly
    written result skips ``torch.zeros``' separate memset pass (about 1.5x faster here).
    """
    if device.type == "cpu":
        return torch.from_numpy(np.zeros(shape, dtype=numpy_dtype(dtype, "dtype")))
    return torch.zeros(shape, dtype=dtype, device=device)
