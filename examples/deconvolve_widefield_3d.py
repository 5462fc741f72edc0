"""Widefield 3-D deconvolution: Richardson-Lucy on the extended domain against scikit-image.

A synthetic widefield stack of 48x96x96 voxels (0.3 µm steps, 0.13 µm pixels; 24x48x48 with
``--quick``): a dim cytoplasm that fills the field of view and goes on past it (a smooth
random field of about 500 photons per voxel), some 300 sub-resolution beads in the frame
(900 in the object) of about 1e4 photons each, and curved filaments (cubic Bézier curves,
1e5 photons per µm); beads and filaments are about 0.17 µm across (a Gaussian of sigma
0.07 µm). The microscope is a water-immersion
objective of NA 1.2 on an aqueous sample (refractive index 1.333 on both sides, so the PSF
does not change with depth and one convolution models the stack), emission at 0.52 µm. Its
PSF is ``psfmodels.make_psf`` (the vectorial model of Aguet et al., ``pip install
psfmodels``, the ``psf`` extra), 15x61x61 samples (11x41x41 with ``--quick``), normalised
to sum 1. Without psfmodels the script falls back to a Gaussian-beam PSF: each plane a 2-D
Gaussian of the same total light, of sigma ``0.21 lambda / NA`` in focus and widening along
the objective's light cone with defocus, as a widefield PSF does. The output and the figure
say which PSF was used.

The camera records a frame of a specimen that goes on above, below and around it: the stack
is the 'valid' blur of an object larger by the PSF's reach, ``convop.extended_domain(psf,
stack_shape)``, plus a background of 100 counts per voxel (dark current, stray light),
with Poisson noise (fixed seed). The same PSF makes the data and deconvolves them.

Three restorations, 30 iterations each:

- scikit-image's ``restoration.richardson_lucy(y - b, psf, num_iter=30, clip=False)`` (it
  has no background parameter, so it gets the counts less the background, clipped at 0):
  zero padding (``'same'``) and no normalisation by ``A^T 1``;
- ``convop.richardson_lucy(model.op, y, 30, background=b)`` on the extended domain,
  cropped to the stack with ``model.crop``;
- the same with ``accelerate=True`` (Biggs and Andrews' vector extrapolation).

The script prints the PSNR of each (``convop.data.psnr``, the peak is the range of the true
stack; the data are the counts less the background) and checks that convop's RL beats
scikit-image's by at least 3 dB and beats the data by at least 0.5 dB, that plain RL's
Poisson log-likelihood never decreases, and that accelerated RL reaches plain RL's
30-iteration likelihood in fewer iterations.

scikit-image's loss is near the faces of the stack. Its zero padding has the out-of-focus
light of the specimen above, below and around the stack come from nowhere, and without the
normalisation by ``A^T 1`` (which falls off within half a PSF window of each face) the
outer planes darken and their light piles up in a bright plane half a PSF window in from
each face, the first that sees a whole window of data. The loss grows with the light that
crosses the faces: here the cytoplasm's. Plain RL converges slowly on a widefield stack: 30
iterations gain about a decibel over the data at full size, the accelerated ones about
four.

The figure (``deconvolve_widefield_3d.png`` in ``--out``) shows orthogonal slices (xy, xz,
yz) through the bead nearest the centre of the true stack, the data and the three
restorations (the truth and the restorations from 0 to the truth's 99.9th percentile, the
data to their own), the PSNR of each plane against its depth, the log-likelihood of plain
and accelerated RL by iteration, and the PSF (its model in the panel's title).

Usage::

    python examples/deconvolve_widefield_3d.py [--out DIR] [--quick]
"""

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.colors import LogNorm, PowerNorm
from matplotlib.figure import Figure
from scipy import ndimage
from skimage.restoration import richardson_lucy as skimage_richardson_lucy

import convop
from convop.data import psnr

# The microscope: a water-immersion objective on an aqueous sample (matched indices: the
# PSF is the same at every depth), GFP's emission; lengths in µm.
NA, INDEX, WAVELENGTH = 1.2, 1.333, 0.52
VOXEL = (0.3, 0.13, 0.13)  # (z step, pixel, pixel)
SHAPE, QUICK_SHAPE = (48, 96, 96), (24, 48, 48)  # the stack, (z, y, x)
PSF_SHAPE, QUICK_PSF_SHAPE = (15, 61, 61), (11, 41, 41)
# The specimen: beads and filaments in the full-size object (62x156x156 voxels, about a
# third of them in the stack's frame; in proportion to the volume with --quick), photons,
# and the width of beads and filaments (a Gaussian's sigma, µm).
BEADS, BEAD_PHOTONS = 900, 1e4
FILAMENTS, FILAMENT_PHOTONS = 27, 1e5  # photons per µm of filament
CYTOPLASM, CYTOPLASM_LENGTH = 500.0, 1.0  # mean photons per voxel, correlation length (µm)
WIDTH = 0.07
BACKGROUND, SEED = 100.0, 0  # counts per voxel that come from no object; the noise's seed
ITERATIONS = 30
MARGIN_DB, DATA_MARGIN_DB = 3.0, 0.5  # convop's RL must beat scikit-image's, the data's


