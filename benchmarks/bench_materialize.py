"""Explicit matrices of a convolution: convop against the real alternatives.

Usage::

    python benchmarks/bench_materialize.py             # full run, about 4 minutes on 2 cores
    python benchmarks/bench_materialize.py --quick     # under a minute, slowest methods skipped
    python benchmarks/bench_materialize.py --markdown  # the table as Markdown (for the docs)

Every method builds the *same* float64 matrix of the same convolution, and the script checks
that it does: each alternative's result is compared with convop's (``np.testing`` row block by
row block for dense results, the difference of the two sparse arrays for sparse ones), and
convop's own results are compared with ``torch.nn.functional.conv2d`` applied to random inputs.

Methods
-------
convop
    ``op.todense()`` / ``op.tosparse()`` of ``convop.conv2d(weight, input_shape, padding=...)``.
forum Toeplitz
    The doubly-block-Toeplitz construction of the well-known forum answer, re-implemented here:
    one ``scipy.linalg.toeplitz`` per kernel row, placed block by block with Python loops over
    kernel rows and output rows, one ``(output pixels, input pixels)`` block per pair of
    channels (its ``toeplitz_mult_ch``). Stride 1, 'valid' (no) padding only. The anchor of the
    dense cases.
identity probe
    ``F.conv2d(torch.eye(n).reshape(n, *input_shape), weight)`` transposed: every column of the
    matrix from one batched convolution. Skipped when its estimated memory exceeds 8 GiB.
jacrev
    ``torch.func.jacrev`` of the convolution at zero, reshaped to a matrix.
pylops
    ``Convolve2D(dims, h=flipped kernel, offset=kernel centre)``. PyLops convolves (flips the
    kernel) and keeps the input size ('same'), so with the flipped kernel and the centred
    offset it is exactly ``F.conv2d(..., padding='same')``. For the 'valid' dense case it is
    restricted to the valid output rows (two ``pylops.Restriction`` along both image axes),
    so it is the same matrix as every other method of that case; ``.todense()`` of that
    (wide) operator runs ``rmatmat`` on a sparse identity, one column at a time.
    ``.tosparse()`` probes with one unit vector per column in Python: it is run on small
    images only and its time is extrapolated to the large one (clearly marked). With the
    default ``method='fft'`` it also stores round-off noise as entries (see the nnz column).
memory floor
    Not a matrix: a lower bound for any method on this machine. Fresh memory of the result's
    size, written as little as the result needs (dense: one write per 4 KiB page of zeroed
    memory; sparse: the CSR-sized arrays written in full).

Measurements
------------
Each (case, method) runs in a fresh subprocess (this script with the hidden ``--one`` option).
It imports everything and builds its inputs, reads its resident memory (``/proc/self/statm``),
then calls the method once (the *cold* call: the first touch of fresh memory is expensive on
small VMs), then ``--repeats`` more times (fewer if one call takes longer than the per-method
budget) and reports their median. *Peak* is ``ru_maxrss`` after all calls minus the resident
memory before the first one, i.e. the most memory the method ever held beyond its inputs,
result included; *result* is the size of the result (dense array bytes, or CSR
data + indices + indptr bytes). Results are verified only after the peak has been read.

On a 2-core machine another busy process ruins torch timings (an OpenMP thread that loses
its core stalls every parallel region, 10-40x slower here), so the script measures the share
of the CPUs other processes used during each measurement, repeats a disturbed measurement
once (within a total of 2 extra minutes) and otherwise marks it UNRELIABLE.

The ratio column is the anchor's median time divided by the method's median time (> 1: faster
than the anchor). Anchors: the forum construction for the dense cases; for the 32 -> 64 sparse
layer, the goal rate of 100 M nonzeros/s (the time that rate would need); for the
single-channel sparse cases, PyLops' ``tosparse()`` with its default FFT method.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy
import scipy.linalg
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import convop

MARKER = "@@RESULT "  # prefix of the subprocess's one JSON line
GIB = 1 << 30
PROBE_LIMIT = 8 * GIB  # skip the identity probe above this estimated memory
BUDGET_S = 20.0  # warm repeats of one method stop after about this long
SUBPROCESS_TIMEOUT_S = 300
RETRY_BUDGET_S = 120.0  # at most this much extra time is spent re-measuring disturbed methods
BUSY = 0.1  # flag a measurement when other processes used more than this share of the CPUs
GOAL_RATE = 1e8  # tosparse() goal: nonzeros per second
GOAL_DENSE_SPEEDUP, GOAL_DENSE_PEAK, GOAL_SPARSE_PEAK = 5.0, 1.3, 1.5


# ---------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One convolution whose matrix every method of the case builds."""

    key: str
    kind: str  # 'dense' or 'sparse'
    c_in: int
    c_out: int
    kernel: int
    size: int  # square images
    padding: str | int  # as convop.conv2d / F.conv2d take it
    methods: tuple[str, ...]
    anchor: str | None  # method whose median time is the ratio's reference
    quick: bool = True  # part of --quick

    @property
    def label(self) -> str:
        pad = f"'{self.padding}'" if isinstance(self.padding, str) else f"pad={self.padding}"
        k = self.kernel
        return f"{self.c_in}->{self.c_out}, {k}x{k} on {self.size}x{self.size}, {pad}"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.c_in, self.size, self.size)

    def weight(self) -> torch.Tensor:
        """A reproducible float64 weight, (C_out, C_in, k, k)."""
        generator = torch.Generator().manual_seed(self.size * 1000 + self.kernel + self.c_out)
        shape = (self.c_out, self.c_in, self.kernel, self.kernel)
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def op(self) -> convop.ConvOperator:
        return convop.conv2d(self.weight(), self.input_shape, padding=self.padding)


