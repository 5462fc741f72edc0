"""When the cost model cannot tell: time both methods on the first product of a batch size.

The model of :mod:`convop._auto.cost` estimates one product on one sample, and its constants are
calibrated on small problems. Batches change the balance in ways a per-sample model does not
see: one long 1-D transform runs several times slower per sample than 64 at once, while a
batched direct 3-D convolution gets faster per sample as the GEMMs grow. Measured here: a
1-D blur of 4096 samples, k=31, is 2x faster by FFT on one sample and 17x faster on 64; a
4->4 3x3x3 layer on 16^3 (float32) is about even on one sample and 4x faster direct on 64.

So where the two estimates lie within :data:`RATIO` of each other, "auto" settles the choice
by measurement, as cuDNN's benchmark mode and FFTW's planners do: the first product of each
batch size (rounded up to a power of two), forward and adjoint separately, runs both
methods (:func:`race`) and the faster one is kept for that size. Further products pay
nothing. Where the estimates are far apart the model's choice stands, and with
``CONVOP_CALIBRATE=0`` nothing is ever timed (see :mod:`convop._auto.calibrate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

#: Estimates closer than this factor are settled by :func:`race`.
RATIO = 4.0
#: A race goes on while its methods' best times are closer than this factor ...
CLOSE = 1.5
#: ... for at most this many timed rounds (one run of each method per round) ...
ROUNDS = 5
#: ... and only while its timed runs took less than this many seconds in all.
BUDGET = 0.25


def uncertain(direct: float, fft: float) -> bool:
    """Whether estimates of ``direct`` and ``fft`` seconds are within :data:`RATIO`.

    Examples
    --------
    >>> uncertain(1e-3, 3e-3), uncertain(1e-3, 5e-3)
    (True, False)
    """
    return max(direct, fft) < RATIO * min(direct, fft)


def size_class(batch: int) -> int:
    """The batch size rounded up to a power of two: one race per class.

    Examples
    --------
    >>> [size_class(b) for b in (1, 2, 3, 64, 65)]
    [1, 2, 4, 64, 128]
    """
    return 1 << max(batch - 1, 0).bit_length()


def race(
    run: Callable[[str], torch.Tensor], device: torch.device
) -> tuple[str, torch.Tensor, dict[str, float]]:
    """``(method, its result, seconds per method)`` of the faster of two products.

    ``run(method)`` is the product by ``'direct'`` or ``'fft'``. Each method runs once
    untimed first (the FFT spectrum, torch's plans and primitives are made then), then
    timed in rounds of one run each, the least time of each counting: while the two are
    within :data:`CLOSE`, for at most :data:`ROUNDS` rounds and :data:`BUDGET` seconds of
    timed runs (a close call between fast products gets the repeats that this machine's
    noise needs; a slow product is not run again). Either result is exact; the fastest
    run's result is returned, and no other is kept meanwhile. A method whose product
    raises ``MemoryError`` (an FFT spectrum or workspace too large for the memory guard)
    loses; if both do, the error is raised. On a GPU every timed run is synchronised.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    seconds = dict.fromkeys(("direct", "fft"), math.inf)
    failed: dict[str, MemoryError] = {}
    for method in seconds:
        try:
            run(method)
        except MemoryError as error:
            failed[method] = error
    if len(failed) == len(seconds):
        raise failed["direct"]
    kept: tuple[float, str, torch.Tensor] | None = None
    spent = 0.0
    for _ in range(ROUNDS):
        for method in (m for m in seconds if m not in failed):
            sync(device)
            start = time.perf_counter()
            out = run(method)
            sync(device)
            took = time.perf_counter() - start
            spent += took
            seconds[method] = min(seconds[method], took)
            if kept is None or took < kept[0]:
                kept = (took, method, out)
            del out
        low, high = sorted(seconds.values())
        if high >= CLOSE * low or spent >= BUDGET:
            break
    return kept[1], kept[2], seconds


def describe(raced: dict[tuple, str]) -> str:
    """``'timed: batch 64 fft, batch 64 adjoint direct'``, or ``''`` if nothing was timed.

    ``raced`` maps ``(dtype, device, size class, adjoint)`` to the method kept.
    """
    keys = sorted(raced, key=lambda key: (str(key[0]), str(key[1]), key[2], key[3]))
    mixed = len({key[:2] for key in keys}) > 1  # then say which dtype and device
    parts = [
        f"batch {size}{' adjoint' if adjoint else ''} {raced[dtype, device, size, adjoint]}"
        + (f" ({str(dtype).removeprefix('torch.')}, {device})" if mixed else "")
        for dtype, device, size, adjoint in keys
    ]
    return f"timed: {', '.join(parts)}" if parts else ""
