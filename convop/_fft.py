"""The FFT algorithm behind the same forward and adjoint maps as :mod:`convop.functional`.

Every convolution convop supports is one circulant product framed by cheap index maps:

- convolution: ``y = subsample_s( window_[0, Np-D) ( circ_K ( pad(x) ) ) )`` where ``K`` is
  the per-frequency channel-mixing matrix of the *correlation* with the dilated kernel;
- transposed convolution: ``y = window_[p, p+N) ( circ_K ( upsample_s(x) ) )`` with ``K``
  the spectrum of the *convolution* with the dilated kernel.

Here ``Np`` is the padded length, ``D = d (k - 1)`` the dilated span, and the FFT length per
dimension is a fast length (only factors 2, 3, 5; even in 1-D) at least as long as the
linear result, so the circulant product never wraps into the samples kept. The adjoint runs
the same frame backwards: place the output samples into zeros, multiply by ``K^H``
(conjugate transpose per frequency), take the input window, and apply ``pad_adjoint``
(convolution) — exact, since it is the adjoint of each step.

Real data and weights use ``rfftn``; complex ones ``fftn``. A real weight applied to complex
data runs the real and imaginary parts as one batch of real data.

Accuracy and non-finite data. The round-off of an FFT product is relative to
``||w||_1 * max|x|`` (the bound on any output sample), not to each output sample: samples much
smaller than that bound carry that absolute error. One NaN or Inf anywhere in the data or the
weight would spread to *every* output sample through the transforms, and huge finite values
could overflow where the direct sum does not; :func:`representable` tells when neither can
happen, and the operators fall back to the direct evaluation otherwise, so the non-finite
pattern of a result is always exactly the direct convolution's.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import scipy.fft
import torch
import torch.nn.functional as F

from ._shared.memory import check_memory
from .geometry import ConvGeometry
from .padding import pad, pad_adjoint, pad_adjoint_, pad_into


def fast_length(n: int, *, even: bool = False) -> int:
    """Smallest length ``>= n`` whose only prime factors are 2, 3 and 5 (and 2, if ``even``).

    ``even`` for the grids of 1-D products: a real FFT of odd length cannot halve its work
    the way even ones do, and torch's ran 2x slower on 16875 samples than on 17280 here
    (rfft + irfft of 8 rows; complex: 1.5x). In 2-D and 3-D the last axis is only part of
    the work, and odd lengths measured as fast as the next even one.

    Examples
    --------
    >>> fast_length(1038), fast_length(512), fast_length(16500), fast_length(16500, even=True)
    (1080, 512, 16875, 17280)
    """
    try:
        length = int(scipy.fft.next_fast_len(int(n), real=True))
        while even and length % 2:
            length = int(scipy.fft.next_fast_len(length + 1, real=True))
        return length
    except ValueError:  # beyond any FFT scipy can plan; such sizes never fit in memory anyway
        return int(n) + (even and int(n) % 2)


@dataclass(frozen=True)
class Frame:
    """Where the FFT-based product reads and writes, per spatial dimension."""

    sizes: tuple[int, ...]  # FFT length L per dimension
    input_window: tuple[slice, ...]  # where the (padded) input lies on the length-L grid
    output_window: tuple[slice, ...]  # where the output samples lie on the grid
    # where a convolution's input lies on the grid when its padding is zeros: the padding
    # and the grid in one placement (transposed convolutions: their input_window)
    zero_padded_window: tuple[slice, ...]


def frame(geom: ConvGeometry) -> Frame:
    """The FFT frame of a geometry (see the module docstring)."""
    sizes, input_window, output_window, zero_padded = [], [], [], []
    length = functools.partial(fast_length, even=geom.ndim == 1)
    for i in range(geom.ndim):
        n, (lo, hi) = geom.input_size[i], geom.padding[i]
        k, s, d = geom.kernel_size[i], geom.stride[i], geom.dilation[i]
        span = d * (k - 1)
        if geom.transposed:
            upsampled = (n - 1) * s + 1
            out = geom.output_size[i]
            sizes.append(length(max(upsampled + span, lo + out)))
            input_window.append(slice(0, upsampled, s))
            output_window.append(slice(lo, lo + out))
            zero_padded.append(input_window[-1])
        else:
            padded = n + lo + hi
            sizes.append(length(padded))
            input_window.append(slice(0, padded))
            output_window.append(slice(0, padded - span, s))
            zero_padded.append(slice(lo, lo + n))
    return Frame(tuple(sizes), tuple(input_window), tuple(output_window), tuple(zero_padded))


@dataclass(frozen=True)
class Spectrum:
    """Everything the FFT method precomputes for one weight: frame and mixing matrices."""

    frame: Frame
    mixing: torch.Tensor  # (G, F, O/G, C/G): one channel-mixing matrix per frequency
    half: bool  # rfft half spectrum (real weight)

    @functools.cached_property
    def full_mixing(self) -> torch.Tensor:
        """The mixing matrices over the full spectrum, for complex data through a real weight.

        Complex data take the complex transforms (``fftn``/``ifftn``) on the grid: the
        FFT floor of complex data, where a real and an imaginary half through ``rfftn``
        need a split, a join and a two-sample inverse (about 1.6x the time here). Made on
        first use from the half spectrum (a real signal's), by one inverse and one forward
        transform; differentiable like :attr:`mixing`.
        """
        if not self.half:
            return self.mixing
        groups, _, rows, cols = self.mixing.shape
        sizes = self.frame.sizes
        dims = tuple(range(3, 3 + len(sizes)))
        half = self.mixing.permute(0, 2, 3, 1).reshape(
            groups, rows, cols, *sizes[:-1], sizes[-1] // 2 + 1
        )  # (G, O/G, C/G, *F)
        full = torch.fft.fftn(torch.fft.irfftn(half, s=sizes, dim=dims), dim=dims)
        return full.flatten(3).permute(0, 3, 1, 2).contiguous()  # (G, L, O/G, C/G)

    def operand(self, *, full: bool, adjoint: bool) -> tuple[torch.Tensor, bool]:
        """``(K, conjugate_transpose)``: what :func:`_mix` multiplies by, and how.

        ``full``: the full spectrum (complex data). For the adjoint with one channel per
        group, ``conj(K)`` is kept as a tensor of its own, made on first use: a product
        with a lazily conjugated tensor conjugates it at every call (2.3x the time of the
        plain pointwise product of a 576x289 spectrum). Many channels per group mix by
        matmul, whose BLAS kernels read the conjugate transpose directly.
        """
        mixing = self.full_mixing if full else self.mixing
        if not adjoint or mixing.shape[-2:] != (1, 1) or mixing.requires_grad:
            return mixing, adjoint
        key = "_conj_full" if full else "_conj"
        kept = self.__dict__.get(key)  # a race computes it twice, harmlessly
        if kept is None:
            kept = self.__dict__[key] = mixing.conj().resolve_conj()
        return kept, False


def spectrum(weight: torch.Tensor, geom: ConvGeometry) -> Spectrum:
    """The per-frequency mixing matrices ``K`` of ``weight``, shape ``(G, F, O/G, C/G)``.

    ``F`` counts the frequencies (flattened); real weights get the half spectrum of
    ``rfftn``. Stored frequency-major so that mixing is one batched matmul. Differentiable
    with respect to the weight.
    """
    fr = frame(geom)
    ndim, g = geom.ndim, geom.groups
    half = not weight.is_complex()
    # dilated kernel on the full FFT grid: taps at kappa * d
    dilated = weight.new_zeros((*weight.shape[:2], *fr.sizes))
    taps = tuple(slice(0, d * (k - 1) + 1, d) for k, d in zip(geom.kernel_size, geom.dilation))
    dilated[(..., *taps)] = weight
    dims = tuple(range(2, 2 + ndim))
    if geom.transposed:
        # convolution: K = FFT(w); weight (C_in, C_out/G, *k) -> (G, C_out/G, C_in/G, *F)
        mixing = torch.fft.rfftn(dilated, dim=dims) if half else torch.fft.fftn(dilated, dim=dims)
        mixing = mixing.reshape(g, -1, *mixing.shape[1:]).transpose(1, 2)
    else:
        # correlation: K = conj(FFT(conj(w))); weight (C_out, C_in/G, *k) -> (G, O/G, C/G, *F)
        if half:
            mixing = torch.fft.rfftn(dilated, dim=dims).conj()
        else:
            mixing = torch.fft.fftn(dilated.conj(), dim=dims).conj()
        mixing = mixing.reshape(g, -1, *mixing.shape[1:])
    # (G, O/G, C/G, *F) -> (G, F, O/G, C/G)
    mixing = mixing.flatten(3).permute(0, 3, 1, 2)
    return Spectrum(fr, mixing.resolve_conj().contiguous(), half)


def _frequencies(fr: Frame, half: bool) -> int:
    """Number of frequencies of one transform on the frame's grid."""
    total = math.prod(fr.sizes)
    return total // fr.sizes[-1] * (fr.sizes[-1] // 2 + 1) if half else total


@functools.cache
def _complex_itemsize(dtype: torch.dtype) -> int:
    return 2 * torch.empty((), dtype=dtype).real.element_size()


def spectrum_bytes(geom: ConvGeometry, dtype: torch.dtype) -> int:
    """Peak memory of :func:`spectrum` for a weight of ``dtype``."""
    fr = frame(geom)
    pairs = geom.out_channels * geom.in_channels // geom.groups
    grid = pairs * math.prod(fr.sizes) * torch.empty((), dtype=dtype).element_size()
    result = pairs * _frequencies(fr, not dtype.is_complex) * _complex_itemsize(dtype)
    return grid + 2 * result  # the dilated kernel on the grid, its transform, the reordering


def workspace_bytes(spec: Spectrum, channels: int, batch: int, dtype: torch.dtype) -> int:
    """Peak memory of one FFT product of ``batch`` samples in ``dtype`` (beyond its input).

    ``channels`` counts the input and output channels together.
    """
    fr = spec.frame
    itemsize = _complex_itemsize(dtype)
    spectra = batch * channels * _frequencies(fr, not dtype.is_complex) * itemsize
    grids = batch * channels * math.prod(fr.sizes) * itemsize // 2
    return 2 * (spectra + grids)


def representable(x: torch.Tensor, norm1: float, spec: Spectrum) -> bool:
    """Whether an FFT product of ``x`` keeps the direct product's exact non-finite pattern.

    True when ``x`` is finite and no intermediate value of the transforms can overflow:
    every one is bounded by ``L**2 * ||w||_1 * max|x|`` for an FFT grid of ``L`` samples
    (``norm1`` is ``||w||_1``), and then so is every sample of the direct sum. One pass over
    ``x`` (NaN and Inf show in its minimum and maximum).
    """
    x = x.detach()
    values = torch.view_as_real(x.resolve_conj()) if x.is_complex() else x
    low, high = torch.aminmax(values)
    peak = max(abs(float(low)), abs(float(high)))  # NaN or Inf if x holds any
    grid = float(math.prod(spec.frame.sizes))
    largest = torch.finfo(values.dtype).max
    return peak * norm1 * grid * grid * 64 < largest  # False for NaN and Inf


@dataclass(frozen=True)
class _Entry:
    weight: torch.Tensor  # a private copy of the values the spectrum was computed from
    spectrum: Spectrum
    norm1: float  # ||w||_1


class SpectrumCache:
    """The spectrum of a weight tensor *as it is now*, computed on first use.

    Every lookup compares the weight's current values (and dtype, device and shape) with
    the copy the cached spectrum was computed from, so any change to the weight, in place or
    not, through autograd or through ``.data``, is followed; the comparison costs one pass
    over the weight (on a GPU, one synchronisation). Shared by an operator and its adjoint.

    Parameters
    ----------
    geometry : ConvGeometry
    conj : bool, default False
        Hold the spectrum of the conjugated weight.
    """

    def __init__(self, geometry: ConvGeometry, *, conj: bool = False) -> None:
        self.geometry = geometry
        self.conj = conj
        self._entry: _Entry | None = None

    def lookup(self, weight: torch.Tensor) -> tuple[Spectrum, float] | None:
        """``(spectrum, ||w||_1)`` of ``weight`` (conjugated if ``conj``) as it is now.

        ``None`` when the weight holds NaN or Inf, or its spectrum overflows: then only the
        direct evaluation gives the exact result. Raises ``MemoryError`` (before allocating)
        when the spectrum would take more than half the memory available.
        """
        entry = self._entry
        if entry is not None and _same_values(entry.weight, weight):
            return entry.spectrum, entry.norm1
        with torch.no_grad():
            w = weight.detach()
            found = spectrum_of(w.conj() if self.conj else w, self.geometry)
            if found is not None:  # one assignment: concurrent lookups see old or new entry
                self._entry = _Entry(w.clone(), *found)
        return found


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    same_kind = a.dtype == b.dtype and a.device == b.device and a.shape == b.shape
    return same_kind and torch.equal(a, b)


def spectrum_of(weight: torch.Tensor, geom: ConvGeometry) -> tuple[Spectrum, float] | None:
    """``(spectrum(weight), ||weight||_1)``, or ``None`` if either is not finite.

    Guarded: ``MemoryError`` before allocating a spectrum larger than half the memory
    available on the weight's device. Differentiable with respect to the weight.
    """
    norm1 = float(weight.detach().abs().sum())
    if not math.isfinite(norm1):
        return None
    check_memory(
        spectrum_bytes(geom, weight.dtype),
        None,
        f"the FFT spectrum of a {geom.name} with input {geom.input_shape}",
        weight.device,
        hint="use method='direct'",
    )
    result = spectrum(weight, geom)
    if not bool(torch.isfinite(torch.view_as_real(result.mixing.detach())).all()):
        return None
    return result, norm1


def _mix(mixing: torch.Tensor, x: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
    """``y[b, g, o] = sum_c K[g, f, o, c] x[b, g, c]`` per frequency ``f`` (``K^H``: adjoint).

    ``x`` is ``(B, G, C/G, *F)``; one batched matmul over (group, frequency). With one
    channel per group, a pointwise product into ``x`` itself (unless autograd needs it).
    """
    if adjoint:
        mixing = mixing.transpose(-1, -2).conj()
    batch, groups, _, *freqs = x.shape
    if (
        mixing.shape[-1] == 1 and mixing.shape[-2] == 1
    ):  # one channel per group: a pointwise product
        mixing = mixing.reshape(1, groups, 1, *freqs)
        if torch.is_grad_enabled() and (x.requires_grad or mixing.requires_grad):
            return x * mixing
        return x.mul_(mixing)  # x is the transform's fresh output: no new buffer
    xf = x.reshape(batch, groups, x.shape[2], -1).permute(1, 3, 2, 0)  # (G, F, C/G, B)
    y = torch.matmul(mixing, xf)  # (G, F, O/G, B)
    return y.permute(3, 0, 2, 1).reshape(batch, groups, mixing.shape[-2], *freqs)


def _zero_pad(x: torch.Tensor, before: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
    """``x`` (B, C, *shape) at offset ``before`` in a zero (B, C, *sizes) grid, by one F.pad.

    Padding explicitly is faster than letting ``rfftn(x, s=sizes)`` do it (9.6 vs 16 ms
    for 1038² -> 1080² here); nothing is copied when ``x`` already fills the grid.
    """
    shape = x.shape[2:]
    if tuple(shape) == tuple(sizes):
        return x
    pairs = [(lo, size - n - lo) for lo, n, size in zip(before, shape, sizes)]
    return F.pad(x, [p for pair in reversed(pairs) for p in pair])


#: ``(pairs, mode)``: how a convolution pads its input before the grid (see :func:`_place`).
Padding = tuple[tuple[tuple[int, int], ...], str]
#: The most memory one kept grid of :class:`Grids` may take; larger grids are made afresh.
GRID_KEEP_BYTES = 32 * 1024**2


class Grids:
    """Zero grids that FFT products place their input into, kept per thread and reused.

    A fresh grid costs a fill of zeros and, for grids of a megabyte or more, fresh pages
    from the system (page faults, then unmapping them) at every product: together up to a
    tenth of a 512x512 blur's product here. A kept grid is only ever written where one
    direction places its input, the same samples every time, so everything else stays zero
    and only the placement is paid.

    One grid per direction (``'forward'``, ``'adjoint'``) and thread, replaced when the
    shape or dtype changes, at most :data:`GRID_KEEP_BYTES` each, so an operator keeps at
    most two grids per thread that uses it; they go with the operator (or the thread).
    CPU only: on a GPU the caching allocator already recycles memory, and a buffer reused
    across streams would race. Never for products that autograd records.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def __reduce__(self):  # copies and pickles of an operator start with no grids
        return (Grids, ())

    def get(self, direction: str, shape: tuple[int, ...], like: torch.Tensor,
            where: tuple[slice, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
        """``(grid, window)`` of the kept zero grid, or ``None`` if none is kept.

        ``grid`` has ``shape`` and ``like``'s dtype; ``window`` is its view
        ``grid[..., *where]``, to place the input into. Everything outside ``where`` is
        zero: a grid placed into at another window before is zeroed first.
        """
        kept = self._local.__dict__
        found = kept.get(direction)
        if found is not None and found[0].shape == shape and found[0].dtype == like.dtype:
            grid, placed, window = found
            if placed is where:  # the same frame as last time: the common case
                return grid, window
            if placed != where:
                grid.zero_()
            window = grid[(..., *where)]
            kept[direction] = (grid, where, window)
            return grid, window
        if math.prod(shape) * like.element_size() > GRID_KEEP_BYTES:
            kept.pop(direction, None)
            return None
        grid = torch.zeros(shape, dtype=like.dtype)
        window = grid[(..., *where)]
        kept[direction] = (grid, where, window)
        return grid, window


def _place(x: torch.Tensor, where: tuple[slice, ...], sizes: tuple[int, ...],
           kept: tuple[Grids, str] | None = None,
           padding: Padding | None = None) -> torch.Tensor:  # fmt: skip
    """Put ``x`` (B, C, *shape) at ``where`` in a zero (B, C, *sizes) grid.

    ``kept``: ``(grids, direction)`` to place it in a kept grid, where one can be used: on
    the CPU, without autograd recording the product, and for grids small enough to keep.
    ``padding``: ``(pairs, mode)`` to place ``pad(x, pairs, mode)`` instead, written
    straight into a kept grid (:func:`convop.padding.pad_into`).
    """
    shape = (*x.shape[:2], *sizes)
    if (
        kept is not None
        and x.is_cpu
        and not (x.requires_grad and torch.is_grad_enabled())
        and (padding is not None or tuple(x.shape[2:]) != sizes)
    ):
        found = kept[0].get(kept[1], shape, x, where)
        if found is not None:
            if padding is None:
                found[1].copy_(x)
            else:
                pad_into(found[1], x, *padding)
            return found[0]
    if padding is not None:
        x = pad(x, *padding)
    if all((s.step or 1) == 1 for s in where):
        return _zero_pad(x, tuple(s.start for s in where), sizes)
    grid = x.new_zeros(shape)
    grid[(..., *where)] = x
    return grid


def _circulant(x: torch.Tensor, mixing: torch.Tensor, fr: Frame, *, place: tuple[slice, ...],
               take: tuple[slice, ...], groups: int, adjoint: bool, half: bool,
               kept: tuple[Grids, str] | None,
               padding: Padding | None = None) -> torch.Tensor:  # fmt: skip
    """``take(IFFT(K @ FFT(place(x))))`` with ``x`` (B, C, *shape); ``half``: rfft, real x.

    ``kept``, ``padding``: how to place ``x`` (see :func:`_place`).
    """
    dims = tuple(range(-len(fr.sizes), 0))
    grid = _place(x, place, fr.sizes, kept, padding)  # (B, C, *L)
    transform, inverse = (torch.fft.rfftn, torch.fft.irfftn) if half else (
        torch.fft.fftn, torch.fft.ifftn)  # fmt: skip
    spec = transform(grid, s=fr.sizes, dim=dims)
    spec = spec.reshape(spec.shape[0], groups, -1, *spec.shape[2:])  # (B, G, C/G, *F)
    if mixing.dtype != spec.dtype:
        mixing = mixing.to(spec.dtype)
    mixed = _mix(mixing, spec, adjoint=adjoint).flatten(1, 2)  # (B, C_out, *F)
    return inverse(mixed, s=fr.sizes, dim=dims)[(..., *take)]


def forward(x: torch.Tensor, spec: Spectrum, geom: ConvGeometry, *,
            grids: Grids | None = None) -> torch.Tensor:  # fmt: skip
    """FFT evaluation of :func:`convop.functional.forward`, with ``spec`` from :func:`spectrum`.

    ``grids``: kept zero grids to place the input into (an operator's), or ``None``.

    Examples
    --------
    >>> import torch
    >>> from convop import functional
    >>> g = ConvGeometry.from_torch((2, 1, 5, 5), (1, 16, 16), padding="same",
    ...                             padding_mode="reflect")
    >>> w, x = torch.randn(2, 1, 5, 5, dtype=torch.float64), torch.randn(3, 1, 16, 16,
    ...                                                                  dtype=torch.float64)
    >>> torch.allclose(forward(x, spectrum(w, g), g), functional.forward(x, w, g))
    True
    """
    fr = spec.frame
    full = x.is_complex() or not spec.half  # complex transforms (real weight: full_mixing)
    mixing, _ = spec.operand(full=full, adjoint=False)
    place, padding = fr.input_window, None
    if not geom.transposed and geom.padding_mode == "zeros":  # the padding and the grid at once
        place = fr.zero_padded_window
    elif not geom.transposed:  # pad(x) at input_window: (B, C_in, *padded)
        padding = (geom.padding, geom.padding_mode)
    return _circulant(x, mixing, fr, place=place, take=fr.output_window, groups=geom.groups,
                      adjoint=False, half=not full, padding=padding,
                      kept=None if grids is None else (grids, "forward"))  # fmt: skip


def adjoint(y: torch.Tensor, spec: Spectrum, geom: ConvGeometry, *,
            grids: Grids | None = None) -> torch.Tensor:  # fmt: skip
    """FFT evaluation of :func:`convop.functional.adjoint`, with ``spec`` from :func:`spectrum`.

    ``grids``: as for :func:`forward`.
    """
    fr = spec.frame
    full = y.is_complex() or not spec.half
    mixing, conjugate = spec.operand(full=full, adjoint=True)
    x = _circulant(y, mixing, fr, place=fr.output_window, take=fr.input_window,
                   groups=geom.groups, adjoint=conjugate, half=not full,
                   kept=None if grids is None else (grids, "adjoint"))  # fmt: skip
    if not geom.transposed:  # x is this product's own output grid: fold into it if allowed
        recorded = x.requires_grad and torch.is_grad_enabled()
        x = (pad_adjoint if recorded else pad_adjoint_)(x, geom.padding, geom.padding_mode)
    return x