FORUM, PYFFT, FLOOR = "forum Toeplitz", "pylops fft", "memory floor"
DENSE_METHODS = ("convop", FORUM, "identity probe", "jacrev")
PYLOPS_SPARSE = ("pylops fft", "pylops direct")
SPARSE_ONE = ("convop", *PYLOPS_SPARSE)
# fmt: off
CASES = (
    #    key               kind      C_in C_out k  size padding  methods                anchor
    Case("dense-3to16",    "dense",  3,   16,   3, 32,  "valid", (*DENSE_METHODS, FLOOR), FORUM),
    Case("dense-9x9",      "dense",  1,   1,    9, 128, "valid", (*DENSE_METHODS, "pylops", FLOOR),
         FORUM),
    Case("sparse-32to64",  "sparse", 32,  64,   3, 64,  1,       ("convop", FLOOR),     "goal"),
    Case("sparse-9x9-32",  "sparse", 1,   1,    9, 32,  "same",  SPARSE_ONE,            PYFFT),
    Case("sparse-9x9-48",  "sparse", 1,   1,    9, 48,  "same",  SPARSE_ONE,            PYFFT,
         quick=False),
    Case("sparse-9x9-256", "sparse", 1,   1,    9, 256, "same",  ("convop",),           PYFFT),
)
# fmt: on
#: Methods too slow for --quick, per case.
QUICK_SKIP = {("dense-9x9", "jacrev"), ("dense-9x9", "pylops"), ("dense-3to16", "jacrev")}
#: The large single-channel case whose PyLops times are extrapolated from the small ones.
EXTRAPOLATED = ("sparse-9x9-256", ("sparse-9x9-32", "sparse-9x9-48"))


# ---------------------------------------------------------------------- the alternatives
def toeplitz_one_channel(kernel: np.ndarray, image: tuple[int, int]) -> np.ndarray:
    """Matrix of a 'valid' 2-d cross-correlation with ``kernel`` (the forum's algorithm).

    Each kernel row r gives a 1-d Toeplitz matrix (output columns x input columns); output
    row i reads input row i + r through it. Blocks are placed with Python loops.
    """
    kh, kw = kernel.shape
    h, w = image
    oh, ow = h - kh + 1, w - kw + 1
    row_matrices = [  # each (ow, w): first column (k[r, 0], 0, ...), first row (k[r], 0, ...)
        scipy.linalg.toeplitz(
            np.r_[kernel[r, 0], np.zeros(ow - 1)], np.r_[kernel[r], np.zeros(w - kw)]
        )
        for r in range(kh)
    ]
    blocks = np.zeros((oh, ow, h, w))  # (output row, output col, input row, input col)
    for r, block in enumerate(row_matrices):
        for i in range(oh):
            blocks[i, :, i + r, :] = block
    return blocks.reshape(oh * ow, h * w)


