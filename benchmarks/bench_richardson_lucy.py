"""Richardson–Lucy (issue 26): ``convop.richardson_lucy`` against scikit-image and RedLionfish.

Usage (from a clone, after ``make install``)::

    python benchmarks/bench_richardson_lucy.py            # full run (~4 min on a quiet machine)
    python benchmarks/bench_richardson_lucy.py --quick    # smaller cases: a smoke test (~35 s)
    python benchmarks/bench_richardson_lucy.py --write docs/benchmarks.md

scikit-image (``pip install scikit-image``) is needed for goals 1, 3 and 4 (left out
without it); RedLionfish (``pip install redlionfish``, not a dependency of convop) for goal 2;
mpi4py and an ``mpiexec`` beside the interpreter (the ``mpi`` extra and the ``mpich`` wheel)
for goal 7, which this run measures by launching ``mpiexec -n 2 python
benchmarks/bench_richardson_lucy_mpi.py`` from its section's process: its ratio sits in this
run's table, measured minutes from the others. That script also runs on its own (see its
docstring).

The goals, one section (a fresh process) each:

1. 10 RL iterations on a 1x64x128x128 float32 stack, a 15x9x9 Gaussian PSF, the same
   zero-padded 'same' model on both sides (scikit-image's ``richardson_lucy(image, psf,
   num_iter=10, clip=False)``, whose ``scipy.signal.convolve(..., mode='same')`` is
   ``convop.conv3d(flipped psf, (1, 64, 128, 128), padding="same")``): convop's time <= 0.5x
   scikit-image's (aim 0.4). Checked first: convop's products against scipy's convolutions,
   scikit-image's result against a float64 loop of its update (start 0.5, no ``/ A^T 1``),
   convop's against the same loop with convop's start and ``/ A^T 1``.
2. The same against RedLionfish's CPU mode (``doRLDeconvolutionFromNpArrays(data, psf,
   niter=10, method='cpu')``: periodic boundaries, PSF normalised, started at the data) and
   convop on that model (``padding_mode="circular"``, ``x0=data``): information.
3. Quality, 2-D: a 160^2 crop of scikit-image's ``camera`` (rows and columns 128-287) blurred
   'valid' from the scene around it by an 11x11 Gaussian (sigma 2), Poisson counts of peak
   1000, 30 iterations: RL on ``convop.extended_domain``'s model >= scikit-image + 3 dB.
4. Quality, 3-D: a synthetic widefield stack (a dim cell body, filaments, beads; 32x64x64
   seen of a larger scene) through the 15x9x9 PSF, peak 1000, 30 iterations: the same.
5. RL-TV (``tv=0.01``, the best of 0.002 to 0.05 in a sweep made while writing this) on
   goal 4's stack at peak 100 counts, 100 iterations: its final PSNR >= plain RL's best over
   its 100 iterations (tracked through the callback).
6. ``accelerate=True``: iterations to reach plain RL's likelihood after 40 (information).
7. RL on a ``DistributedConv`` (``op.to_pylops_mpi()``, y from ``D.scatter(y, output=True)``),
   per iteration, P=2 <= 0.6x P=1 on a 1x256^3 float32 stack, one torch thread per rank.

A quick run measures smaller cases (goals 1, 4, 5 and 7 are then information).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import _harness as h  # benchmarks/, the script's own folder
import numpy as np
import scipy.signal
import torch

import convop
from convop.data import gaussian_kernel, psnr

SHAPE, QUICK_SHAPE = (64, 128, 128), (32, 64, 64)  # goals 1 and 2
PSF_SHAPE, PSF_SIGMAS = (15, 9, 9), (3.0, 1.5, 1.5)  # every 3-D case
ITERATIONS, BACKGROUND = 10, 0.01  # goals 1 and 2; the stack's background, of peak
SPEED_BOUND, SPEED_AIM = 0.5, 0.4  # goal 1: convop / scikit-image
RTOL = 1e-3  # float32 RL results against the float64 loops, relative to max |x|
CAMERA = {"size": 160, "corner": 128, "psf": 11, "sigma": 2.0, "peak": 1000.0}
ISSUE_CAMERA = {"blurred": 24.1, "scikit-image": 15.1, "extended": 26.3}  # dB, issue 26
STACK, QUICK_STACK = (32, 64, 64), (16, 48, 48)  # goals 4-6: the image's shape
QUALITY_ITERATIONS, GAIN = 30, 3.0  # goals 3 and 4: dB over scikit-image
TV, TV_OTHERS, TV_PEAK, TV_ITERATIONS = 0.01, (0.005, 0.02), 100.0, 100  # goal 5
ACCELERATE_TARGET = 40  # goal 6: plain RL's iterations


# ---------------------------------------------------------------------- data and references
def gaussian_psf(shape: tuple[int, ...], sigmas: tuple[float, ...]) -> np.ndarray:
    """A Gaussian PSF (float64, sum 1) centred at sample ``k // 2`` of each axis."""
    grids = np.meshgrid(*[np.arange(k) - k // 2 for k in shape], indexing="ij", sparse=True)
    psf = np.exp(-0.5 * sum((g / s) ** 2 for g, s in zip(grids, sigmas)))
    return psf / psf.sum()


def cell(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A widefield-like test object in [0, 1]: a dim cell body (0.15) larger than the frame,
    25 filaments (0.6, about 1.6 samples thick, flatter in z) and 40 beads (1.0)."""
    rng, size = np.random.default_rng(seed), np.array(shape, dtype=float)
    grids = np.meshgrid(*[np.arange(n) + 0.5 for n in shape], indexing="ij", sparse=True)
    centre, radii = size * (0.5, 0.45, 0.55), size * (0.45, 0.6, 0.5)
    out = 0.15 * (sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) < 1)
    for _ in range(25):
        point, direction = rng.random(3) * size, rng.standard_normal(3) * (0.3, 1.0, 1.0)
        direction /= np.linalg.norm(direction)
        offsets = [g - p for g, p in zip(grids, point)]
        along = sum(o * d for o, d in zip(offsets, direction))
        across = sum((o - along * d) ** 2 for o, d in zip(offsets, direction))
        out = np.maximum(out, 0.6 * (across <= 0.8**2))
    for bead in rng.random((40, 3)) * size:
        out = np.maximum(out, 1.0 * (sum((g - c) ** 2 for g, c in zip(grids, bead)) <= 1.2**2))
    return out


def counts(mean: np.ndarray, peak: float, seed: int = 1) -> np.ndarray:
    """Poisson counts of ``peak * mean`` (FFT round-off below zero clipped)."""
    return np.random.default_rng(seed).poisson(peak * np.clip(mean, 0, None)).astype(np.float64)


def reference(y: np.ndarray, forward: Callable, backward: Callable, iterations: int,
              start: np.ndarray | float, normalise: bool) -> np.ndarray:  # fmt: skip
    """RL in float64, written out: ``x <- x backward(y / forward(x))`` (``/ backward(1)``
    with ``normalise``), from ``start``; the ratio is 0 where ``forward(x) <= 0``."""
    y = y.astype(np.float64)
    sensitivity = backward(np.ones_like(y)) if normalise else 1.0
    x = np.broadcast_to(np.asarray(start, dtype=np.float64), y.shape)
    for _ in range(iterations):
        blurred = forward(x)
        ratio = np.divide(y, blurred, out=np.zeros_like(y), where=blurred > 0)
        x = x * backward(ratio) / sensitivity
    return x


def zero_same(psf: np.ndarray) -> tuple[Callable, Callable]:
    """scikit-image's model: ``scipy.signal.fftconvolve(x, psf, 'same')`` and its adjoint
    (the flipped PSF), in float64."""
    psf = psf.astype(np.float64)
    mirror = np.flip(psf)
    return (lambda x: scipy.signal.fftconvolve(x, psf, mode="same"),
            lambda r: scipy.signal.fftconvolve(r, mirror, mode="same"))  # fmt: skip


def periodic(psf: np.ndarray, shape: tuple[int, ...], centre: tuple[int, ...],
             flipped: bool) -> tuple[Callable, Callable]:  # fmt: skip
    """A periodic blur in float64 whose PSF centre sits at sample ``centre`` (0: no shift);
    back-projected by the adjoint, or with ``flipped`` by the flipped kernel array
    (``b[i] = f[n - 1 - i]``, RedLionfish's): the adjoint moved by one sample per axis."""
    kernel = np.zeros(shape)
    kernel[tuple(slice(0, k) for k in psf.shape)] = psf
    kernel = np.roll(kernel, [c - k // 2 for c, k in zip(centre, psf.shape)], axis=range(3))
    axes = tuple(range(len(shape)))
    f = np.fft.rfftn(kernel, axes=axes)
    b = np.fft.rfftn(np.flip(kernel), axes=axes) if flipped else np.conj(f)
    return (lambda x: np.fft.irfftn(np.fft.rfftn(x, axes=axes) * f, shape, axes=axes),
            lambda r: np.fft.irfftn(np.fft.rfftn(r, axes=axes) * b, shape, axes=axes))  # fmt: skip


def flipped(psf: np.ndarray) -> np.ndarray:
    """A convolution PSF as torch's correlation weight ``(1, 1, *k)``."""
    return np.ascontiguousarray(np.flip(psf))[None, None]


def likelihood(op, y: np.ndarray, x: np.ndarray) -> float:
    """The Poisson log-likelihood ``sum y log(A x) - A x`` in float64."""
    mean = np.clip(op @ np.asarray(x, dtype=np.float64).ravel(), 1e-300, None)
    y = y.ravel()
    return float(np.sum(np.where(y > 0, y * np.log(mean), 0.0) - mean))


# ---------------------------------------------------------------------- goals 1 and 2: speed
def redlionfish() -> tuple[Callable | None, str]:
    """RedLionfish's CPU entry point, or None and why not."""
    if importlib.util.find_spec("RedLionfishDeconv") is None:
        return None, "RedLionfish is not installed (pip install redlionfish)"
    from RedLionfishDeconv import doRLDeconvolutionFromNpArrays

    return doRLDeconvolutionFromNpArrays, ""


def redlionfish_centre(shape: tuple[int, ...], kernel: tuple[int, ...]) -> tuple[int, ...]:
    """Where RedLionfish's CPU mode puts the PSF centre: it pads the PSF to the data's shape
    at offset ``(n - k) // 2`` and moves sample ``n // 2`` to the origin."""
    return tuple((n - k) // 2 + k // 2 - n // 2 for n, k in zip(shape, kernel))


def one_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with torch on one thread, as scikit-image's and RedLionfish's scipy FFTs run."""

    def call() -> object:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)

    return call


def goal_speed(report: h.Report) -> None:
    from skimage.restoration import richardson_lucy as skimage_rl

    shape = QUICK_SHAPE if report.quick else SHAPE
    case = f"1x{'x'.join(map(str, shape))} float32, {'x'.join(map(str, PSF_SHAPE))} PSF"
    psf = gaussian_psf(PSF_SHAPE, PSF_SIGMAS).astype(np.float32)
    op = convop.conv3d(flipped(psf), (1, *shape), padding="same")
    circular = convop.conv3d(flipped(psf), (1, *shape), padding="same", padding_mode="circular")
    blur = (op @ cell(shape).ravel().astype(np.float32)).reshape(shape)
    data = counts(blur + BACKGROUND, 1000.0).astype(np.float32)  # (64, 128, 128) counts
    y, ty = data[None], torch.from_numpy(data)[None]  # (1, 64, 128, 128), a view

    # the same model: convop's products are scikit-image's convolutions
    v = np.random.default_rng(2).random(shape, dtype=np.float32)
    h.check(op @ v.ravel(), scipy.signal.convolve(v, psf, mode="same"),
            "op @ v = scipy.signal.convolve(v, psf, 'same')", 1e-5)  # fmt: skip
    h.check(op.rmatvec(v.ravel()), scipy.signal.convolve(v, np.flip(psf), mode="same"),
            "op.rmatvec(v) = scipy.signal.convolve(v, flipped psf, 'same')", 1e-5)  # fmt: skip
    # ... and their results are RL on it: scikit-image without / A^T 1, convop with it
    forward, backward = zero_same(psf)
    theirs = skimage_rl(data, psf, num_iter=ITERATIONS, clip=False)
    ours = convop.richardson_lucy(op, y, ITERATIONS).x[0]
    start = float(data.sum(dtype=np.float64) / backward(np.ones(shape)).sum())
    e_theirs = h.check(theirs, reference(data, forward, backward, ITERATIONS, 0.5, False),
                       "scikit-image = float64 loop of its update", RTOL)  # fmt: skip
    e_ours = h.check(ours, reference(data, forward, backward, ITERATIONS, start, True),
                     "convop = float64 loop of the normalised update", RTOL)  # fmt: skip
    apart = float(np.abs(theirs - ours).max() / np.abs(ours).max())
    report.note(f"goal 1, {case}: convop's products = scipy.signal.convolve(mode='same') (what "
                f"scikit-image calls) to 1e-5; scikit-image's result = a float64 loop of its "
                f"update x <- x A^T(y / A x) from 0.5 ({e_theirs:.1e} of max |x|), convop's = "
                f"the same loop with / A^T 1 from convop's start sum(y) / sum(A^T 1) = "
                f"{start:.4g} ({e_ours:.1e}); the two results differ by {apart:.1%} of max |x| "
                f"(the normalisation: A^T 1 falls to {backward(np.ones(shape)).min():.2f} "
                f"at the corners)")  # fmt: skip

    tx = torch.from_numpy(blur)[None, None]  # (1, 1, *shape)
    fns = {
        "scikit-image": lambda: skimage_rl(data, psf, num_iter=ITERATIONS, clip=False),
        "convop": lambda: convop.richardson_lucy(op, y, ITERATIONS),
        "convop, torch face": lambda: convop.richardson_lucy(op, ty, ITERATIONS),
        "convop, 1 thread": one_thread(lambda: convop.richardson_lucy(op, y, ITERATIONS)),
        "products": lambda: [op.apply_adjoint(op.apply(tx)) for _ in range(ITERATIONS)],
    }
    rlf, why = redlionfish()
    if rlf is not None:
        fns["RedLionfish"] = lambda: rlf(data, psf, niter=ITERATIONS, method="cpu")
        fns["convop, circular"] = lambda: convop.richardson_lucy(circular, y, ITERATIONS, x0=y)
        centre = redlionfish_centre(shape, PSF_SHAPE)
        got = rlf(data, psf, niter=ITERATIONS, method="cpu")
        if got is None:  # it logs its exception and returns None
            raise RuntimeError("RedLionfish's CPU mode returned None")
        f, b = periodic(psf, shape, centre, flipped=True)
        e_rlf = h.check(got, reference(data, f, b, ITERATIONS, data, False),
                        "RedLionfish = float64 loop of its update", RTOL)  # fmt: skip
        f, b = periodic(psf, shape, (0, 0, 0), flipped=False)
        ours_c = convop.richardson_lucy(circular, y, ITERATIONS, x0=y).x[0]
        e_c = h.check(ours_c, reference(data, f, b, ITERATIONS, data, False),
                      "convop, circular = float64 loop of periodic RL", RTOL)  # fmt: skip
        report.note(f"goal 2: RedLionfish's result = a float64 loop of periodic RL from the "
                    f"data whose forward blur has the PSF's centre at sample {centre} and "
                    f"whose back-projection is the flipped kernel array ({e_rlf:.1e}); convop "
                    f"(circular, x0=data) = periodic RL with the centre at 0 and the adjoint "
                    f"({e_c:.1e}); the two results differ by "
                    f"{np.abs(got - ours_c).max() / np.abs(ours_c).max():.1%} of max |x|: "
                    f"RedLionfish's forward blur is shifted by one sample along each axis of "
                    f"even length, and its back-projection is then not its adjoint")  # fmt: skip

    t = h.interleaved(fns, report.repeats, budget=120.0)
    labels = {
        "scikit-image": "scikit-image richardson_lucy(clip=False) (anchor)",
        "convop": "convop.richardson_lucy(op, y), numpy face",
        "convop, torch face": "convop.richardson_lucy(op, y), torch face",
        "convop, 1 thread": "convop.richardson_lucy(op, y), numpy face, torch on 1 thread",
        "products": f"{ITERATIONS} x (op.apply + op.apply_adjoint), torch face",
        "RedLionfish": "RedLionfish CPU doRLDeconvolutionFromNpArrays (anchor 2)",
        "convop, circular": "convop.richardson_lucy(circular op, y, x0=y)",
    }
    for name, seconds in t.items():
        anchor = "RedLionfish" if name == "convop, circular" else "scikit-image"
        note = "" if name in ("scikit-image", "RedLionfish") else f"{seconds / t[anchor]:.2f}x "
        note += f"{anchor}" if note else ""
        if name == "products":
            note = f"{seconds / t['convop, torch face']:.0%} of convop's RL (torch face)"
        report.record("speed", f"{case}, {ITERATIONS} its", labels[name], seconds, note)
    ratio = t["convop"] / t["scikit-image"]
    quick = " [quick: smaller case]" if report.quick else ""
    report.goal(1, f"convop / scikit-image, {ITERATIONS} RL its, {case}, zeros 'same'{quick}",
                ratio, None if report.quick else SPEED_BOUND,
                anchor=f"scikit-image {h.shown(t['scikit-image'])}",
                detail=f"aim {SPEED_AIM:g}x; convop {h.shown(t['convop'])} (numpy face), torch "
                f"face {t['convop, torch face'] / t['scikit-image']:.2f}x, torch on 1 thread "
                f"{t['convop, 1 thread'] / t['scikit-image']:.2f}x; its {ITERATIONS} "
                f"product pairs alone {h.shown(t['products'])} "
                f"({t['products'] / t['convop, torch face']:.0%} of the torch face's RL)",
                )  # fmt: skip
    if rlf is None:
        report.goal(2, f"convop / RedLionfish CPU, {case}", detail=f"skipped: {why}")
        return
    report.goal(2, f"convop / RedLionfish CPU, {ITERATIONS} RL its, {case}, periodic{quick}",
                t["convop, circular"] / t["RedLionfish"],
                anchor=f"RedLionfish {h.shown(t['RedLionfish'])}",
                detail=f"convop on RedLionfish's periodic model {h.shown(t['convop, circular'])}; "
                f"convop on the zero-padded model {t['convop'] / t['RedLionfish']:.2f}x "
                "RedLionfish (a larger FFT grid)")  # fmt: skip


# ---------------------------------------------------------------------- goals 3-5: quality
def camera_case() -> dict:
    """Goal 3's data: the camera crop, its scene, the model and the counts."""
    from skimage import data

    c = CAMERA
    psf = gaussian_kernel(c["psf"], c["sigma"])
    model = convop.extended_domain(psf, (c["size"], c["size"]))
    top, n = c["corner"] - model.offset[0], model.object_shape[0]
    scene = data.camera()[top : top + n, top : top + n] / 255.0
    y = counts(model.op @ scene.ravel(), c["peak"]).reshape(model.op.output_shape)
    return {"psf": psf, "model": model, "scene": scene, "truth": model.crop(scene), "y": y,
            "peak": c["peak"]}  # fmt: skip


def stack_case(quick: bool, peak: float) -> dict:
    """Goals 4-6's data: the synthetic stack seen through the 15x9x9 PSF."""
    psf = gaussian_psf(PSF_SHAPE, PSF_SIGMAS)
    model = convop.extended_domain(psf, QUICK_STACK if quick else STACK)
    scene = cell(model.object_shape)
    y = counts(model.op @ scene.ravel(), peak).reshape(model.op.output_shape)
    return {"psf": psf, "model": model, "scene": scene, "truth": model.crop(scene), "y": y,
            "peak": peak}  # fmt: skip


def compare_quality(report: h.Report, goal: int, what: str, c: dict, issue: dict | None,
                    quick: bool) -> None:  # fmt: skip
    """Blurred, scikit-image, convop on the zero-padded 'same' model and on the extended
    domain, at 30 iterations; the goal: extended >= scikit-image + 3 dB."""
    from skimage.restoration import richardson_lucy as skimage_rl

    model, y, psf, peak, truth = c["model"], c["y"], c["psf"], c["peak"], c["truth"]
    nd = psf.ndim
    weight = np.ascontiguousarray(np.flip(psf))[None, None]
    same = getattr(convop, f"conv{nd}d")(weight, (1, *model.image_shape), padding="same")
    its = QUALITY_ITERATIONS
    results = {
        "blurred": y,
        "scikit-image": skimage_rl(y[0], psf, num_iter=its, clip=False),
        "zeros 'same'": convop.richardson_lucy(same, y, its).x,
        "extended": model.crop(convop.richardson_lucy(model.op, y, its).x),
    }
    scores = {name: psnr(x / peak, truth) for name, x in results.items()}
    report.table(f"goal {goal}: {what}, PSNR after {its} iterations (dB)",
                 ["blurred", "scikit-image", "convop, scikit-image's zeros 'same' model",
                  "convop, extended domain"], [[f"{v:.2f}" for v in scores.values()]])  # fmt: skip
    gain, zeros = scores["extended"] - scores["scikit-image"], scores["zeros 'same'"]
    then = "" if issue is None else (
        f"; the issue measured {issue['blurred']} / {issue['scikit-image']} / "
        f"{issue['extended']} dB (its PSF width and crop unstated)")  # fmt: skip
    report.goal(goal, f"{what}: extended-domain RL - scikit-image, {QUALITY_ITERATIONS} its"
                + (" [quick: smaller case]" if quick else ""), gain, None if quick else GAIN,
                unit="dB", at_least=True, anchor=f"scikit-image {scores['scikit-image']:.1f} dB",
                also=scores["extended"] > scores["blurred"],
                detail=f"and above the blurred image; PSNR blurred {scores['blurred']:.1f}, "
                f"scikit-image {scores['scikit-image']:.1f}, convop on scikit-image's zeros "
                f"'same' model (normalised by A^T 1) {zeros:.1f}, "
                f"convop extended domain {scores['extended']:.1f} dB{then}")  # fmt: skip


def goal_camera(report: h.Report) -> None:
    c = camera_case()
    what = (f"camera {CAMERA['size']}^2, {CAMERA['psf']}x{CAMERA['psf']} Gaussian sigma "
            f"{CAMERA['sigma']:g}, peak {CAMERA['peak']:g}")  # fmt: skip
    compare_quality(report, 3, what, c, ISSUE_CAMERA, quick=False)


def stack_label(c: dict) -> str:
    shape = "x".join(map(str, c["model"].image_shape))
    return f"stack {shape}, {'x'.join(map(str, PSF_SHAPE))} PSF, peak {c['peak']:g}"


def goal_stack(report: h.Report) -> None:
    c = stack_case(report.quick, 1000.0)
    compare_quality(report, 4, stack_label(c), c, None, report.quick)


def tracked(c: dict, iterations: int, **options) -> tuple[list[float], np.ndarray]:
    """PSNR after every RL iteration (through the callback) and the last iterate."""
    model, peak, truth = c["model"], c["peak"], c["truth"]
    history: list[float] = []

    def score(k: int, x: np.ndarray) -> None:
        history.append(psnr(model.crop(x) / peak, truth))

    res = convop.richardson_lucy(model.op, c["y"], iterations, callback=score, **options)
    return history, res.x


def goal_tv(report: h.Report) -> None:
    c = stack_case(report.quick, TV_PEAK)
    iterations = TV_ITERATIONS // 2 if report.quick else TV_ITERATIONS
    plain, _ = tracked(c, iterations)
    best, at = max(plain), int(np.argmax(plain)) + 1
    rows, finals = [], {}
    for tv in (TV, *TV_OTHERS):
        history, _ = tracked(c, iterations, tv=tv)
        finals[tv] = history[-1]
        rows.append([f"{tv:g}", f"{history[-1]:.2f}", f"{max(history):.2f}",
                     str(int(np.argmax(history)) + 1), f"{history[-1] - best:+.2f}"])  # fmt: skip
    rows.append(["0 (plain RL)", f"{plain[-1]:.2f}", f"{best:.2f}", str(at),
                 f"{plain[-1] - best:+.2f}"])  # fmt: skip
    what = stack_label(c)
    report.table(f"goal 5: RL-TV, {what}, {iterations} iterations (PSNR, dB)",
                 ["tv", "final", "best", "best at", "final - plain RL's best"], rows)  # fmt: skip
    report.goal(5, f"RL-TV (tv={TV:g}) final - plain RL's best, {what}, {iterations} its"
                + (" [quick: smaller case]" if report.quick else ""), finals[TV] - best,
                None if report.quick else 0.0, unit="dB", at_least=True,
                anchor=f"plain RL's best {best:.2f} dB (iteration {at} of {iterations})",
                detail=f"RL-TV {finals[TV]:.2f} dB after {iterations} its, no early stop; "
                f"plain RL ends at {plain[-1]:.2f} dB; tv=" + ", ".join(
                    f"{tv:g}: {finals[tv]:.2f} dB" for tv in TV_OTHERS))  # fmt: skip


# ---------------------------------------------------------------------- goal 6: acceleration
def goal_accelerate(report: h.Report) -> None:
    cases = [("stack", stack_case(report.quick, 1000.0))]
    if importlib.util.find_spec("skimage") is not None:  # the camera photo is scikit-image's
        cases.insert(0, ("camera", camera_case()))
    for label, c in cases:
        op, y = c["model"].op, c["y"]
        target = likelihood(op, y, convop.richardson_lucy(op, y, ACCELERATE_TARGET).x)
        reached: list[int] = []

        def stop(k: int, x: np.ndarray, reached=reached, op=op, y=y, target=target) -> bool:
            if likelihood(op, y, x) >= target:
                reached.append(k)
                return True
            return False

        convop.richardson_lucy(op, y, ACCELERATE_TARGET, accelerate=True, callback=stop)
        k = reached[0] if reached else float("nan")
        what = stack_label(c) if label == "stack" else "camera 160^2, peak 1000"
        report.goal(6, f"accelerated RL: iterations to plain RL's likelihood after "
                    f"{ACCELERATE_TARGET}, {what}", k, unit=" it.",
                    anchor=f"plain RL, {ACCELERATE_TARGET} its",
                    detail=f"{k / ACCELERATE_TARGET:.0%} of the iterations" if reached else
                    f"not reached in {ACCELERATE_TARGET}")  # fmt: skip


# ---------------------------------------------------------------------- goal 7: MPI
def goal_distributed(report: h.Report) -> None:
    what = f"RL over MPI, P=2 / P=1 per iteration, 1x{96 if report.quick else 256}^3 float32"
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which(
        "mpiexec")  # fmt: skip
    if importlib.util.find_spec("mpi4py") is None or mpiexec is None:
        report.goal(7, what, detail="skipped: needs mpi4py and mpiexec (pip install mpich "
                    "mpi4py pylops-mpi)")  # fmt: skip
        return
    helper = Path(__file__).resolve().with_name("bench_richardson_lucy_mpi.py")
    with tempfile.TemporaryDirectory() as folder:
        dump = Path(folder) / "mpi.json"
        options = ["--json", str(dump), "--repeats", str(report.repeats)]
        command = [mpiexec, "-n", "2", sys.executable, str(helper), *options]
        command += ["--quick"] if report.quick else []
        report.say(f"  {' '.join(command[:5])} ... (its own report follows)")
        done = subprocess.run(command, timeout=1800, check=False)
        if done.returncode or not dump.is_file():
            raise RuntimeError(f"{' '.join(command[:5])} ...: exit status {done.returncode}")
        report.merge(json.loads(dump.read_text()))


def skimage_needed(run: Callable[[h.Report], None], goals: tuple[int, ...]):
    """``run``, or skipped rows where scikit-image is not installed."""

    def section(report: h.Report) -> None:
        if importlib.util.find_spec("skimage") is None:
            for goal in goals:
                report.goal(goal, "needs scikit-image", detail="skipped: pip install "
                            "scikit-image")  # fmt: skip
            return
        run(report)

    return section


SECTIONS = [
    h.Section("goals 1-2: speed, 10 RL iterations", skimage_needed(goal_speed, (1, 2)), (1, 2)),
    h.Section("goal 3: camera", skimage_needed(goal_camera, (3,)), (3,)),
    h.Section("goal 4: 3-D stack", skimage_needed(goal_stack, (4,)), (4,)),
    h.Section("goal 5: RL-TV", goal_tv, (5,)),
    h.Section("goal 6: accelerated", goal_accelerate, (6,)),
    h.Section("goal 7: distributed", goal_distributed, (7,)),
]

if __name__ == "__main__":
    sys.exit(h.main(__doc__, SECTIONS, repeats=(3, 5), retry=120.0))
