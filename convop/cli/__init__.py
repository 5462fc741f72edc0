"""The ``convop`` command: demo, convolution matrices, deblurring, deconvolution, calibration.

Five subcommands, each a thin layer over the library and each in its own module:

- ``convop demo`` (``_demo.py``): blur and noise scikit-image's camera photo (or the
  built-in Shepp-Logan phantom), deblur it by Tikhonov (scipy's ``lsqr`` and ``cg``
  preconditioned by :func:`convop.preconditioner`) and by total variation on a
  :class:`~convop.operator.ConvOperator`, print PSNR (:func:`convop.data.psnr`) and
  timings, write a figure;
- ``convop matrix`` (``_matrix.py``): the exact sparse matrix of a convolution (a kernel plus
  PyTorch's arguments, or a saved ``nn.Conv*`` module), built with
  :meth:`~convop.operator.ConvOperator.tosparse` and written with :func:`convop.save_matrix`;
- ``convop deblur`` (``_deblur.py``): deblur an image file, gray or colour (each channel on
  its own), with a given or built-in kernel, by total variation or Tikhonov, its memory and
  time estimated first by :meth:`~convop.operator.ConvOperator.estimate` (``_guards.py``);
- ``convop deconvolve`` (``_deconvolve.py``): deconvolve a microscope image or stack (TIFF,
  ``.npy``) with its measured PSF by :func:`convop.richardson_lucy` (or RL-TV, Tikhonov,
  total variation) on the extended-domain model; stack files are read and written by
  ``convop._io.stacks``, the PSF prepared by ``_psf.py``, the files, operator and guards
  settled by ``_deconvolve_plan.py``; under ``mpiexec`` each rank reads and deconvolves
  its slab (``_deconvolve_mpi.py``);
- ``convop calibrate`` (``_calibrate.py``): measure this machine's constants for
  ``method='auto'`` with :func:`convop.calibrate`, which keeps them in a cache file.

``_parser.py`` holds the parser class and the argument types, ``_solve.py`` the solvers with
their progress bars, ``_scales.py`` the units deblur solves in; images and kernels are read
by the library (:mod:`convop.imaging`). No option may be abbreviated. No subcommand writes
over one of its inputs.
matplotlib, Pillow, tifffile, mpi4py and tqdm are imported only by the subcommands that use
them (pylops never; mpi4py only under an MPI launcher).

Failures never end in a traceback. Bad arguments, missing, damaged or refused files,
configurations convop rejects, a missing optional dependency (Pillow for PNG and JPEG
images, tifffile for TIFF stacks) and the guards (memory, expected time) end in one line
``convop: error: ...`` on stderr and exit status 2: the library's own message, after the
option or input it concerns where the message does not say (``--size: n must be >= 8, got
n=4``); a failure of the work itself that the command explains (a calibration the machine
was too busy for) in one line and exit status 1, as is anything unexpected (a failure
inside torch such as an allocation that fails, or a bug), in one line ``convop: error:
TYPE: ...``; an interrupt in exit status 130. Warnings are one line ``convop: warning:
...`` each. Under ``mpiexec``, every rank of ``convop deconvolve`` fails alike and rank 0
alone prints the line.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import warnings
from collections.abc import Iterator, Sequence

from .. import __version__
from . import _calibrate, _deblur, _deconvolve, _demo, _matrix
from ._parser import CommandError, CommandFailure, Formatter, Parser, UsageError, one_line, warn

#: Exit status for bad arguments, bad or refused input and the guards (as argparse uses).
EXIT_USAGE = 2
#: Exit status for failures of the work itself (a calibration the machine was too busy
#: for) and unexpected ones (inside torch, scipy, numpy, or a bug).
EXIT_FAILURE = 1
#: Exit status after an interrupt (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130
#: The failures that end in :data:`EXIT_USAGE`: the command's own refusals and the
#: library's (refused input, guards, missing extras).
USAGE_ERRORS = (CommandError, ValueError, TypeError, MemoryError, OSError, ImportError)
#: The subcommands, in the order ``--help`` lists them: each module has the subcommand's
#: ``NAME``, ``HELP``, ``DESCRIPTION``, ``EPILOG``, ``add_arguments(parser)`` and ``run(args)``.
SUBCOMMANDS = (_demo, _matrix, _deblur, _deconvolve, _calibrate)

_EXIT_STATUS = """\
exit status:
  0 success, 2 bad arguments, bad or refused input and the memory/time guards,
  1 failures of the work (a calibration the machine was too busy for) and unexpected
  ones (inside torch, or a bug), 130 interrupted; every failure is one line
  "convop: error: ..." on stderr