def forum_toeplitz(weight: np.ndarray, input_shape: tuple[int, int, int]) -> np.ndarray:
    """Multi-channel version: one ``toeplitz_one_channel`` block per (out, in) channel pair."""
    c_out, c_in, kh, kw = weight.shape
    _, h, w = input_shape
    pixels_out = (h - kh + 1) * (w - kw + 1)
    matrix = np.zeros((c_out, pixels_out, c_in, h * w))
    for o in range(c_out):
        for c in range(c_in):
            matrix[o, :, c, :] = toeplitz_one_channel(weight[o, c], (h, w))
    return matrix.reshape(c_out * pixels_out, c_in * h * w)


def identity_probe(weight: torch.Tensor, input_shape: tuple[int, ...], padding) -> np.ndarray:
    """All columns at once: conv of the n unit vectors as one batch, transposed (a view)."""
    n = math.prod(input_shape)
    with torch.no_grad():
        eye = torch.eye(n, dtype=weight.dtype).reshape(n, *input_shape)  # (n, C_in, H, W)
        columns = F.conv2d(eye, weight, padding=padding).reshape(n, -1)  # (n, m)
    return columns.numpy().T


def jacobian(weight: torch.Tensor, input_shape: tuple[int, ...], padding) -> np.ndarray:
    """``torch.func.jacrev`` of the convolution at zero, (C_out, H', W', C_in, H, W) -> (m, n)."""
    x0 = torch.zeros(input_shape, dtype=weight.dtype)  # (C_in, H, W), unbatched conv2d
    jac = torch.func.jacrev(lambda x: F.conv2d(x, weight, padding=padding))(x0)
    return jac.reshape(-1, math.prod(input_shape)).numpy()


def pylops_operator(case: Case, method: str):
    """PyLops' Convolve2D computing exactly convop's map for ``case`` (see the module doc)."""
    import pylops  # only where used: it adds ~0.6 s to every measuring subprocess

    kernel = case.weight()[0, 0].flip((0, 1)).numpy().copy()  # convolution flips the kernel
    centre = case.kernel // 2
    dims = (case.size, case.size)
    op = pylops.signalprocessing.Convolve2D(dims, kernel, offset=(centre, centre), method=method)
    if case.padding == "same":
        return op
    assert case.padding == "valid"
    keep = np.arange(centre, case.size - centre)  # valid outputs are the centred 'same' ones
    rows = pylops.Restriction(dims, keep, axis=0)
    cols = pylops.Restriction((len(keep), case.size), keep, axis=1)
    return cols @ rows @ op


