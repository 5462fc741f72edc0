"""``convop matrix``: the exact sparse matrix of a convolution, written as .npz or .mtx.

``--module`` files are read by torch's restricted unpickler (``weights_only=True``), which
accepts torch's six conv classes (:data:`convop.constructors.MODULE_KINDS`) and plain data
only and runs no code from the file; what it refuses is named from torch's own scan of the
file (``get_unsafe_globals_in_checkpoint``, which reads and runs nothing). Full unpickling
happens only with the loudly named ``--unsafe-unpickle``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch import nn

from .. import constructors
from .._shared.memory import format_bytes
from ..constructors import MODULE_KINDS, from_module
from ..geometry import PADDING_MODES
from ..imaging import KERNEL_SPECS, require_finite
from ..operator import ConvOperator
from ._parser import (
    DTYPES,
    CommandError,
    byte_count,
    concerning,
    input_shape,
    int_or_tuple,
    kernel_weight,
    output_path,
    padding,
    positive_int,
    refuse_overwriting,
    warn,
)

#: The only classes a ``--module`` file may contain (besides tensors and plain data).
CONV_MODULES = list(MODULE_KINDS)
#: PyTorch's conv arguments, as attributes of the parsed arguments.
CONV_OPTIONS = ("stride", "padding", "dilation", "groups", "padding_mode", "output_padding")
#: What ``--unsafe-unpickle`` means, in every message that suggests it.
UNSAFE = "pass --unsafe-unpickle for a file you trust (full unpickling can run arbitrary code)"

NAME = "matrix"
HELP = "write the exact sparse matrix of a convolution (.npz or .mtx)"

DESCRIPTION = """\
Build the exact sparse matrix B of a convolution, y = B @ x for one flattened sample
(x = tensor.reshape(-1) of shape (C, *spatial)), and write it as scipy .npz or Matrix Market
.mtx (MATLAB, Julia, R, SuiteSparse, ...). Give either a kernel and PyTorch's conv arguments,
or a conv module saved with torch.save(module). Prints shape, nnz, density and file size.

Module files are read with torch.load(weights_only=True): only torch's own nn.Conv1d/2d/3d
and nn.ConvTranspose1d/2d/3d (no subclasses), tensors and plain data; nothing in the file
is run. Matrices over the memory limit are refused before they are built; a progress bar
shows for long builds, on a terminal only."""

EPILOG = """\
kernel:
  KERNEL.npy               PyTorch's weight layout (C_out, C_in/groups, *k), or
                           (C_in, C_out/groups, *k) with --transposed; a single-channel
                           kernel with only the spatial dimensions is accepted as well
  gaussian:SIZE[:SIGMA]    normalised 2-d Gaussian, odd SIZE, SIGMA default SIZE/6
  motion:LENGTH[:ANGLE]    normalised 2-d linear motion blur, odd LENGTH, ANGLE in degrees