"""


def examples(epilog: str) -> list[str]:
    """The example lines of a help text's ``examples:`` section (``  convop ...``)."""
    return [line.strip() for line in epilog.splitlines() if line.startswith("  convop ")]


def _epilog() -> str:
    """``convop --help``'s epilog: the first example of each subcommand, and the exit status."""
    lines = [examples(subcommand.EPILOG)[0] for subcommand in SUBCOMMANDS]
    lines.append("convop SUBCOMMAND --help  options of one subcommand")
    rows = [re.split(r" {2,}", line, maxsplit=1) for line in lines]  # [command, what]
    width = max(len(row[0]) for row in rows if len(row) == 2) + 2
    text = "".join(f"  {row[0]:<{width}}{row[1]}".rstrip() + "\n" if len(row) == 2
                   else f"  {row[0]}\n" for row in rows)  # fmt: skip
    return f"examples:\n{text}\n{_EXIT_STATUS}"


def build_parser() -> argparse.ArgumentParser:
    """The ``convop`` argument parser with its subcommands (no abbreviated options)."""
    parser = Parser(
        prog="convop",
        description="Convolutions as exact lazy linear operators: a deblurring demo, the\n"
        "sparse matrix of any PyTorch convolution, image deblurring, the deconvolution of\n"
        "microscope stacks, and the calibration of method='auto' on this machine.",
        epilog=_epilog(),
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"convop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    for subcommand in SUBCOMMANDS:
        options = commands.add_parser(
            subcommand.NAME,
            help=subcommand.HELP,
            description=subcommand.DESCRIPTION,
            epilog=subcommand.EPILOG,
            formatter_class=Formatter,
        )
        subcommand.add_arguments(options)
        options.set_defaults(run=subcommand.run)
    return parser


def _fail(message: object, status: int = EXIT_USAGE, args: object = None) -> int:
    """Print ``message`` as one line ``convop: error: ...`` on stderr; return ``status``.

    Silent where the subcommand set ``args.silent`` (an MPI rank other than 0, whose
    failure rank 0 reports).
    """
    if getattr(args, "silent", False):
        return status
    text = one_line(message) or type(message).__name__
    print(f"convop: error: {text}", file=sys.stderr)
    return status


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each Python warning as one line ``convop: warning: CATEGORY: message``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        warn(f"{category.__name__}: {message}")

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``convop`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success (``--help`` and ``--version`` included); 2 for bad
        arguments, missing, damaged or refused files, configurations convop rejects, a
        missing optional dependency and the guards (memory, expected time); 1 for failures
        of the work itself (a calibration the machine was too busy for) and unexpected ones
        (inside torch, such as an allocation that fails, or a bug); 130 when interrupted.
        Every failure is one line ``convop: error: ...`` on stderr (unexpected ones name the
        exception type), never a traceback.

    See Also
    --------
    convop.save_matrix, convop.conv2d, convop.from_module, convop.imaging, convop.calibrate

    Examples
    --------
    >>> from convop.cli import main
    >>> main(["--version"])
    convop ...
    0
    >>> main(["matrix", "--kernel", "gaussian:4", "--input-shape", "1,8,8", "B.npz"])
    2
    """
    args = None
    try:
        with _one_line_warnings():
            args, unknown = build_parser().parse_known_args(argv)
            if unknown:  # said here, to point at the subcommand's --help
                raise UsageError(
                    f"unrecognized arguments: {' '.join(unknown)} "
                    f"(see 'convop {args.command} --help')"
                )
            return args.run(args)
    except SystemExit as exit_:  # argparse's --help and --version
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    except KeyboardInterrupt:
        print("convop: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandFailure as error:  # the work failed, and the command says why
        return _fail(error, EXIT_FAILURE, args)
    except USAGE_ERRORS as error:
        return _fail(error, EXIT_USAGE, args)
    except Exception as error:  # unexpected: still one line, naming what failed
        return _fail(f"{type(error).__name__}: {error}", EXIT_FAILURE, args)