def structural_nnz(case: Case) -> int:
    """Entries of the matrix, counted from the geometry: per dimension, the taps of each output
    position that land inside the image (stride 1, zero padding), squared for 2-d."""
    k, n = case.kernel, case.size
    pad = {"valid": 0, "same": (k - 1) // 2}.get(case.padding, case.padding)  # odd k only
    taps = sum(0 <= p + j - pad < n for p in range(n + 2 * pad - k + 1) for j in range(k))
    return case.c_out * case.c_in * taps**2


def memory_floor(case: Case) -> Callable[[], np.ndarray]:
    """A lower bound, not a matrix: take fresh memory of the result's size and write what any
    method must write, with torch's threads like convop. Dense: calloc'd (zeroed) pages, one
    write per 4 KiB page (the kernel zeroes each page on first touch). Sparse: CSR-sized
    memory (float64 data, int32 indices and indptr) written in full."""
    rows, cols = case.op().shape
    if case.kind == "dense":

        def touch() -> np.ndarray:
            out = np.zeros((rows, cols))  # calloc: pages are zeroed when first touched
            torch.from_numpy(out).view(-1)[::512].fill_(1.0)
            return out

        return touch
    words = (structural_nnz(case) * 12 + (rows + 1) * 4) // 8
    return lambda: torch.empty(words, dtype=torch.float64).fill_(1.0).numpy()


def builder(case: Case, method: str) -> Callable[[], object]:
    """A zero-argument function building the matrix; its set-up is not timed."""
    weight, shape = case.weight(), case.input_shape
    if method == "convop":
        op = case.op()
        return op.todense if case.kind == "dense" else op.tosparse
    if method == "forum Toeplitz":
        array = weight.numpy()
        return lambda: forum_toeplitz(array, shape)
    if method == "identity probe":
        return lambda: identity_probe(weight, shape, case.padding)
    if method == "jacrev":
        return lambda: jacobian(weight, shape, case.padding)
    if method == FLOOR:
        return memory_floor(case)
    if method == "pylops":
        return pylops_operator(case, "fft").todense
    if method in PYLOPS_SPARSE:
        return pylops_operator(case, method.split()[1]).tosparse
    raise ValueError(f"unknown method {method!r}")


def probe_bytes(case: Case) -> int:
    """Estimated peak of the identity probe: identity, output, and torch's float64 CPU conv
    unfolding every sample of the batch at once (C_in * k * k rows per output pixel)."""
    n = math.prod(case.input_shape)
    op = case.op()
    pixels_out = math.prod(op.output_shape[1:])
    return 8 * n * (n + op.shape[0] + case.c_in * case.kernel**2 * pixels_out)


# ---------------------------------------------------------------------- checks
def result_bytes(result) -> int:
    if sp.issparse(result):
        return result.data.nbytes + result.indices.nbytes + result.indptr.nbytes
    return result.nbytes


def check_against_torch(case: Case, result) -> float:
    """convop's own matrix times random inputs equals F.conv2d of them (relative error)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn((4, *case.input_shape), generator=generator, dtype=torch.float64)
    expected = F.conv2d(x, case.weight(), padding=case.padding).reshape(4, -1).numpy().T
    got = result @ x.reshape(4, -1).numpy().T  # (m, 4)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * scale)
    if sp.issparse(result):
        np.testing.assert_equal(result.nnz, structural_nnz(case))
    return float(np.abs(got - expected).max() / scale)


def check_against_convop(case: Case, result, tol: float) -> float:
    """Max |result - convop's matrix|, asserting it is at most ``tol``."""
    op = case.op()
    if sp.issparse(result):
        reference = op.tosparse()
        difference = (sp.csr_array(result) - reference).tocsr()
        np.testing.assert_allclose(difference.data, 0.0, rtol=0, atol=tol)
        return float(np.abs(difference.data).max(initial=0.0))
    reference = op.todense()
    np.testing.assert_equal(result.shape, reference.shape)
    worst = 0.0
    step = max(1, (1 << 23) // reference.shape[1])  # row blocks bound the temporaries
    for start in range(0, reference.shape[0], step):
        got, want = result[start : start + step], reference[start : start + step]
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def count_nonzeros(result) -> int:
    return int(result.nnz) if sp.issparse(result) else int(np.count_nonzero(result))


# ---------------------------------------------------------------------- one measurement
def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(case: Case, method: str, repeats: int, budget: float) -> dict:
    """Time and peak memory of one method, then verify its result (in this process)."""
    build = builder(case, method)
    gc.collect()
    before = resident_bytes()
    high_water_before = peak_bytes()
    start = time.perf_counter()
    result = build()
    cold = time.perf_counter() - start
    if cold * repeats > budget:
        repeats = max(1, int(budget / cold))
    times = []
    for _ in range(repeats):
        del result
        gc.collect()
        start = time.perf_counter()
        result = build()
        times.append(time.perf_counter() - start)
    high_water = peak_bytes()
    record = {
        "cold_s": cold,
        "median_s": statistics.median(times),
        "repeats": repeats,
        "times_s": times,
        "peak_bytes": high_water - before,
        # The high-water mark never moved: the true peak is below the one reported.
        "peak_is_bound": high_water == high_water_before,
        "result_bytes": result_bytes(result),
        "nnz": structural_nnz(case) if method == FLOOR else count_nonzeros(result),
        "shape": list(result.shape),
    }
    if method == FLOOR:
        checks = ["lower bound: fresh memory of the result's size, written (no matrix)"]
    elif method == "convop":
        checks = [f"= F.conv2d, rel err {check_against_torch(case, result):.0e}"]
    else:
        tol = 1e-10 * float(case.weight().abs().max())
        checks = [f"= convop, max abs diff {check_against_convop(case, result, tol):.0e}"]
    if record["peak_is_bound"]:
        checks.append("peak is an upper bound (below the high-water mark of the imports)")
    record["check"] = "; ".join(checks)
    return record


# ---------------------------------------------------------------------- driver
@dataclass
class Row:
    case: Case
    method: str
    record: dict | None = None
    note: str = ""
    extrapolated: bool = False
    other_load: float = 0.0  # share of the CPUs other processes used during the measurement

    @property
    def median(self) -> float | None:
        return None if self.record is None else self.record["median_s"]


def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of all cores since boot, from ``/proc/stat``."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz  # idle, iowait excluded


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet(longest: float = 60.0) -> None:
    """Wait (at most ``longest`` seconds) for a second in which other processes leave the CPUs
    idle enough for a reliable measurement."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        busy0, total0 = cpu_times()
        time.sleep(1.0)
        busy1, total1 = cpu_times()
        if busy1 - busy0 <= BUSY * (total1 - total0):
            return


def run_one(case: Case, method: str, repeats: int) -> Row:
    """Measure in a fresh subprocess; a crash (e.g. out of memory) becomes a note.

    Also measures the share of the cores that *other* processes used meanwhile (busy time
    minus the subprocess's own CPU time): torch's OpenMP threads stall when a core they run on
    is taken, so a measurement made under such load is flagged as unreliable.
    """
    command = [sys.executable, __file__, "--one", case.key, method, "--repeats", str(repeats)]
    busy0, total0 = cpu_times()
    child0 = children_cpu()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return Row(case, method, note=f"skipped: over {SUBPROCESS_TIMEOUT_S} s")
    busy1, total1 = cpu_times()
    other = max(0.0, busy1 - busy0 - (children_cpu() - child0)) / max(1e-9, total1 - total0)
    note = f"UNRELIABLE: other processes used {other:.0%} of the CPUs" if other > BUSY else ""
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            return Row(case, method, json.loads(line[len(MARKER) :]), note, other_load=other)
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Row(case, method, note=f"FAILED (exit {done.returncode}): {tail}", other_load=other)


def plan_rows(quick: bool, repeats: int) -> list[Row]:
    rows = []
    retry_until = time.monotonic() + RETRY_BUDGET_S  # extended by each measurement's own time
    for case in CASES:
        if quick and not case.quick:
            continue
        for method in case.methods:
            if quick and (case.key, method) in QUICK_SKIP:
                rows.append(Row(case, method, note="skipped in --quick"))
                continue
            if method == "identity probe" and probe_bytes(case) > PROBE_LIMIT:
                need = probe_bytes(case) / GIB
                rows.append(Row(case, method, note=f"skipped: needs ~{need:.0f} GiB (> 8)"))
                continue
            print(f"  {case.key:15s} {method} ...", file=sys.stderr, flush=True)
            start = time.monotonic()
            row = run_one(case, method, repeats)
            retry_until += time.monotonic() - start
            if row.note.startswith("UNRELIABLE") and time.monotonic() < retry_until:
                print(f"    retry: {row.note}", file=sys.stderr, flush=True)
                wait_for_quiet(min(30.0, retry_until - time.monotonic()))
                row = run_one(case, method, repeats)
            rows.append(row)
    return rows


def extrapolate(rows: list[Row]) -> list[Row]:
    """PyLops' tosparse() on the large single-channel image, from the small ones.

    Time: ``t ~ n**b`` (n pixels), ``b`` fitted on the two smallest-to-largest measured sizes
    (assumed 2 with one size: n probes of O(n) each). Entries: with 'fft' (almost) every
    entry is stored, ``nnz ~ n**2`` at the measured fill ratio; with 'direct' exactly convop's
    structural nonzeros (checked at the measured sizes). Peak memory: its measured bytes per
    stored entry (Python lists of index pairs and values) times the extrapolated entries.
    """
    target_key, small_keys = EXTRAPOLATED
    target = next(case for case in CASES if case.key == target_key)
    n_target = target.size**2
    convop_rows = {row.case.key: row for row in rows if row.method == "convop" and row.record}
    extra = []
    for method in PYLOPS_SPARSE:
        measured = [
            row
            for row in rows
            if row.case.key in small_keys and row.method == method and row.record is not None
        ]
        if not measured or target_key not in convop_rows:
            continue
        first, last = measured[0], measured[-1]
        n0, n1 = first.case.size**2, last.case.size**2
        if len(measured) >= 2:
            exponent, how = math.log(last.median / first.median) / math.log(n1 / n0), "fitted"
        else:
            exponent, how = 2.0, "assumed"
        nnz1 = last.record["nnz"]
        if method == "pylops fft":
            nnz = int(nnz1 / n1**2 * n_target**2)
        else:
            exact = all(
                row.record["nnz"] == convop_rows[row.case.key].record["nnz"] for row in measured
            )
            nnz = convop_rows[target_key].record["nnz"] if exact else int(nnz1 * n_target / n1)
        record = {
            "cold_s": None,
            "median_s": last.median * (n_target / n1) ** exponent,
            "repeats": 0,
            "nnz": nnz,
            "peak_bytes": last.record["peak_bytes"] / nnz1 * nnz,
            "check": "",
        }
        sizes = ", ".join(f"{row.case.size}^2" for row in measured)
        note = f"EXTRAPOLATED from {sizes}: t ~ n^{exponent:.2f} ({how}), peak ~ nnz"
        if any(row.note.startswith("UNRELIABLE") for row in measured):
            note = "UNRELIABLE (from disturbed measurements); " + note
        extra.append(Row(target, method, record, note, extrapolated=True))
    return extra


def ratio(row: Row, rows: list[Row]) -> float | None:
    """Anchor's median time / this row's median time."""
    if row.median is None:
        return None
    if row.case.anchor == "goal":
        return row.record["nnz"] / GOAL_RATE / row.median
    anchor = [r for r in rows if r.case is row.case and r.method == row.case.anchor]
    if not anchor or anchor[0].median is None:
        return None
    return anchor[0].median / row.median


def mib(n: float | None) -> str:
    return "" if n is None else f"{n / 2**20:,.0f}"


def table(rows: list[Row], markdown: bool) -> str:
    header = ["case", "method", "cold s", "median s (n)", "peak MiB", "result MiB", "peak/result",
              "nnz", "M nnz/s", "vs anchor", "check / note"]  # fmt: skip
    lines = []
    for row in rows:
        rec = row.record or {}
        peak, size = rec.get("peak_bytes"), rec.get("result_bytes")
        speed = ratio(row, rows)
        median = row.median
        rate = rec["nnz"] / median / 1e6 if median and row.case.kind == "sparse" else None
        anchor = row.method == row.case.anchor
        prefix = "~" if row.extrapolated else ""
        lines.append([
            row.case.label,
            row.method + (" (anchor)" if anchor else ""),
            "" if rec.get("cold_s") is None else f"{rec['cold_s']:.3f}",
            "" if median is None else f"{prefix}{median:.3f} ({rec['repeats']})",
            ("~" if row.extrapolated and peak else "") + mib(peak),
            mib(size),
            "" if peak is None or size is None else f"{peak / size:.2f}",
            "" if "nnz" not in rec else f"{prefix}{rec['nnz']:,}",
            "" if rate is None else f"{prefix}{rate:,.1f}",
            "" if speed is None else f"{prefix}{speed:.2f}x",
            "; ".join(filter(None, [rec.get("check", ""), row.note])),
        ])  # fmt: skip
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(x.replace("|", r"\|") for x in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    fmt = "  ".join(f"{{:{'<' if i < 2 or i == 10 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), *(fmt.format(*line) for line in lines)])


def goals(rows: list[Row]) -> str:
    """Plain statements of whether each goal is met by this run."""
    out = []
    for row in rows:
        if row.method != "convop" or row.record is None:
            continue
        rec, case = row.record, row.case
        peak = rec["peak_bytes"] / rec["result_bytes"]
        flag = " [under CPU load: unreliable]" if row.note.startswith("UNRELIABLE") else ""
        if case.kind == "dense":
            anchor = next(r for r in rows if r.case is case and r.method == case.anchor)
            if anchor.record is None:
                continue
            warm = anchor.median / row.median
            cold = anchor.record["cold_s"] / rec["cold_s"]
            met = warm >= GOAL_DENSE_SPEEDUP and peak <= GOAL_DENSE_PEAK
            out.append(
                f"todense() {case.label}: {warm:.1f}x faster than the forum construction "
                f"(cold calls: {cold:.1f}x; goal >= {GOAL_DENSE_SPEEDUP:.0f}x), peak "
                f"{peak:.2f}x the result (goal <= {GOAL_DENSE_PEAK}): "
                f"{'MET' if met else 'NOT MET'}{flag}"
            )
        elif case.anchor == "goal":
            rate, cold_rate = rec["nnz"] / rec["median_s"], rec["nnz"] / rec["cold_s"]
            met = rate >= GOAL_RATE and peak <= GOAL_SPARSE_PEAK
            out.append(
                f"tosparse() {case.label}: {rate / 1e6:.0f} M nonzeros/s (cold call: "
                f"{cold_rate / 1e6:.0f}; goal >= {GOAL_RATE / 1e6:.0f}), peak {peak:.2f}x "
                f"the CSR result (goal <= {GOAL_SPARSE_PEAK}): {'MET' if met else 'NOT MET'}{flag}"
            )
    return "\n".join(out)


def machine() -> str:
    import pylops

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    return (
        f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, torch threads "
        f"{torch.get_num_threads()}; Python {platform.python_version()}, torch "
        f"{torch.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, pylops "
        f"{pylops.__version__}, convop {convop.__version__}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Time and peak memory of building a convolution's explicit matrix with "
        "convop (todense/tosparse) and with the real alternatives (forum Toeplitz "
        "construction, identity probe, torch.func.jacrev, PyLops), verifying that every "
        "method builds the same matrix. Each measurement runs in a fresh subprocess."
    )
    parser.add_argument(
        "--quick", action="store_true", help="one warm repeat; skip the slowest methods (< 1 min)"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="warm repeats (default 3, 1 with --quick)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if args.one:
        case = next(c for c in CASES if c.key == args.one[0])
        record = measure(case, args.one[1], repeats, BUDGET_S)
        print(MARKER + json.dumps(record), flush=True)
        return
    print(f"machine: {machine()}")
    print(
        f"float64 throughout; {repeats} warm repeat(s) per method (fewer above {BUDGET_S:.0f} s)"
    )
    start = time.perf_counter()
    rows = plan_rows(args.quick, repeats)
    rows += extrapolate(rows)
    rows.sort(key=lambda row: [case.key for case in CASES].index(row.case.key))
    print(table(rows, args.markdown))
    print()
    print(goals(rows))
    worst = max((row.other_load for row in rows), default=0.0)
    quiet = "quiet" if worst <= BUSY else "NOT QUIET: flagged timings are unreliable"
    print(f"\nother processes' share of the CPUs during a measurement: max {worst:.0%} ({quiet})")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
