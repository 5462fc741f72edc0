"""The autocorrelation lags of a convolution's kernel: the symbol of its Gram operators.

A stride-``s`` convolution ``B`` (per group, ``C_out/G x C_in/G`` taps ``w[t]``, dilation
``d``) has ``B B^H`` shift-invariant on the output grid, with lags
``R_delta = sum_t w[t + tau] w[t]^H`` at the spatial lag ``delta = d * tau`` (kept where the
stride divides it, counted in units of the stride). With stride 1, ``B^H B`` is
shift-invariant on the input grid, with the lags of the adjoint kernel (channels swapped,
taps reversed and conjugated): ``sum_t w[t]^H w[t + tau]``. ``R_{-delta} = R_delta^H``
either way. :mod:`convop.spectral` bounds norms with them; :mod:`convop.deconvolution`
builds preconditioners from them.

The lags are a correlation of the kernel with itself: ``(2k - 1)^d`` lags of ``k^d`` terms
each, computed directly (one small grouped convolution) or, where that costs more, by FFTs
on a grid of at least ``2k - 1`` samples per axis (``k^d log k`` work instead of
``k^{2d}``: a 201 x 201 kernel takes a fraction of a second and a few MB instead of
52 GB). :func:`lags_method`
chooses by a cost estimate; :func:`lags_error` bounds either's round-off. Both paths ask
the memory guard first.
"""

from __future__ import annotations

import math

import torch

from .._fft import fast_length
from .._shared.memory import check_memory
from ..geometry import ConvGeometry

_CORRELATE = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)
#: The ways :func:`gram_lags` can compute the lags.
METHODS = ("direct", "fft")
#: The cost of an FFT relative to a multiply-add of the direct correlation, per sample and
#: ``log2`` of the grid (measured here: 1-D to 3-D, float64, 2 threads, in the range 2-6).
FFT_COST = 5.0
#: Unit round-off of float64, in which the lags are computed.
_U = 2.0**-53


def _sides(geom: ConvGeometry, input_side: bool) -> tuple[int, int, int]:
    """``(G, p, q)``: groups, the lag matrices' size and the channels summed per entry."""
    g = geom.groups
    o, c = geom.out_channels // g, geom.in_channels // g
    return (g, c, o) if input_side else (g, o, c)


def _fft_grid(kernel: tuple[int, ...]) -> tuple[int, ...]:
    """The FFT path's grid: a fast length of at least ``2k - 1`` per axis (no wrap-around)."""
    return tuple(fast_length(2 * k - 1) for k in kernel)


def _costs(geom: ConvGeometry, input_side: bool) -> tuple[float, float]:
    """``(direct, fft)``: estimated work of the two paths, in multiply-adds."""
    g, p, q = _sides(geom, input_side)
    k = geom.kernel_size
    direct = g * p * p * q * math.prod(2 * n - 1 for n in k) * math.prod(k)
    grid = _fft_grid(k)
    n = math.prod(grid)
    transforms = g * (p * q + p * p) * n * max(math.log2(n), 1.0) * FFT_COST
    return float(direct), float(transforms + 4 * g * p * p * q * n)


def lags_method(geom: ConvGeometry, *, input_side: bool) -> str:
    """``'direct'`` or ``'fft'``: how :func:`gram_lags` computes the lags of ``geom``.

    The cheaper by :func:`_costs`' estimate, for ``geom`` and ``input_side`` as
    :func:`gram_lags` takes them: the direct correlation takes ``G p^2 q prod(2k - 1)
    prod(k)`` multiply-adds (``p`` channels on the lags' side, ``q`` summed), the FFTs about
    ``FFT_COST G (p q + p^2) N log2 N`` on a grid of ``N`` samples, plus the products. It
    depends on the geometry only, so the error bound :func:`lags_error` gives is that of the
    path taken.

    Examples
    --------
    A 3 x 3 kernel's 25 lags of 9 terms take fewer multiply-adds directly; a 201 x 201
    kernel's 401^2 lags of 201^2 terms by FFTs:

    >>> small = ConvGeometry.from_torch((1, 1, 3, 3), (1, 32, 32))
    >>> large = ConvGeometry.from_torch((1, 1, 201, 201), (1, 256, 256))
    >>> lags_method(small, input_side=True), lags_method(large, input_side=True)
    ('direct', 'fft')
    """
    direct, fft = _costs(geom, input_side)
    return "fft" if fft < direct else "direct"