def check(passed: bool, claim: str) -> None:
    """Print ``ok: claim``, or stop with ``FAILED: claim`` (exit status 1)."""
    if not passed:
        raise SystemExit(f"FAILED: {claim}")
    print(f"ok: {claim}")


def widefield_psf(shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    """The PSF ``shape`` (z, y, x), sum 1, centred at sample ``k // 2``, and its name."""
    try:
        import psfmodels
    except ImportError:
        return gaussian_beam_psf(shape), "Gaussian beam (psfmodels is not installed)"
    psf = psfmodels.make_psf(
        shape[0],
        shape[1],
        dxy=VOXEL[1],
        dz=VOXEL[0],
        NA=NA,
        wvl=WAVELENGTH,
        ns=INDEX,
        ni=INDEX,
        ni0=INDEX,
        model="vectorial",
    )
    return psf / psf.sum(), f"vectorial (psfmodels {psfmodels.__version__})"


def gaussian_beam_psf(shape: tuple[int, int, int]) -> np.ndarray:
    """The fallback: planes of equal light, 2-D Gaussians widening with defocus ``z``.

    ``sigma(z)^2 = sigma_0^2 + (z tan(theta) / 2)^2``: the in-focus width of the Airy disk's
    best Gaussian, ``sigma_0 = 0.21 lambda / NA``, and the per-axis spread of the light
    cone's disk of radius ``z tan(theta)``, ``sin(theta) = NA / n``.
    """
    z, y, x = (VOXEL[a] * (np.arange(k) - k // 2) for a, k in enumerate(shape))
    sigma0, slope = 0.21 * WAVELENGTH / NA, math.tan(math.asin(NA / INDEX)) / 2
    sigma = np.sqrt(sigma0**2 + (slope * z) ** 2)[:, None, None]  # (nz, 1, 1)
    planes = np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))  # (nz, ny, nx)
    planes /= 2 * np.pi * sigma**2 / (VOXEL[1] * VOXEL[2])  # the same light in every plane,
    return planes / planes.sum()  # some of it outside the window, as the vectorial PSF's


def splat(volume: np.ndarray, points: np.ndarray, weights: np.ndarray) -> None:
    """Add ``weights`` at the sub-voxel ``points`` ``(n, 3)`` by trilinear interpolation."""
    base = np.floor(points).astype(int)
    frac = points - base
    limit = np.array(volume.shape)
    for corner in np.ndindex(2, 2, 2):
        index = base + corner
        share = weights * np.prod(np.where(np.array(corner) == 1, frac, 1 - frac), axis=1)
        inside = np.all((index >= 0) & (index < limit), axis=1)
        np.add.at(volume, tuple(index[inside].T), share[inside])


def specimen(
    shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The object, photons per voxel of ``shape``, and its beads' centres ``(n, 3)`` (voxels)."""
    size = np.array(shape) - 1.0
    scale = math.prod(shape) / math.prod(np.add(SHAPE, PSF_SHAPE) - 1)  # to the full object
    points = np.zeros(shape)
    beads = rng.random((max(1, round(BEADS * scale)), 3)) * size
    splat(points, beads, BEAD_PHOTONS * rng.uniform(0.5, 1.5, len(beads)))
    t = np.linspace(0.0, 1.0, 8000)[:, None]  # (8000, 1) along each curve
    for _ in range(max(2, round(FILAMENTS * scale))):
        p0, p1, p2, p3 = rng.random((4, 3)) * size  # control points, voxels
        curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
        lengths = np.linalg.norm(np.diff(curve, axis=0) * VOXEL, axis=1)  # (7999,), µm
        splat(points, curve[1:], FILAMENT_PHOTONS * lengths)
    points = ndimage.gaussian_filter(points, [WIDTH / v for v in VOXEL])
    field = ndimage.gaussian_filter(
        rng.standard_normal(shape), [CYTOPLASM_LENGTH / v for v in VOXEL]
    )
    cytoplasm = CYTOPLASM * np.clip(1 + 0.6 * field / field.std(), 0, None)
    return points + cytoplasm, beads


def log_likelihood(op: convop.ConvOperator, y: np.ndarray, x: np.ndarray) -> float:
    """``sum y log(A x + b) - (A x + b)``, the Poisson log-likelihood up to a constant."""
    mean = op @ np.ravel(x) + BACKGROUND  # > 0: b > 0 and A x >= 0
    return float(np.sum(y.ravel() * np.log(mean) - mean))


class Run(NamedTuple):
    x: np.ndarray  # (z, y, x), the stack's frame
    likelihood: np.ndarray  # (iterations,) after each iteration


def convop_rl(model: convop.ExtendedDomain, y: np.ndarray, accelerate: bool) -> Run:
    """convop's RL on the extended domain, with the background; the likelihood tracked."""
    history: list[float] = []
    result = convop.richardson_lucy(
        model.op,
        y,
        ITERATIONS,
        background=BACKGROUND,
        accelerate=accelerate,
        callback=lambda k, x: history.append(log_likelihood(model.op, y, x)),
    )
    return Run(model.crop(result.x[0]), np.array(history))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("figures"), help="the figure's folder")
    parser.add_argument(
        "--quick", action="store_true", help="a {}x{}x{} stack".format(*QUICK_SHAPE)
    )
    args = parser.parse_args()
    shape = QUICK_SHAPE if args.quick else SHAPE
    psf, psf_name = widefield_psf(QUICK_PSF_SHAPE if args.quick else PSF_SHAPE)
    model = convop.extended_domain(psf, shape)
    rng = np.random.default_rng(SEED)
    scene, beads = specimen(model.object_shape, rng)  # the object, larger than the stack
    truth = model.crop(scene)
    y = rng.poisson(model.op @ scene.ravel() + BACKGROUND).astype(float)
    y = y.reshape(model.op.output_shape)  # (1, z, y, x), counts
    print(
        f"PSF: {psf_name}, {'x'.join(map(str, psf.shape))} samples of "
        f"{VOXEL[0]} x {VOXEL[1]} x {VOXEL[2]} µm, NA {NA}, n {INDEX}, "
        f"emission {WAVELENGTH} µm"
    )
    seen = np.all((beads >= model.offset) & (beads <= np.add(model.offset, shape) - 1), axis=1)
    print(
        f"stack {'x'.join(map(str, shape))} seen of an object of "
        f"{'x'.join(map(str, model.object_shape))}: {seen.sum()} beads in the frame "
        f"({len(beads)} in the object), counts up to {y.max():.0f} over a background of "
        f"{BACKGROUND:g}"
    )

    sk = skimage_richardson_lucy(
        np.clip(y[0] - BACKGROUND, 0, None), psf, num_iter=ITERATIONS, clip=False
    )
    plain, fast = convop_rl(model, y, False), convop_rl(model, y, True)
    volumes = {
        "data (counts - b)": y[0] - BACKGROUND,
        "scikit-image RL": sk,
        "convop RL": plain.x,
        "convop RL, accelerated": fast.x,
    }
    scores = {name: psnr(v, truth) for name, v in volumes.items()}
    print()
    print(f"  PSNR against the true stack (the restorations after {ITERATIONS} iterations)")
    for name, score in scores.items():
        print(f"  {name:<24} {score:6.2f} dB")
    print()

    gain = scores["convop RL"] - scores["scikit-image RL"]
    check(
        gain >= MARGIN_DB, f"convop's RL beats scikit-image's by {gain:.2f} dB >= {MARGIN_DB} dB"
    )
    gain = scores["convop RL"] - scores["data (counts - b)"]
    check(
        gain >= DATA_MARGIN_DB,
        f"convop's RL beats the data by {gain:.2f} dB >= {DATA_MARGIN_DB} dB",
    )
    steps = np.diff(plain.likelihood)
    check(
        bool(np.all(steps >= -1e-12 * abs(plain.likelihood[-1]))),
        "plain RL's log-likelihood never decreases",
    )
    target = plain.likelihood[-1]
    reached = np.flatnonzero(fast.likelihood >= target)
    k = int(reached[0]) + 1 if reached.size else ITERATIONS + 1
    check(
        k < ITERATIONS,
        f"accelerated RL reaches plain RL's {ITERATIONS}-iteration likelihood after "
        f"{k} iterations",
    )

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "deconvolve_widefield_3d.png"
    centre = nearest_bead(beads - model.offset, shape)
    figure = plot(truth, volumes, centre, psf, psf_name, plain, fast, k)
    figure.savefig(path, dpi=90)
    print(f"figure: {path}")
    print("All checks passed.")


def nearest_bead(beads: np.ndarray, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The voxel of the bead (in the stack's frame) nearest the stack's centre, in µm."""
    distance = np.linalg.norm((beads - (np.array(shape) - 1) / 2) * VOXEL, axis=1)
    inside = np.all((beads >= 0) & (beads <= np.array(shape) - 1), axis=1)
    best = beads[np.argmin(np.where(inside, distance, np.inf))]
    return tuple(int(v) for v in np.rint(best))


def plot(
    truth: np.ndarray,
    volumes: dict[str, np.ndarray],
    centre: tuple[int, int, int],
    psf: np.ndarray,
    psf_name: str,
    plain: Run,
    fast: Run,
    k: int,
) -> Figure:
    nz, ny, nx = truth.shape
    dz, dy, dx = VOXEL
    z0, y0, x0 = centre
    shown = {"truth": truth, **volumes}
    cuts = {
        "xy": (lambda v: v[z0], [0, nx * dx, ny * dy, 0], f"xy, z = {z0 * dz:.1f} µm", "y"),
        "xz": (lambda v: v[:, y0], [0, nx * dx, nz * dz, 0], f"xz, y = {y0 * dy:.1f} µm", "z"),
        "yz": (lambda v: v[:, :, x0], [0, ny * dy, nz * dz, 0], f"yz, x = {x0 * dx:.1f} µm", "z"),
    }
    columns = list(shown)
    mosaic = [[f"{cut} {name}" for name in columns] for cut in cuts]
    mosaic.append(["depth"] * 3 + ["likelihood"] + ["psf"])
    fig = Figure(figsize=(16, 15), layout="constrained")
    axes = fig.subplot_mosaic(mosaic, height_ratios=(ny * dy, nz * dz, nz * dz, 10))
    # The restorations estimate the truth's photons: one scale for them all. The data's
    # counts are spread by the blur: a scale of their own.
    scale = float(np.percentile(truth, 99.9))
    for name, volume in shown.items():
        top = float(np.percentile(volume, 99.9)) if name.startswith("data") else scale
        quality = "" if name == "truth" else f"\nPSNR {psnr(volume, truth):.2f} dB"
        for cut, (section, extent, where, vertical) in cuts.items():
            ax = axes[f"{cut} {name}"]
            norm = PowerNorm(0.5, vmin=0, vmax=top)  # square-root scale: faint things show
            ax.imshow(section(volume), cmap="magma", norm=norm, extent=extent)
            ax.set_title(f"{name}{quality}\n{where}" if cut == "xy" else where, fontsize=9)
            ax.tick_params(labelsize=7)
            if name == "truth":
                ax.set_ylabel(f"{vertical} (µm)", fontsize=9)
    fig.suptitle(
        "Orthogonal slices through the bead nearest the centre (µm), on a square-root scale: "
        "the truth and the restorations from 0 to the truth's 99.9th percentile, the data to "
        "their own",
        fontsize=11,
    )

    ax = axes["depth"]
    depth = np.arange(nz) * dz
    peak = float(truth.max() - truth.min())
    for name, volume in volumes.items():
        by_plane = [psnr(volume[i], truth[i], data_range=peak) for i in range(nz)]
        ax.plot(depth, by_plane, marker=".", label=f"{name} ({psnr(volume, truth):.2f} dB)")
    ax.set_xlabel("depth z (µm)")
    ax.set_ylabel("PSNR of the plane (dB)")
    ax.set_title("PSNR by depth (peak: the true stack's range)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes["likelihood"]
    steps = np.arange(1, ITERATIONS + 1)
    start = plain.likelihood[0]
    for run, label in ((plain, "plain"), (fast, "accelerated")):
        ax.plot(steps, run.likelihood - start, marker=".", label=label)
    ax.axhline(plain.likelihood[-1] - start, color="0.4", ls=":")
    ax.axvline(k, color="0.4", ls="--", label=f"plain's final level\nreached at {k}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("less plain RL's after 1 iteration")
    ax.set_title("Poisson log-likelihood", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes["psf"]
    kz, ky, kx = psf.shape
    half_x, half_z = (kx // 2) * dx, (kz // 2) * dz
    ax.imshow(
        psf[:, ky // 2],
        cmap="magma",
        norm=LogNorm(psf.max() * 1e-4, psf.max()),
        extent=[-half_x, half_x, half_z, -half_z],
    )
    ax.set_title(f"PSF, xz (log scale):\n{psf_name}", fontsize=9)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("z (µm)")
    return fig


if __name__ == "__main__":
    main()
