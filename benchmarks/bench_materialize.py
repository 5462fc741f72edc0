"""Explicit matrices of a convolution: convop against the real alternatives.

Usage::

    python benchmarks/bench_materialize.py             # full run, about 4 minutes on 2 cores
    python benchmarks/bench_materialize.py --quick     # under a minute, slowest methods skipped
    python benchmarks/bench_materialize.py --markdown  # the table as Markdown (for the docs)

Every method builds the *same* float64 matrix, checked: each alternative against convop's
(row blocks for dense results, the difference for sparse ones), convop's own against
``F.conv2d`` of random inputs and the structural nonzeros. Methods: ``convop``
(``todense()`` / ``tosparse()``); ``forum Toeplitz`` (the forum answer's doubly-block-Toeplitz
construction, re-implemented; 'valid' only; anchor of the dense cases); ``identity probe``
(``F.conv2d`` of an identity batch; skipped above 8 GiB); ``jacrev``; ``pylops``
(``Convolve2D``, flipped kernel, centred offset: 'same'; restricted to the valid rows for
'valid'; its ``tosparse()`` probes one column at a time, so it runs on small images and is
extrapolated to the large one; its fft method is the anchor of the single-channel sparse
cases); ``memory floor`` (fresh memory of the result's size, written as little as the
result needs: a lower bound for any method). Each (case, method) runs in a fresh process:
one cold call, then ``--repeats`` (fewer above 20 s); *peak* is ``ru_maxrss`` after them
less the resident memory before. A disturbed measurement is run once more after a quiet
second (2 extra minutes at most), else marked UNRELIABLE. Goals: 1. ``todense()`` >= 5x
the forum construction's speed, peak <= 1.3x the result; 2. ``tosparse()`` of the 32 -> 64
layer >= 100 M nonzeros/s (its anchor), peak <= 1.5x the CSR result.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import _harness as h  # benchmarks/, the script's own folder
import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import convop

GIB = 1 << 30
PROBE_LIMIT = 8 * GIB  # skip the identity probe above this estimated memory
BUDGET_S = 20.0  # warm repeats of one method stop after about this long
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
def measure(case: Case, method: str, report: h.Report) -> None:
    """Time and peak memory of one method, then its result verified (in this process)."""
    build, repeats = builder(case, method), report.repeats
    gc.collect()
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    high_water_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB
    start = time.perf_counter()
    result = build()
    cold = time.perf_counter() - start
    repeats = max(1, int(BUDGET_S / cold)) if cold * repeats > BUDGET_S else repeats
    times = []
    for _ in range(repeats):
        del result
        gc.collect()
        start = time.perf_counter()
        result = build()
        times.append(time.perf_counter() - start)
    high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if method == FLOOR:
        checks = ["lower bound: fresh memory of the result's size, written (no matrix)"]
    elif method == "convop":
        checks = [f"= F.conv2d, rel err {check_against_torch(case, result):.0e}"]
    else:
        tol = 1e-10 * float(case.weight().abs().max())
        checks = [f"= convop, max abs diff {check_against_convop(case, result, tol):.0e}"]
    if high_water == high_water_before:  # the true peak is below the one reported
        checks.append("peak is an upper bound (below the high-water mark of the imports)")
    nnz = structural_nnz(case) if method == FLOOR else count_nonzeros(result)
    report.data.append({"case": case.key, "method": method, "cold_s": cold,
                        "median_s": statistics.median(times), "repeats": repeats,
                        "peak_bytes": high_water - before, "result_bytes": result_bytes(result),
                        "nnz": nnz, "check": "; ".join(checks)})  # fmt: skip


def sections(args) -> list[h.Section]:
    """One section a (case, method) that runs; the others are skipped (see :func:`finish`)."""
    return [h.Section(f"{case.key} {method}", lambda report, c=case, m=method: measure(
                c, m, report), (1 if case.kind == "dense" else 2,))
            for case in CASES for method in case.methods
            if not skipped(case, method, args.quick)]  # fmt: skip


def skipped(case: Case, method: str, quick: bool) -> str:
    if quick and not case.quick:
        return "case not in --quick"
    if quick and (case.key, method) in QUICK_SKIP:
        return "skipped in --quick"
    if method == "identity probe" and probe_bytes(case) > PROBE_LIMIT:
        return f"skipped: needs ~{probe_bytes(case) / GIB:.0f} GiB (> 8)"
    return ""


def extrapolate(rows: dict[tuple[str, str], dict]) -> None:
    """PyLops' tosparse() on the large single-channel image, from the small ones.

    Time: ``t ~ n**b`` (n pixels), ``b`` fitted on the smallest and largest measured sizes
    (2 with one size: n probes of O(n) each). Entries: with 'fft' (almost) every entry is
    stored, ``nnz ~ n**2`` at the measured fill; with 'direct' exactly convop's structural
    nonzeros where they agreed at the measured sizes. Peak: the measured bytes per stored
    entry (Python lists of index pairs and values) times the extrapolated entries.
    """
    target, smalls = EXTRAPOLATED
    n_target = next(case.size for case in CASES if case.key == target) ** 2
    for method in PYLOPS_SPARSE:
        measured = [rows[key, method] for key in smalls if (key, method) in rows]
        if not measured or (target, "convop") not in rows:
            continue
        first, last = measured[0], measured[-1]
        n0, n1 = (next(c.size for c in CASES if c.key == r["case"]) ** 2 for r in (first, last))
        exponent, how = (math.log(last["median_s"] / first["median_s"]) / math.log(n1 / n0),
                         "fitted") if len(measured) > 1 else (2.0, "assumed")  # fmt: skip
        exact = all(r["nnz"] == rows[r["case"], "convop"]["nnz"] for r in measured)
        nnz = (int(last["nnz"] / n1**2 * n_target**2) if method == "pylops fft" else
               rows[target, "convop"]["nnz"] if exact else int(last["nnz"] * n_target / n1)
               )  # fmt: skip
        sizes = ", ".join(f"{math.isqrt(n)}^2" for n in sorted({n0, n1}))
        rows[target, method] = {
            "case": target, "method": method, "cold_s": None, "repeats": 0, "nnz": nnz,
            "median_s": last["median_s"] * (n_target / n1) ** exponent,
            "peak_bytes": last["peak_bytes"] / last["nnz"] * nnz, "result_bytes": None,
            "extrapolated": True, "check": "", "note": f"EXTRAPOLATED from {sizes}: t ~ "
            f"n^{exponent:.2f} ({how}), peak ~ nnz" + ("; from disturbed measurements"
            if any(r.get("note") for r in measured) else ""),
        }  # fmt: skip


def finish(report: h.Report) -> None:
    """The table of every (case, method), the extrapolated rows, and the goal rows."""
    rows = {(r["case"], r["method"]): r for r in report.data}
    for (key, method), r in rows.items():
        share = report.shares.get(f"{key} {method}", 0.0)
        r["note"] = f"UNRELIABLE: other processes used {share:.0%} of the CPUs" if (
            share > h.QUIET) else ""  # fmt: skip
    extrapolate(rows)
    lines = []
    for case in CASES:
        more = PYLOPS_SPARSE if case.key == EXTRAPOLATED[0] else ()
        for method in (*case.methods, *more):
            r = rows.get((case.key, method))
            why = skipped(case, method, report.quick)
            if why == "case not in --quick" or (method in more and r is None):
                continue
            if r is None:
                lines.append(
                    [case.label, method] + [""] * 8 + [why or "FAILED: see the ERROR row"]
                )
                continue
            anchor = rows.get((case.key, case.anchor), {}).get("median_s")
            if case.anchor == "goal":
                anchor = r["nnz"] / GOAL_RATE
            mark, median, peak, size = ("~" if r.get("extrapolated") else "", r["median_s"],
                                        r["peak_bytes"], r["result_bytes"])  # fmt: skip
            lines.append([
                case.label, method + (" (anchor)" if method == case.anchor else ""),
                "" if r["cold_s"] is None else f"{r['cold_s']:.3f}",
                f"{mark}{median:.3f} ({r['repeats']})", f"{mark}{peak / 2**20:,.0f}",
                "" if size is None else f"{size / 2**20:,.0f}",
                "" if size is None else f"{peak / size:.2f}", f"{mark}{r['nnz']:,}",
                f"{mark}{r['nnz'] / median / 1e6:,.1f}" if case.kind == "sparse" else "",
                "" if anchor is None else f"{mark}{anchor / median:.2f}x",
                "; ".join(filter(None, [r["check"], r["note"]])),
            ])  # fmt: skip
            if method != "convop" or case.anchor not in ("goal", FORUM):
                continue
            flag = f"; {r['note']}" if r["note"] else ""
            if case.anchor == "goal":
                report.goal(2, f"tosparse() {case.label}", r["nnz"] / median / 1e6,
                            GOAL_RATE / 1e6, unit=" M nnz/s", at_least=True,
                            anchor="the goal rate", also=peak / size <= GOAL_SPARSE_PEAK,
                            detail=f"cold call {r['nnz'] / r['cold_s'] / 1e6:.0f} M/s; peak "
                            f"{peak / size:.2f}x the CSR result (≤ {GOAL_SPARSE_PEAK}){flag}",
                            )  # fmt: skip
            elif anchor is not None:
                cold = rows[case.key, FORUM]["cold_s"] / r["cold_s"]
                report.goal(1, f"todense() {case.label}", anchor / median, GOAL_DENSE_SPEEDUP,
                            at_least=True, anchor="forum Toeplitz construction",
                            also=peak / size <= GOAL_DENSE_PEAK, detail=f"cold calls {cold:.1f}x;"
                            f" peak {peak / size:.2f}x the result (≤ {GOAL_DENSE_PEAK}){flag}",
                            )  # fmt: skip
    report.table("float64 matrices", ["case", "method", "cold s", "median s (n)", "peak MiB",
                 "result MiB", "peak/result", "nnz", "M nnz/s", "vs anchor", "check / note"],
                 lines)  # fmt: skip


if __name__ == "__main__":
    sys.exit(h.main(__doc__, sections, repeats=(1, 3), retry=120.0, timeout=300.0, finish=finish))