def lags_error(geom: ConvGeometry, *, input_side: bool, method: str | None = None,
               dtype: torch.dtype = torch.float64) -> float:  # fmt: skip
    """``c``: each computed lag ``R_delta[a, b]`` is within ``c ||w_a||_2 ||w_b||_2`` of exact.

    ``w_a`` is every tap of channel ``a`` on the lags' side (``q`` channels summed, ``k^d``
    taps each), taken as the float64 (complex128) numbers the lags are computed from.

    - Direct: each entry is a sum of ``n = q k^d`` products, so it errs by at most
      ``gamma_n sum |w_a| |w_b| <= gamma_n ||w_a|| ||w_b||`` (Cauchy-Schwarz), ``gamma_n =
      n u / (1 - n u)``, ``u = 2^-53`` ([1]_, section 3.1). Complex weights: ``gamma_{4n +
      11}``, as torch convolves them by three real convolutions (Gauss's trick: the
      imaginary part is ``(a + b)(c + d) - ac - bd``, whose terms are up to twice ``|w_a|
      |w_b|``).
    - FFT, on a grid of ``N`` samples: each transform of ``m = log2 N`` radix stages errs
      normwise by ``beta = 7 u (m + 2)`` ([1]_, theorem 24.2: ``7 u`` per radix-2 stage; two
      stages spare for mixed radices and the real transforms' pre- and post-processing). The
      forward transforms' errors reach each lag at most through ``(1/N) sum_f |dW_a| |W_b|
      <= beta ||w_a|| ||w_b||`` (Cauchy-Schwarz and Parseval), twice; the channel sums of
      the products err by ``2 (q + 2) u`` of the same; the inverse transform, taken stage by
      stage componentwise, errs by ``beta (1/N) sum_f |P_f|``, the same again. In all
      ``c = 3 beta + 2 (q + 3) u``: about ``10.5 eps log2 N`` (``eps = 2u``), 4.6e-14 for a
      201 x 201 kernel on its ``405^2`` grid.

    The tests check this against extended-precision lags on random geometries.

    Parameters
    ----------
    geom : ConvGeometry
        A convolution (not transposed).
    input_side : bool
        As for :func:`gram_lags`.
    method : {'direct', 'fft'}, optional
        The path; default: the one :func:`gram_lags` takes (:func:`lags_method`).
    dtype : torch.dtype, default torch.float64
        The weight's dtype: complex or real.

    Returns
    -------
    float
        ``c``, relative to the product of the two channels' norms.

    See Also
    --------
    lags_method : Which path :func:`gram_lags` takes.

    References
    ----------
    .. [1] N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM,
       2002.

    Examples
    --------
    >>> geom = ConvGeometry.from_torch((1, 1, 201, 201), (1, 256, 256))
    >>> lags_method(geom, input_side=True), f"{lags_error(geom, input_side=True):.1e}"
    ('fft', '4.6e-14')
    """
    method = lags_method(geom, input_side=input_side) if method is None else method
    _, _, q = _sides(geom, input_side)
    if method == "direct":
        n = q * math.prod(geom.kernel_size)
        n = 4 * n + 11 if dtype.is_complex else n
        return n * _U / (1 - n * _U)
    m = math.log2(max(math.prod(_fft_grid(geom.kernel_size)), 2))
    return 3 * 7 * _U * (m + 2) + 2 * (q + 3) * _U


def _direct_bytes(g: int, p: int, q: int, k: tuple[int, ...], itemsize: int) -> int:
    """What the direct correlation allocates: its padded input, output, and torch's columns."""
    padded = g * p * q * math.prod(3 * n - 2 for n in k)
    out = g * p * p * math.prod(2 * n - 1 for n in k)
    columns = g * p * q * math.prod(k) * math.prod(2 * n - 1 for n in k)  # im2col, per sample
    return (padded + out + columns) * itemsize