examples:
  convop matrix --kernel gaussian:5 --input-shape 1,64,64 --padding same B.npz
  convop matrix --kernel w.npy --input-shape 3,32,32 --stride 2 --padding 1,0 B.mtx
  convop matrix --kernel w.npy --input-shape 4,16 --transposed --stride 2 B.npz
  convop matrix --module layer.pt --input-shape 3,32,32 B.mtx
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``convop matrix``'s options."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--kernel", metavar="SPEC", help=f"the kernel: {KERNEL_SPECS}")
    source.add_argument(
        "--module",
        metavar="MODULE.pt",
        help="an nn.Conv1d/2d/3d or nn.ConvTranspose1d/2d/3d saved with "
        "torch.save(module), read with torch.load(weights_only=True): other classes "
        "are refused and nothing in the file is run",
    )
    parser.add_argument(
        "--input-shape",
        type=input_shape,
        required=True,
        metavar="C,H[,W[,D]]",
        help="shape of one input sample: channels, then 1 to 3 spatial sizes",
    )
    tuple_help = "an int or one per spatial dimension, e.g. 2 or 2,1 (default {})"
    parser.add_argument("--stride", type=int_or_tuple, metavar="S", help=tuple_help.format(1))
    parser.add_argument(
        "--padding",
        type=padding,
        metavar="P",
        help="an int, one per spatial dimension (1,0), same or valid; "
        "transposed: ints only (default 0)",
    )
    parser.add_argument("--dilation", type=int_or_tuple, metavar="D", help=tuple_help.format(1))
    parser.add_argument(
        "--groups",
        type=positive_int,
        metavar="G",
        help="channel groups, dividing both channel counts (default 1)",
    )
    parser.add_argument(
        "--padding-mode",
        choices=PADDING_MODES,
        metavar="MODE",
        help=f"one of {', '.join(PADDING_MODES)} (default zeros)",
    )
    parser.add_argument(
        "--transposed",
        action="store_true",
        help="a transposed convolution (conv_transposeNd); weight layout (C_in, C_out/groups, *k)",
    )
    parser.add_argument(
        "--output-padding",
        type=int_or_tuple,
        metavar="OP",
        help="with --transposed: " + tuple_help.format(0),
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="cast the weight (default: as stored; float64 for "
        "gaussian/motion and integer kernels)",
    )
    parser.add_argument(
        "--max-bytes",
        type=byte_count,
        default=None,
        metavar="N",
        help="refuse to build a matrix needing more memory, e.g. 2G "
        "(default: half the memory available)",
    )
    parser.add_argument(
        "--unsafe-unpickle",
        action="store_true",
        help="read --module with full unpickling (torch.load(weights_only=False)), for a "
        "file the safe reader refuses (e.g. a conv subclass): this CAN RUN ARBITRARY CODE "
        "from the file; use only files you trust",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown on a terminal only)"
    )
    parser.add_argument(
        "output",
        metavar="OUTPUT",
        help="file to write: .npz or .mtx (not the kernel or module file, by any name)",
    )


# ---------------------------------------------------------------------- --module files
def _load_module(spec: str, *, unsafe: bool) -> nn.Module:
    """A conv module saved with ``torch.save(module)``.

    Read by torch's restricted unpickler (only :data:`CONV_MODULES`, tensors and plain
    data), or fully unpickled when ``unsafe``.
    """
    path = Path(spec)
    if not path.is_file():
        raise CommandError(f"module file not found: {spec!r}")
    serialization = torch.serialization
    if unsafe:
        warn(
            f"--unsafe-unpickle: fully unpickling {spec!r}, which can run arbitrary code "
            f"from the file"
        )
        allowed = contextlib.nullcontext()
    elif hasattr(serialization, "safe_globals"):
        allowed = serialization.safe_globals(CONV_MODULES)
    else:  # torch < 2.5
        raise CommandError(
            f"reading --module files safely needs torch >= 2.5, found torch "
            f"{torch.__version__}: upgrade torch, or {UNSAFE}"
        )
    try:
        with allowed:
            module = torch.load(path, weights_only=not unsafe, map_location="cpu")
    except Exception as error:  # a damaged or foreign file can fail in any way
        raise _load_error(spec, error, safe=not unsafe) from None
    if not isinstance(module, nn.Module):
        hint = ""
        if isinstance(module, dict):
            hint = " (a state_dict holds no configuration; save the module itself)"
        raise CommandError(
            f"{spec!r} must hold a conv module saved with torch.save(module), "
            f"got {type(module).__name__}{hint}"
        )
    return module


def _load_error(spec: str, error: Exception, *, safe: bool) -> CommandError:
    """Why ``torch.load`` failed on a ``--module`` file.

    What the restricted unpickler refuses, by torch's scan of the file (it runs nothing), or
    the file is damaged.
    """
    refused: list[str] = []
    if safe:
        try:
            with torch.serialization.safe_globals(CONV_MODULES):
                refused = torch.serialization.get_unsafe_globals_in_checkpoint(spec)
        except Exception as scan_error:  # not even a checkpoint: say what the scan found
            error = scan_error
    if refused:
        classes = ", ".join(f"nn.{cls.__name__}" for cls in CONV_MODULES)
        return CommandError(
            f"refused to load {spec!r}: it needs {', '.join(refused)}, which --module files "
            f"may not contain. They are read with torch.load(weights_only=True), which accepts "
            f"only {classes} (not subclasses), tensors and plain data, and runs no code from "
            f"the file: save a plain torch conv layer with torch.save(layer), or {UNSAFE}"
        )
    return CommandError(
        f"cannot load a torch module from {spec!r} (damaged, or not written by "
        f"torch.save): {type(error).__name__}: {error}"
    )


