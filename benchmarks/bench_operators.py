"""Operator speed: every goal of convop's products as a ratio against its anchor, in one run.

Usage::

    python benchmarks/bench_operators.py                # full run (~2 min + bench_auto's grid)
    python benchmarks/bench_operators.py --quick        # fewer repeats, smaller grids (< 2 min)
    python benchmarks/bench_operators.py --write docs/benchmarks.md  # regenerate its tables
    python benchmarks/bench_operators.py --goals 1,5    # some goals only (not with --write)

Every alternative is first checked to compute the same map as convop; a row's ratio is the
worst of its products' ``time / anchor`` (< 1: convop is faster). The goals
(docs/benchmarks.md says more):

1. numpy face (``op.matvec``, ``op.rmatvec``) <= 1.25x the torch face (``op.apply``,
   ``op.apply_adjoint``): blurs 512^2 k=31, 1024^2 k=15, 128^3 k=9, float32 and float64;
2. the numpy face of a 3->16, 3x3, 32^2 float64 layer <= 1.2x raw ``F.conv2d`` and
   ``F.conv_transpose2d`` (a 64->64 float32 layer is shown);
3. 30 ``lsqr`` iterations of a 512^2 k=15 deblur <= 0.6x PyLops ``Convolve2D(method='fft')``,
   both in ``convop.solver_threads()`` (shown: plain PyLops; the layer against its CSR);
4. deblurring (256^2 k=5, 512^2 k=15 and k=31, 1024^2 k=15): numpy face <= 0.7x the better
   of PyLops ``Convolve2D`` fft and direct (scipy's ``fftconvolve`` shown);
5. torch face <= 1.1x the FFT floor (one FFT pair and one product by a precomputed spectrum
   on the operator's grid: not the same map, so not checked) on goal 1's blurs and complex128;
6. ``method="auto"`` within 1.2x of the faster method on ``bench_auto.py``'s grid;
7. torch face <= 0.4x the better of DeepInverse's ``conv2d`` and ``conv2d_fft`` (adjoints:
   ``conv_transpose2d``, ``conv_transpose2d_fft``) on the 2-D blurs (skipped if absent).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import _harness as h  # benchmarks/, the script's own folder
import bench_auto
import numpy as np
import pylops
import scipy.signal
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

import convop
import convop.data
from convop import _fft

BOUNDS = {1: 1.25, 2: 1.2, 3: 0.6, 4: 0.7, 5: 1.1, 6: 1.2, 7: 0.4}
BLURS = ((2, 512, 31), (2, 1024, 15), (3, 128, 9))  # goals 1, 5 and 7: (ndim, n, k)
DEBLURS = ((256, 5), (512, 15), (512, 31), (1024, 15))  # goal 4
DTYPES = {"float32": np.float32, "float64": np.float64, "complex128": np.complex128}


def ratios_goal(report: h.Report, goal: int, what: str, ratios: dict[str, float], anchor: str,
                info: bool = False, extra: str = "") -> None:  # fmt: skip
    """One row; its value is the worst of ``ratios`` (product -> time / anchor)."""
    detail = ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())
    report.goal(goal, what, max(ratios.values(), default=h.NAN),
                None if info else BOUNDS[goal], anchor=anchor,
                detail="; ".join(filter(None, [detail, extra])))  # fmt: skip


def rows(report: h.Report, group: str, case: str,
         fns: dict[str, tuple[str, str, Callable[[], object]]]) -> dict[str, float]:  # fmt: skip
    """``fns`` (name -> label, anchor name, product: torch work) interleaved, recorded with
    their ratio to their anchor; their times."""
    t = h.interleaved({name: fn for name, (_, _, fn) in fns.items()}, report.repeats)
    for name, (label, anchor, _) in fns.items():
        report.record(group, case, label, t[name], f"{t[name] / t[anchor]:.2f}x" if anchor else "")
    return t


def rng_array(shape, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        a = a + 1j * rng.standard_normal(shape)
    return np.ascontiguousarray(a.astype(dtype))


# ---------------------------------------------------------------------- blurs (goals 1, 4, 5, 7)
@dataclass
class Blur:
    """One single-channel 'same' zero-padded blur: operator, data, checked once."""

    ndim: int
    n: int
    k: int
    dtype: type
    op: convop.ConvOperator
    weight: np.ndarray  # (1, 1, *k): convop's correlation kernel
    x: np.ndarray  # flattened input
    y: np.ndarray  # flattened output-space vector for the adjoint
    tx: torch.Tensor  # x as a tensor of input_shape (shares memory)
    ty: torch.Tensor

    @property
    def case(self) -> str:
        size = f"{self.n}^2" if self.ndim == 2 else f"{self.n}^{self.ndim}"
        return f"{size}, k={self.k}, {np.dtype(self.dtype).name}"

    @property
    def rtol(self) -> float:
        return 1e-5 if self.dtype == np.float32 else 1e-11


@functools.cache
def blur(ndim: int, n: int, k: int, dtype_name: str) -> Blur:
    """The blur of these sizes, checked against scipy's FFT convolution in float64
    (complex128), an independent implementation: torch correlates, so the forward map
    convolves with the flipped kernel, the adjoint with the conjugated kernel."""
    dtype = DTYPES[dtype_name]
    weight = rng_array((1, 1) + (k,) * ndim, dtype, seed=k)
    op = (convop.conv2d if ndim == 2 else convop.conv3d)(weight, (1,) + (n,) * ndim,
                                                         padding="same")  # fmt: skip
    x, y = rng_array(op.shape[1], dtype, seed=1), rng_array(op.shape[0], dtype, seed=2)
    b = Blur(ndim, n, k, dtype, op, weight, x, y, torch.from_numpy(x).reshape(op.input_shape),
             torch.from_numpy(y).reshape(op.output_shape))  # fmt: skip
    w = weight[0, 0].astype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)
    shape = (n,) * ndim
    forward = scipy.signal.fftconvolve(x.reshape(shape).astype(w.dtype), np.flip(w), "same")
    adjoint = scipy.signal.fftconvolve(y.reshape(shape).astype(w.dtype), w.conj(), "same")
    norm1 = float(np.abs(w).sum())  # FFT round-off is bounded by ||w||_1 max|x|
    for name, out, want, data in (("matvec", op.matvec(x), forward, x),
                                  ("rmatvec", op.rmatvec(y), adjoint, y),
                                  ("apply", op.apply(b.tx), forward, x),
                                  ("apply_adjoint", op.apply_adjoint(b.ty), adjoint, y),
                                  ):  # fmt: skip
        h.check(out, want, f"{b.case} {name}", b.rtol, norm1 * np.abs(data).max())
    return b


def cold(fn: Callable[[], object], expected, what: str, rtol: float,
         scale: float | None = None) -> float:  # fmt: skip
    """The time of one call of ``fn``, whose result is checked against ``expected``."""
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    h.check(out, expected, what, rtol, scale)
    return first


def checked(report: h.Report, group: str, case: str, method: str, fn: Callable[[], object],
            expected, rtol: float) -> float:  # fmt: skip
    """Check ``fn()``, then time and record it; a call slower than a second (a direct
    convolution 30-300x slower than the FFT) by that one checked call."""
    first = cold(fn, expected, f"{case} {method}", rtol)
    if first > 1.0:
        return report.record(group, case, method, first, "one cold call")
    return report.record(group, case, method, h.timeit(fn, report.repeats))


def floor(b: Blur) -> tuple[str, str, Callable[[], torch.Tensor]]:
    """One FFT pair with one pointwise product on the operator's grid, the input already
    zero-padded onto it: the least any FFT evaluation of the operator does."""
    sizes = tuple(_fft.frame(b.op.geometry).sizes)  # the operator's FFT grid (internal)
    dims = tuple(range(-b.ndim, 0))
    pad = [p for n, size in zip(reversed(b.tx.shape[1:]), reversed(sizes)) for p in (0, size - n)]
    grid = F.pad(b.tx, pad)  # (1, *L): the input on the grid
    w = torch.from_numpy(b.weight[0])  # (1, *k)
    fft, ifft, what = ((torch.fft.fftn, torch.fft.ifftn, "fftn + ifftn")
                       if np.dtype(b.dtype).kind == "c" else
                       (torch.fft.rfftn, torch.fft.irfftn, "rfftn + irfftn"))  # fmt: skip
    spectrum = fft(w, s=sizes, dim=dims)  # (1, *L), half the last axis for rfftn

    def product():
        return ifft(fft(grid, dim=dims) * spectrum, s=sizes, dim=dims)

    return f"FFT floor: {what} on {'x'.join(map(str, sizes))} (convop._fft.frame)", "", product


def goal_faces(report: h.Report) -> None:
    """Goals 1 and 5: numpy face, torch face and FFT floor of each blur, interleaved."""
    for ndim, n, k in BLURS:
        for dtype in DTYPES:
            faces(report, blur(ndim, n, k, dtype))


def faces(report: h.Report, b: Blur) -> None:
    op, m = b.op, b.op.method
    fns = {"matvec": (f"numpy face op.matvec [{m}]", "apply", lambda: op.matvec(b.x)),
           "rmatvec": (f"numpy face op.rmatvec [{m}]", "apply_adjoint", lambda: op.rmatvec(b.y)),
           "apply": (f"torch face op.apply [{m}]", "floor", lambda: op.apply(b.tx)),
           "apply_adjoint": (f"torch face op.apply_adjoint [{m}]", "floor",
                             lambda: op.apply_adjoint(b.ty)),
           "floor": floor(b)}  # fmt: skip
    if np.dtype(b.dtype).kind == "c":  # goal 1 is about real data
        del fns["matvec"], fns["rmatvec"]
    t = rows(report, "blur", b.case, fns)
    if "matvec" in t:
        ratios_goal(report, 1, f"numpy face / torch face, {b.case}", {"matvec": t["matvec"] / t[
            "apply"], "rmatvec": t["rmatvec"] / t["apply_adjoint"]}, "torch face")  # fmt: skip
    ratios_goal(report, 5, f"torch face / FFT floor, {b.case}", {"apply": t["apply"] / t["floor"],
                "apply_adjoint": t["apply_adjoint"] / t["floor"]}, "FFT floor")  # fmt: skip


# ---------------------------------------------------------------------- 2. conv layers
def conv_layer(report: h.Report, c_in: int, c_out: int, k: int, n: int, dtype: torch.dtype,
               goal: bool) -> None:  # fmt: skip
    torch.manual_seed(0)
    weight = torch.randn(c_out, c_in, k, k, dtype=dtype)
    op = convop.conv2d(weight, (c_in, n, n), padding=k // 2)  # 'same'
    case, m = f"{c_in}->{c_out}, {k}x{k}, {n}^2, {str(dtype)[6:]}", op.method
    x, v = rng_array(op.shape[1], op.dtype, seed=0), rng_array(op.shape[0], op.dtype, seed=1)
    tx = torch.from_numpy(x).reshape(1, c_in, n, n)
    tv = torch.from_numpy(v).reshape(1, *op.output_shape)
    rtol, pad = (1e-4 if dtype == torch.float32 else 1e-12), k // 2
    h.check(op.matvec(x), F.conv2d(tx, weight, padding=pad), f"{case} matvec", rtol)
    h.check(op.rmatvec(v), F.conv_transpose2d(tv, weight, padding=pad), f"{case} rmatvec", rtol)
    fns = {  # name: (label, anchor, product)
        "raw": ("raw F.conv2d on tensors (anchor)", "", lambda: F.conv2d(tx, weight, padding=pad)),
        "floor": ("raw F.conv2d, from and to numpy (floor)", "raw",
                  lambda: F.conv2d(torch.from_numpy(x).view(1, c_in, n, n), weight,
                                   padding=pad).numpy()),
        "matvec": (f"numpy face op.matvec [{m}]", "raw", lambda: op.matvec(x)),
        "apply": (f"torch face op.apply [{m}]", "raw", lambda: op.apply(tx)),
        "raw_t": ("raw F.conv_transpose2d on tensors (anchor)", "",
                  lambda: F.conv_transpose2d(tv, weight, padding=pad)),
        "rmatvec": (f"numpy face op.rmatvec [{m}]", "raw_t", lambda: op.rmatvec(v)),
        "apply_adjoint": (f"torch face op.apply_adjoint [{m}]", "raw_t",
                          lambda: op.apply_adjoint(tv)),
    }  # fmt: skip
    t = rows(report, "layer", case, fns)
    if goal:
        matrix = op.tosparse()
        h.check(matrix @ x, op.matvec(x), f"{case} CSR", 1e-12)
        for label, fn, anchor in (("explicit CSR @ x", lambda: matrix @ x, "raw"),
                                  ("explicit CSR.T @ v", lambda: matrix.T @ v, "raw_t"),
                                  ):  # fmt: skip
            seconds = h.timeit(fn, report.repeats)
            report.record("layer", case, label, seconds, f"{seconds / t[anchor]:.2f}x")
        ratios_goal(report, 2, f"numpy face / raw torch, small layer {case}",
                    {"matvec": t["matvec"] / t["raw"], "rmatvec": t["rmatvec"] / t["raw_t"]},
                    "raw F.conv2d / F.conv_transpose2d")  # fmt: skip


def goal_layers(report: h.Report) -> None:
    with report.section(2, "numpy face / raw torch, small layer"):
        conv_layer(report, 3, 16, 3, 32, torch.float64, goal=True)
    with report.section(2, "layer 64->64 float32 (shown)"):
        conv_layer(report, 64, 64, 3, 56, torch.float32, goal=False)


# ---------------------------------------------------------------------- 3. lsqr
def lsqr(A, y, iterations: int = 30) -> np.ndarray:
    return spla.lsqr(A, y, damp=1e-2, iter_lim=iterations, atol=0, btol=0, conlim=0)[0]


def in_threads(A, y) -> Callable[[], np.ndarray]:
    def solve():
        with convop.solver_threads():
            return lsqr(A, y)

    return solve


def lsqr_rows(report: h.Report, case: str, t: dict[str, float], anchor: str, m: str) -> None:
    names = {"theirs": f"lsqr on {anchor}, plain",
             "theirs_st": f"lsqr on {anchor}, in solver_threads() (anchor)",
             "convop": f"lsqr on convop [{m}], plain",
             "convop_st": f"lsqr on convop [{m}], in solver_threads()"}  # fmt: skip
    for name, label in names.items():
        note = "" if name == "theirs_st" else f"{t[name] / t['theirs_st']:.2f}x"
        report.record("lsqr", case, label, t[name], note)


def goal_lsqr(report: h.Report) -> None:
    with report.section(3, "lsqr deblur, convop / PyLops"):
        n, k = 512, 15
        kernel = convop.data.gaussian_kernel(k, k / 5)
        image = convop.data.phantom(n)
        op = convop.conv2d(kernel[None, None], (1, n, n), padding="same")
        P = pylops.signalprocessing.Convolve2D((n, n), h=kernel[::-1, ::-1],
                                               offset=(k // 2, k // 2), method="fft")  # fmt: skip
        y = op @ image.ravel() + 0.01 * np.random.default_rng(0).standard_normal(op.shape[0])
        h.check(P @ image.ravel(), op @ image.ravel(), "lsqr operators", 1e-12)
        with convop.solver_threads():
            h.check(lsqr(op, y), lsqr(P, y), "lsqr solutions", 1e-8)
        case = f"{n}^2, k={k}, float64, 30 it"
        # The goal's two solves take turns on their own; the plain ones (threads fighting,
        # shown) run apart, so that their aftermath (spinning pools, a grown heap) does not
        # fall on one side of the goal's ratio. Whole solves: one call per round.
        rounds = 1 if report.quick else 3
        t = h.interleaved({"theirs_st": in_threads(P, y), "convop_st": in_threads(op, y)},
                          rounds + 2, loops=False)  # fmt: skip
        t.update(h.interleaved({"theirs": lambda: lsqr(P, y), "convop": lambda: lsqr(op, y)},
                               rounds, loops=False))  # fmt: skip
        lsqr_rows(report, case, t, "PyLops Convolve2D fft", op.method)
        ratios_goal(report, 3, f"lsqr deblur {case}, convop / PyLops, both in solver_threads()",
                    {"ratio": t["convop_st"] / t["theirs_st"]},
                    "PyLops Convolve2D fft in solver_threads()")  # fmt: skip
        ratios_goal(report, 3, f"lsqr deblur {case}, convop in solver_threads() / plain PyLops",
                    {"ratio": t["convop_st"] / t["theirs"]}, "plain PyLops Convolve2D fft",
                    info=True, extra=f"convop plain / plain PyLops "
                    f"{t['convop'] / t['theirs']:.2f}")  # fmt: skip
    with report.section(3, "lsqr small layer, convop / CSR"):
        torch.manual_seed(0)
        op = convop.conv2d(torch.randn(16, 3, 3, 3, dtype=torch.float64), (3, 32, 32), padding=1)
        y = rng_array(op.shape[0], np.float64, seed=0)
        matrix = op.tosparse()
        case = "3->16, 3x3, 32^2, float64, 30 it"
        h.check(lsqr(op, y), lsqr(matrix, y), "lsqr layer", 1e-8)
        t = {}
        for name, A in (("theirs", matrix), ("convop", op)):
            t[name] = h.timeit(lambda A=A: lsqr(A, y), report.repeats)
            t[f"{name}_st"] = h.timeit(in_threads(A, y), report.repeats)
        lsqr_rows(report, case, t, "the explicit CSR", op.method)
        ratios_goal(report, 3, f"lsqr small layer {case}, convop / CSR, both in "
                    "solver_threads()", {"ratio": t["convop_st"] / t["theirs_st"]},
                    "explicit CSR in solver_threads()", info=True,
                    extra=f"both plain {t['convop'] / t['theirs']:.2f}")  # fmt: skip


# ---------------------------------------------------------------------- 4. deblurring
def goal_deblur(report: h.Report) -> None:
    """convop's numpy face against PyLops Convolve2D (fft and direct) and scipy: numpy, so
    timed one after the other, convop afresh right beside them."""
    for n, k in DEBLURS[:2] if report.quick else DEBLURS:
        with report.section(4, f"deblur {n}^2, k={k}, convop / PyLops"):
            b = blur(2, n, k, "float64")
            kernel = np.ascontiguousarray(b.weight[0, 0, ::-1, ::-1])  # PyLops, scipy convolve
            P = {m: pylops.signalprocessing.Convolve2D((n, n), h=kernel, offset=(k // 2,) * 2,
                                                       method=m)
                 for m in ("fft", "direct")}  # fmt: skip
            ratios = {
                **deblur(report, b, "forward", P, kernel),
                **deblur(report, b, "adjoint", {m: A.H for m, A in P.items()}, b.weight[0, 0]),
            }
            ratios_goal(report, 4, f"deblur {b.case}, numpy face / PyLops",
                        {name: r for name, (r, _) in ratios.items()},
                        "PyLops " + ", ".join(anchor for _, anchor in ratios.values()),
                        )  # fmt: skip


def deblur(report: h.Report, b: Blur, product: str, P: dict, kernel: np.ndarray) -> dict:
    """One product by convop, PyLops (both methods) and scipy: ``{face: (ratio to the
    faster PyLops, which)}``."""
    name, data = ("matvec", b.x) if product == "forward" else ("rmatvec", b.y)
    ours, expected = getattr(b.op, name), getattr(b.op, name)(data)
    seconds = report.record("deblur", b.case, f"convop numpy face op.{name} [{b.op.method}]",
                            h.timeit(lambda: ours(data), report.repeats))  # fmt: skip
    theirs = {m: checked(report, "deblur", b.case, f"PyLops Convolve2D {m} {product}",
                         lambda A=A: A @ data, expected, 1e-11) for m, A in P.items()}  # fmt: skip
    image = data.reshape(b.n, b.n)
    checked(report, "deblur", b.case, f"scipy.signal.fftconvolve {product}",
            lambda: scipy.signal.fftconvolve(image, kernel, mode="same"),
            expected.reshape(b.n, b.n), 1e-11)  # fmt: skip
    best = min(theirs, key=theirs.get)
    return {name: (seconds / theirs[best], f"{best} ({product})")}


# ---------------------------------------------------------------------- 7. DeepInverse
def deepinv_module(name: str, files: tuple[str, ...]) -> tuple[types.ModuleType | None, str]:
    """``deepinv.<name>``, or where the package does not import (deepinv 0.5 imports
    torchvision first thing, whose wheel for this torch may be a CUDA build that does not
    load), ``files`` (paths in the package) loaded alone under empty parent packages: the
    code timed is deepinv's own. The last file is the module returned."""
    try:
        version = metadata.version("deepinv")
    except metadata.PackageNotFoundError:
        return None, "deepinv is not installed (pip install deepinv)"
    try:
        return importlib.import_module(f"deepinv.{name}"), f"deepinv {version}"
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    root = Path(importlib.util.find_spec("deepinv").submodule_search_locations[0])
    names = ["deepinv." + file[:-3].replace("/", ".") for file in files]
    saved = {n: sys.modules.get(n) for n in ("deepinv", "deepinv.utils", *names)}
    try:
        for package, folder in (("deepinv", root), ("deepinv.utils", root / "utils")):
            sys.modules[package] = types.ModuleType(package)
            sys.modules[package].__path__ = [str(folder)]
        for module_name, file in zip(names, files):
            spec = importlib.util.spec_from_file_location(module_name, root / file)
            sys.modules[module_name] = module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    except Exception as exc:
        return None, f"deepinv {version} does not import ({reason}; alone: {exc})"
    finally:
        for key, previous in saved.items():
            sys.modules.pop(key, None)
            if previous is not None:
                sys.modules[key] = previous
    return module, f"deepinv {version}, {files[-1]} loaded alone (the package: {reason})"