def _fft_bytes(g: int, p: int, q: int, grid: tuple[int, ...], real: bool) -> int:
    """What the FFT path allocates: spectra of the taps and of the lags, and the lags."""
    half = math.prod(grid[:-1]) * (grid[-1] // 2 + 1) if real else math.prod(grid)
    spectra = 16 * g * (p * q + p * p) * half * 2  # each, and torch's workspace of one
    return spectra + (8 if real else 16) * g * p * p * math.prod(grid)


def _correlate_direct(w: torch.Tensor, g: int, max_bytes: int | None) -> torch.Tensor:
    """``R[tau][a, b] = sum_{c, t} w[a, c, t + tau] conj(w[b, c, t])`` as one grouped conv.

    ``w``: ``(G p, q, *k)`` in float64 or complex128. Returns ``(G, p, p, *(2k - 1))``.
    """
    p, q, k = w.shape[0] // g, w.shape[1], tuple(w.shape[2:])
    nd = len(k)
    needed = _direct_bytes(g, p, q, k, w.element_size() * (2 if w.is_complex() else 1))
    check_memory(needed, max_bytes, f"the autocorrelation of a {k} kernel (direct)",
                 w.device, hint="the FFT path needs less memory: method='fft'")  # fmt: skip
    x = torch.nn.functional.pad(w, [s for n in reversed(k) for s in (n - 1, n - 1)])
    x = x.reshape(g, p, q, *x.shape[2:]).transpose(0, 1).reshape(p, g * q, *x.shape[2:])
    lags = _CORRELATE[nd - 1](x, w.conj(), groups=g)  # (a, G * b, *(2k - 1)): R[tau][a, b]
    return lags.reshape(p, g, p, *lags.shape[2:]).transpose(0, 1)  # (G, a, b, *lags)


def _correlate_fft(w: torch.Tensor, g: int, max_bytes: int | None) -> torch.Tensor:
    """The same lags by FFTs on a grid of ``>= 2k - 1`` samples per axis: ``(G, p, p, *lags)``.

    ``R = F^{-1}(sum_c W_a conj(W_b))`` is the circular correlation, which equals the linear
    one on a grid where the ``2k - 1`` lags do not wrap onto each other.
    """
    p, q, k = w.shape[0] // g, w.shape[1], tuple(w.shape[2:])
    nd = len(k)
    grid = _fft_grid(k)
    real = not w.is_complex()
    check_memory(_fft_bytes(g, p, q, grid, real), max_bytes,
                 f"the autocorrelation of a {k} kernel (by FFTs on a {grid} grid)", w.device,
                 hint="use a smaller kernel")  # fmt: skip
    dims = tuple(range(2, 2 + nd))
    forward = torch.fft.rfftn if real else torch.fft.fftn
    spec = forward(w, s=grid, dim=dims).reshape(g, p, q, -1)  # (G, a, c, F)
    product = torch.einsum("gacf,gbcf->gabf", spec, spec.conj())  # (G, a, b, F)
    del spec
    product = product.reshape(g, p, p, *((*grid[:-1], grid[-1] // 2 + 1) if real else grid))
    dims = tuple(range(3, 3 + nd))
    circular = (torch.fft.irfftn(product, s=grid, dim=dims) if real
                else torch.fft.ifftn(product, dim=dims))  # fmt: skip
    del product
    for i, n in enumerate(k):  # lags -(n - 1) .. n - 1 sit at the grid's end and start
        index = torch.arange(-(n - 1), n, device=w.device).remainder(grid[i])
        circular = circular.index_select(3 + i, index)
    return circular


def gram_lags(weight: torch.Tensor, geom: ConvGeometry, *,
              input_side: bool) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``(taps, deltas)``: the lags of ``B^H B`` (``input_side``) or ``B B^H`` of ``geom``.

    Computed directly or by FFTs, whichever :func:`lags_method` estimates cheaper; each
    entry ``R_delta[a, b]`` is within ``lags_error(geom, input_side=input_side) *
    ||w_a||_2 ||w_b||_2`` of the exact value (:func:`lags_error`: about ``10.5 eps log2 N``
    on the FFT path's grid of ``N`` samples). Raises ``MemoryError`` before allocating more
    than half the memory available (:func:`convop._shared.memory.check_memory`).

    Parameters
    ----------
    weight : torch.Tensor
        ``geom.weight_shape``; the lags are computed in float64 (complex128).
    geom : ConvGeometry
        A convolution (not transposed); stride 1 for ``input_side``.
    input_side : bool
        The lags of ``B^H B`` (on the input's channels) rather than ``B B^H``.

    Returns
    -------
    taps : torch.Tensor
        ``(G, L, p * p)``: ``R_delta[a, b]`` of group ``g`` at ``taps[g, l, a * p + b]``,
        ``p`` channels per group on that side.
    deltas : torch.Tensor
        ``(L, ndim)`` float64: the lags, in samples of that side's grid (of the output's,
        subsampled by the stride, for ``B B^H``), in lexicographic order, so that lag
        ``L - 1 - l`` is lag ``l``'s mirror.

    Raises
    ------
    ValueError
        For ``input_side`` with a stride other than 1.
    MemoryError
        Before allocating more than the memory guard allows.
    """
    return _gram_lags(weight, geom, input_side, lags_method(geom, input_side=input_side))


def _gram_lags(weight: torch.Tensor, geom: ConvGeometry, input_side: bool, method: str,
               max_bytes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """:func:`gram_lags` by ``method`` (``'direct'`` or ``'fft'``), under ``max_bytes``."""
    g, nd = geom.groups, geom.ndim
    o, c = geom.out_channels // g, geom.in_channels // g
    k = geom.kernel_size
    weight = weight.detach()
    stride = geom.stride
    if input_side:
        if any(s != 1 for s in stride):
            raise ValueError(f"B^H B is shift-invariant only for stride 1, got {stride}")
        weight = weight.reshape(g, o, c, *k).transpose(1, 2).reshape(g * c, o, *k)
        weight = weight.flip(tuple(range(2, 2 + nd))).conj()
        o, c = c, o
    w = weight.to(torch.float64 if not weight.is_complex() else torch.complex128)
    correlate = _correlate_fft if method == "fft" else _correlate_direct
    lags = correlate(w, g, max_bytes)  # (G, a, b, *(2k - 1))
    deltas = []
    for i, (n, d, s) in enumerate(zip(k, geom.dilation, stride)):
        delta = (torch.arange(2 * n - 1, device=w.device) - (n - 1)) * d
        keep = (delta % s == 0).nonzero().reshape(-1)  # a symmetric set of lags
        lags = lags.index_select(3 + i, keep)
        deltas.append((delta[keep] // s).to(torch.float64))
    deltas = torch.stack(torch.meshgrid(*deltas, indexing="ij"), -1).reshape(-1, nd)
    return lags.reshape(g, o * o, -1).transpose(1, 2), deltas  # (G, L, a * b), (L, ndim)