# ---------------------------------------------------------------------- the operator
def _constructor(ndim: int, transposed: bool):
    """convop's constructor of that kind, named like PyTorch's (conv2d, conv_transpose3d)."""
    return constructors.CONSTRUCTORS[ndim, transposed]


def _build_operator(args: argparse.Namespace) -> tuple[ConvOperator, str]:
    """The operator described by ``convop matrix``'s arguments, and where it came from."""
    ndim = len(args.input_shape) - 1
    if args.module is not None:
        given = [f"--{o.replace('_', '-')}" for o in CONV_OPTIONS if getattr(args, o) is not None]
        if given or args.transposed:
            flags = ", ".join(given + (["--transposed"] if args.transposed else []))
            raise CommandError(
                f"{flags} cannot be used with --module: the module's own configuration is used"
            )
        module = _load_module(args.module, unsafe=args.unsafe_unpickle)
        if args.dtype is not None:
            module = module.to(getattr(torch, args.dtype))
        op = from_module(module, args.input_shape)
        require_finite(op.weight.detach().numpy(), f"the weight of module {args.module!r}")
        return op, f"module {args.module}"
    if args.unsafe_unpickle:
        raise CommandError("--unsafe-unpickle applies to --module only")
    weight = kernel_weight(args.kernel, ndim, args.dtype, args.max_bytes)
    options = {o: getattr(args, o) for o in CONV_OPTIONS if getattr(args, o) is not None}
    if args.transposed:
        mode = options.pop("padding_mode", "zeros")
        if mode != "zeros":
            raise CommandError(
                f"--padding-mode {mode} is not available with --transposed: "
                f"PyTorch's transposed convolutions pad with zeros only"
            )
    elif "output_padding" in options:
        raise CommandError("--output-padding applies to --transposed convolutions only")
    build = _constructor(ndim, args.transposed)
    return build(weight, args.input_shape, **options), f"kernel {args.kernel}"


def _build_progress(quiet: bool) -> bool | None:
    """``tosparse``'s ``progress``: its own choice (long builds) on a terminal, else off."""
    terminal = sys.stderr is not None and sys.stderr.isatty()
    return None if terminal and not quiet else False


def run(args: argparse.Namespace) -> int:
    from ..matrix_io import FORMATS, save_matrix

    output = output_path(args.output, tuple(FORMATS), "OUTPUT")
    refuse_overwriting(
        output, "OUTPUT", {"the kernel file": args.kernel, "the module file": args.module}
    )
    op, source = _build_operator(args)
    m, n = op.shape
    with concerning("--max-bytes"):  # the memory guard names tosparse's max_bytes
        matrix = op.tosparse("csr", max_bytes=args.max_bytes, progress=_build_progress(args.quiet))
    save_matrix(output, matrix, comment=repr(op))
    print(
        f"{op.name} from {source}: input {op.input_shape} -> output {op.output_shape}, "
        f"{op.geometry.describe()}, {op.dtype}"
    )
    print(f"wrote {output} ({FORMATS[output.suffix.lower()]})")
    print(f"  shape    {m} x {n}")
    print(f"  nnz      {matrix.nnz}")
    print(f"  density  {matrix.nnz / (m * n):.3g}")
    print(f"  file     {format_bytes(output.stat().st_size)}")
    if op.bias is not None:
        print(
            "note: the layer's bias is not part of the (linear) matrix and is not saved: "
            "the layer computes B @ x + bias, with bias its per-channel bias repeated "
            "over the output positions (op.bias in Python)"
        )
    return 0
