"""What ``convop deblur`` recovers, and how close its automatic damping is to the best.

Usage::

    python benchmarks/bench_deblur_quality.py          # about 3 minutes
    python benchmarks/bench_deblur_quality.py --quick  # the Gaussian blur at 1% noise only

Issue 15's measurement: a 256^2 crop of scikit-image's ``camera`` (left out without
scikit-image) and ``convop.data.phantom(256)``, blurred by ``gaussian:9:2`` or
``motion:15:30`` (reflect padding) plus white noise of 0.5%, 1% and 2% (seed 0), each
deblurred through ``convop.cli.main`` with the defaults (total variation), with
``--nonneg`` and with ``--method tikhonov``; then the Tikhonov damping swept (21 values from
1e-3 to 0.5, then 7 around the best; pcg to 1e-8) and ``convop.choose_damping``'s choices
(discrepancy principle, GCV) scored against the sweep's best PSNR. Goals: 1. the default
gains >= 2 dB on the camera, Gaussian blur, 1% noise; 2. the default, with or without
``--nonneg``, makes no case worse; 3. the discrepancy principle's damping is within 0.5 dB
of the sweep's best at 1% noise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _harness as h  # benchmarks/, the script's own folder
import numpy as np

import convop
from convop.cli import main
from convop.data import phantom, psnr
from convop.imaging import load_kernel
from convop.solvers import pcg

SIZE = 256
KERNELS = ("gaussian:9:2", "motion:15:30")
NOISE = (0.005, 0.01, 0.02)
GAIN = 2.0  # dB: the default's goal on the camera, gaussian:9:2, 1% noise
DAMPING_LOSS = 0.5  # dB: the automatic damping's goal against the sweep's best, at 1% noise


def image(name: str) -> np.ndarray:
    if name == "phantom":
        return phantom(SIZE)
    from skimage import data

    return data.camera()[128 : 128 + SIZE, 128 : 128 + SIZE] / 255.0


def deblur(path: Path, spec: str, *extra: str) -> tuple[np.ndarray, float, str]:
    """The CLI on ``path``: ``(result, seconds, its report line)``."""
    out = path.with_name(path.stem + "-out.npy")
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = main(["deblur", str(path), "--kernel", spec, "--quiet", "--output", str(out),
                     *extra])  # fmt: skip
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"convop deblur exited with {code}: {printed.getvalue()}")
    return np.load(out), seconds, printed.getvalue().splitlines()[1]


def sweep(op, y: np.ndarray, truth: np.ndarray) -> tuple[float, float, Callable]:
    """``(best PSNR, its damping, quality)``: Tikhonov's damping swept, solved by pcg."""

    def quality(damp: float) -> float:
        return psnr(pcg(op, y, damp, rtol=1e-8, maxiter=1000).x, truth)

    coarse = np.geomspace(1e-3, 0.5, 21)
    values = [quality(d) for d in coarse]
    i = int(np.argmax(values))
    fine = np.geomspace(coarse[max(i - 1, 0)], coarse[min(i + 1, len(coarse) - 1)], 7)
    values += [quality(d) for d in fine]
    best = int(np.argmax(values))
    return values[best], float(np.concatenate([coarse, fine])[best]), quality


def cases(report: h.Report, name: str, spec: str) -> None:
    """Every noise level of one image and kernel: the CLI's three results and the damping."""
    truth, k = image(name), load_kernel(spec)
    op = convop.conv2d(k.reshape(1, 1, *k.shape[-2:]), (1, SIZE, SIZE), padding="same",
                       padding_mode="reflect")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "blurred.npy"
        for sigma in (0.01,) if report.quick else NOISE:
            case = f"{name} {spec} {sigma:g}"
            y = (op @ truth.ravel()).reshape(SIZE, SIZE)
            y = y + sigma * np.random.default_rng(0).standard_normal(y.shape)
            np.save(path, y)
            runs = [
                deblur(path, spec, *extra)
                for extra in ((), ("--nonneg",), ("--method", "tikhonov"))
            ]
            base = psnr(y, truth)
            gains = [psnr(x, truth) - base for x, _, _ in runs]
            report.data.append({"table": 0, "row": [name, f"`{spec}`", f"{sigma:g}",
                                f"{base:.2f} dB"] + [f"{g:+.2f} dB ({t:.1f} s)" for g, (
                                    _, t, _) in zip(gains, runs)]})  # fmt: skip
            report.say(f"  {case}: input {base:5.2f} dB, gains {gains[0]:+.2f} / {gains[1]:+.2f}"
                       f" / {gains[2]:+.2f} dB [{runs[0][2][:60]}]")  # fmt: skip
            report.goal(2, f"default (tv) and --nonneg, {case}", min(gains[:2]), 0.0, unit="dB",
                        at_least=True, anchor=f"the blurred input, {base:.2f} dB",
                        detail=f"default {gains[0]:+.2f} dB, --nonneg {gains[1]:+.2f} dB, "
                        f"tikhonov {gains[2]:+.2f} dB")  # fmt: skip
            if (name, spec, sigma) == ("camera", "gaussian:9:2", 0.01):
                report.goal(1, f"default (tv), {case}", gains[0], GAIN, unit="dB", at_least=True,
                            anchor=f"the blurred input, {base:.2f} dB")  # fmt: skip
            best, best_damp, quality = sweep(op, y.ravel(), truth)
            chosen = {rule: convop.choose_damping(op, y.ravel(), method=rule)
                      for rule in ("discrepancy", "gcv")}  # fmt: skip
            loss = {rule: quality(d) - best for rule, d in chosen.items()}
            report.data.append({"table": 1, "row": [name, f"`{spec}`", f"{sigma:g}",
                                f"{best:.2f} dB at {best_damp:.3g}"] + [f"{chosen[r]:.3g} "
                                f"({loss[r]:+.2f} dB)" for r in chosen]})  # fmt: skip
            report.goal(3, f"discrepancy principle's damping, {case}", loss["discrepancy"],
                        -DAMPING_LOSS if sigma == 0.01 else None, unit="dB", at_least=True,
                        anchor=f"the sweep's best, {best:.2f} dB at {best_damp:.3g}",
                        detail=f"discrepancy {chosen['discrepancy']:.3g}; gcv "
                        f"{chosen['gcv']:.3g} ({loss['gcv']:+.2f} dB)")  # fmt: skip


def sections(args) -> list[h.Section]:
    names = ["camera", "phantom"] if importlib.util.find_spec("skimage") else ["phantom"]
    return [h.Section(f"{name} {spec}", lambda report, n=name, s=spec: cases(report, n, s),
                      (1, 2, 3) if name == "camera" else (2, 3))
            for name in names for spec in KERNELS[:1 if args.quick else 2]]  # fmt: skip


def finish(report: h.Report) -> None:
    if not importlib.util.find_spec("skimage"):
        report.note("scikit-image is not installed: the camera photo is left out")
    head = ["image", "kernel", "noise"]
    for index, (title, header) in enumerate((
        ("PSNR gain over the input, and the CLI's time",
         ["input PSNR", "default (tv)", "tv `--nonneg`", "tikhonov (discrepancy)"]),
        ("Tikhonov damping", ["sweep's best", "discrepancy", "gcv"]),
    )):  # fmt: skip
        report.table(title, head + header, [d["row"] for d in report.data if d["table"] == index])


if __name__ == "__main__":
    sys.exit(h.main(__doc__, sections, finish=finish))