def deepinv_functions() -> tuple[types.ModuleType | None, str]:
    """deepinv's convolutions (needing only torch and one decorator module)."""
    files = ("utils/decorators.py", "physics/functional/convolution.py")
    return deepinv_module("physics.functional", files)


def goal_deepinv(report: h.Report) -> None:
    functional, how = deepinv_functions()
    if functional is None:
        report.goal(7, "torch face / DeepInverse", bound=BOUNDS[7], detail=how)
        report.note(f"goal 7 skipped: {how}")
        return
    report.note(f"goal 7 uses {how}")
    cases = [(n, k) for ndim, n, k in BLURS if ndim == 2]
    for n, k in cases[:1] if report.quick else cases:
        for dtype in ("float32",) if report.quick else ("float32", "float64"):
            with report.section(7, f"torch face / DeepInverse, {n}^2, k={k}, {dtype}"):
                deepinv_case(report, functional, blur(2, n, k, dtype))


def deepinv_case(report: h.Report, functional: types.ModuleType, b: Blur) -> None:
    """deepinv's four functions checked, then timed with convop's torch face interleaved;
    one slower than a second (the direct transpose) by its one call. deepinv convolves: it
    gets the flipped kernel; its 'constant' padding (k // 2 zeros a side, odd k) is 'same'."""
    kernel = torch.from_numpy(np.ascontiguousarray(b.weight[..., ::-1, ::-1]))  # (1, 1, k, k)
    data = {"forward": b.tx[None], "adjoint": b.ty[None]}  # (1, 1, n, n)
    expected = {"forward": b.op.apply(b.tx), "adjoint": b.op.apply_adjoint(b.ty)}
    names = {"conv2d": "forward", "conv_transpose2d": "adjoint", "conv2d_fft": "forward",
             "conv_transpose2d_fft": "adjoint"}  # fmt: skip
    fast, times = {}, {}
    for name, product in names.items():
        f = getattr(functional, name, None)
        if f is None:
            report.note(f"deepinv has no {name}")
            continue

        def call(f=f, x=data[product]):
            return f(x, kernel, padding="constant")

        scale = float(np.abs(b.weight).sum()) * float(data[product].abs().max())
        first = cold(call, expected[product], f"{b.case} deepinv {name}", b.rtol, scale)
        if first > 1.0:
            times[name] = report.record("deepinv", b.case, f"deepinv {name}", first,
                                        "one cold call")  # fmt: skip
        else:
            fast[name] = call
    fast["apply"] = lambda: b.op.apply(b.tx)
    fast["apply_adjoint"] = lambda: b.op.apply_adjoint(b.ty)
    for name, seconds in h.interleaved(fast, report.repeats).items():
        ours = name.startswith("apply")
        times[name] = report.record("deepinv", b.case, f"convop torch face op.{name} "
                                    f"[{b.op.method}]" if ours else f"deepinv {name}",
                                    seconds)  # fmt: skip
    ratios, anchors = {}, []
    for face, product in (("apply", "forward"), ("apply_adjoint", "adjoint")):
        theirs = {name: times[name] for name in names if names[name] == product and name in times}
        if theirs:
            best = min(theirs, key=theirs.get)
            ratios[face] = times[face] / theirs[best]
            anchors.append(f"{best} ({product})")
    ratios_goal(report, 7, f"torch face / DeepInverse, {b.case}", ratios,
                f"deepinv {', '.join(anchors)}")  # fmt: skip


SECTIONS = [h.Section("goals 1 and 5", goal_faces, (1, 5)), h.Section("goal 2", goal_layers, (2,)),
            h.Section("goal 3", goal_lsqr, (3,)), h.Section("goal 4", goal_deblur, (4,)),
            h.Section("goal 7", goal_deepinv, (7,)),
            h.Section("goal 6", lambda report: bench_auto.goal_grid(report, 6), (6,))]  # fmt: skip

if __name__ == "__main__":
    sys.exit(h.main(__doc__, SECTIONS))
