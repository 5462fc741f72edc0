"""What ``convop deblur`` recovers: PSNR of its default (auto: TV) and of Tikhonov (GCV).

Issue 15's measurement, side by side in one run: a 256^2 crop of scikit-image's ``camera``
photo (rows and columns 128-383, values in [0, 1]; the generated phantom when scikit-image
is not installed) and ``convop.data.phantom(256)``, blurred with ``gaussian:9:2`` or
``motion:15:30`` (reflect padding, ``padding="same"``) plus white noise of standard
deviation 0.5%, 1% and 2% (seed 0). Each case is deblurred through the CLI's own entry point
(``convop.cli.main``) twice: with no options but the kernel (``--method auto``: total
variation, its weight 2x the noise estimated from the image) and with ``--method tikhonov``
(damping by generalised cross-validation). The goal (issue 15): the default gains at least
2 dB over the blurred input on the camera with the Gaussian blur and 1% noise, and makes no
case worse. Run::

    .venv/bin/python benchmarks/bench_deblur_quality.py          # about 35 s
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import convop
from convop.cli import main
from convop.data import phantom, psnr
from convop.imaging import load_kernel

SIZE = 256
KERNELS = ("gaussian:9:2", "motion:15:30")
NOISE = (0.005, 0.01, 0.02)
GAIN = 2.0  # dB: the default's goal on the camera, gaussian:9:2, 1% noise


def images() -> dict[str, np.ndarray]:
    try:
        from skimage import data
    except ImportError:
        print("scikit-image is not installed: the camera photo is left out", file=sys.stderr)
        return {"phantom": phantom(SIZE)}
    camera = data.camera()[128 : 128 + SIZE, 128 : 128 + SIZE] / 255.0
    return {"camera": camera, "phantom": phantom(SIZE)}


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


def main_() -> int:
    print(f"convop {convop.__version__}; {SIZE}^2 images, reflect padding, noise seed 0")
    rows, failed = [], []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "blurred.npy"
        for name, truth in images().items():
            for spec in KERNELS:
                k = load_kernel(spec)
                op = convop.conv2d(k.reshape(1, 1, *k.shape[-2:]), (1, SIZE, SIZE),
                                   padding="same", padding_mode="reflect")  # fmt: skip
                for sigma in NOISE:
                    rng = np.random.default_rng(0)
                    y = (op @ truth.ravel()).reshape(SIZE, SIZE)
                    y = y + sigma * rng.standard_normal(y.shape)
                    np.save(path, y)
                    auto, t_auto, line = deblur(path, spec)
                    tikhonov, t_tik, _ = deblur(path, spec, "--method", "tikhonov")
                    base = psnr(y, truth)
                    gains = psnr(auto, truth) - base, psnr(tikhonov, truth) - base
                    rows.append((name, spec, sigma, base, *gains, t_auto, t_tik))
                    print(f"{name:8s} {spec:13s} noise {sigma:<6g} input {base:5.2f} dB   "
                          f"default {gains[0]:+5.2f} dB ({t_auto:4.1f} s)   tikhonov "
                          f"{gains[1]:+5.2f} dB ({t_tik:4.1f} s)   [{line[:60]}]",
                          flush=True)  # fmt: skip
                    if gains[0] < 0:
                        failed.append(f"{name} {spec} {sigma}: the default made it worse")
                    if (name, spec, sigma) == ("camera", "gaussian:9:2", 0.01) and gains[0] < GAIN:
                        failed.append(f"camera gaussian 1%: {gains[0]:+.2f} dB < +{GAIN:g} dB")
    print("\n| image | kernel | noise | input PSNR | default (tv) | tikhonov (gcv) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, spec, sigma, base, g_auto, g_tik, t_auto, t_tik in rows:
        print(f"| {name} | `{spec}` | {sigma:g} | {base:.2f} dB | {g_auto:+.2f} dB "
              f"({t_auto:.1f} s) | {g_tik:+.2f} dB ({t_tik:.1f} s) |")  # fmt: skip
    print("\n" + ("\n".join(f"FAIL {f}" for f in failed) if failed else "every goal met"))
    return 0


if __name__ == "__main__":
    sys.exit(main_())
