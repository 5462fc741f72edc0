"""Slab decomposition of a convolution along one spatial axis: who needs which samples.

Pure index arithmetic, no MPI: :mod:`convop.distributed` moves the data, this module says
what moves where. Every geometry is handled through one *non-transposed* convolution
``C`` (a transposed convolution is the adjoint of a zero-padded one, see
:func:`conv_form`), whose output along each axis is kept up to ``keep`` samples.

Rank ``r`` owns input samples ``[a0, a1)`` and output samples ``[b0, b1)`` along ``axis``.
Its output rows read padded positions ``[b0*s, (b1-1)*s + d*(k-1)]``; each of these is a
copy of one input sample (:func:`convop.padding.source_index`: reflect, replicate and
circular fold, zeros give ``-1``), owned by some rank. Gathering them (the *halo exchange*)
gives the rank an *extended slab* on which a local convolution without padding along
``axis`` produces exactly its output rows. The adjoint runs the local adjoint and sends
each extended sample's contribution back to the rank that owns its source, which adds it
(the *halo reduce*). Halos may reach any rank (thin slabs, circular wrap-around): the
plan is a general gather, not a one-hop exchange.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .._shared.checks import is_int
from ..geometry import ConvGeometry
from ..padding import source_index


def split(n: int, parts: int) -> tuple[tuple[int, int], ...]:
    """``n`` samples in ``parts`` contiguous ranges, the remainder to the first ones.

    The same rule as pylops-mpi's default split.

    Examples
    --------
    >>> split(10, 3)
    ((0, 4), (4, 7), (7, 10))
    """
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for r in range(parts):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return tuple(bounds)


def conv_form(geom: ConvGeometry) -> tuple[ConvGeometry, tuple[int, ...], bool]:
    """``(C, keep, flip)``: the non-transposed convolution behind ``geom``.

    For a convolution, ``C = geom``, ``keep = geom.output_size`` and ``flip = False``.
    A transposed convolution ``T`` with weight ``w`` has ``T^H y = crop(conv(y, conj w))``,
    where ``conv`` is the zero-padded convolution of ``T``'s output with ``T``'s stride,
    padding and dilation, cropped to ``keep = T.input_size`` (see
    :func:`convop.functional.adjoint`). So ``T`` is the adjoint of ``crop o C`` with the
    weight conjugated: ``flip = True``.
    """
    if not geom.transposed:
        return geom, geom.output_size, False
    return geom.as_convolution(), geom.input_size, True


def choose_axis(conv: ConvGeometry, keep: tuple[int, ...], ranks: int, axis: object = None,
                *, what: str = "convolution") -> int:  # fmt: skip
    """The spatial axis to split ``conv`` over ``ranks`` slabs: ``axis``, checked, or the best.

    By default the axis that allows the most slabs (:meth:`SlabPlan.max_ranks`), the first
    of those that tie. ``axis`` may count from the end (``-1``: the last spatial axis).

    Raises
    ------
    TypeError
        For an ``axis`` that is no int.
    ValueError
        For an ``axis`` outside the sample's spatial axes, or one with fewer samples (input
        or output) than ``ranks``; the message names ``what`` and how many ranks would work.

    Examples
    --------
    >>> conv = ConvGeometry.from_torch((1, 1, 3, 3), (1, 4, 9), padding=1)
    >>> choose_axis(conv, conv.output_size, 2), choose_axis(conv, conv.output_size, 2, -2)
    (1, 0)
    """
    ndim = conv.ndim
    limits = [SlabPlan.max_ranks(conv, keep, i) for i in range(ndim)]
    if axis is None:
        axis = max(range(ndim), key=lambda i: (limits[i], -i))
    else:
        if not is_int(axis):
            raise TypeError(f"axis must be an int or None, got {axis!r}")
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"axis must be a spatial axis of the {ndim}-d sample, in [{-ndim}, {ndim - 1}], "
                f"got axis={axis}"
            )
        axis = int(axis) % ndim
    if ranks > limits[axis]:
        raise ValueError(
            f"the {what} cannot be split over {ranks} ranks along spatial axis {axis}: every "
            f"rank needs at least one input and one output sample there, so at most "
            f"{limits[axis]} ranks work on that axis (at most {max(limits)} on the best axis)"
        )
    return axis


@dataclass(frozen=True)
class Transfer:
    """Samples along the split axis that move from one rank's slab into another's extended slab.

    ``local`` indices in the owner's slab, ``ext`` positions in the receiver's extended slab
    (same length, one sample each).
    """

    local: np.ndarray
    ext: np.ndarray

    def __len__(self) -> int:
        return len(self.local)

    def window(self, n: int) -> tuple[int, np.ndarray] | None:
        """Where the whole slab ``0 .. n-1`` lies, in order, in the extended slab.

        ``(ext_start, rest)`` when local samples ``0 .. n-1`` sit at consecutive extended
        positions from ``ext_start``, with ``rest`` marking the other entries (samples that
        padding folds back, reflected or wrapped); ``None`` otherwise.

        That window is a plain copy of a whole slab, done with one slice.
        """
        for i in np.flatnonzero(self.local == 0).tolist():
            if (
                i + n <= len(self.local)
                and self.ext[i + n - 1] - self.ext[i] == n - 1  # ext is sorted, unique
                and np.array_equal(self.local[i : i + n], np.arange(n))
            ):
                rest = np.ones(len(self.local), dtype=bool)
                rest[i : i + n] = False
                return int(self.ext[i]), rest
        return None


@dataclass(frozen=True)
class SlabPlan:
    """The slab decomposition of ``conv`` (non-transposed) over ``ranks`` along ``axis``.

    Parameters
    ----------
    conv : ConvGeometry
        A non-transposed convolution.
    keep : tuple of int
        Output samples kept per spatial dimension (``<= conv.output_size``).
    axis : int
        Spatial axis split into slabs (0-based, not counting channels).
    ranks : int
        Number of slabs.
    """

    conv: ConvGeometry
    keep: tuple[int, ...]
    axis: int
    ranks: int
    input_bounds: tuple[tuple[int, int], ...] = dataclasses.field(init=False)
    output_bounds: tuple[tuple[int, int], ...] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        a = self.axis
        object.__setattr__(self, "input_bounds", split(self.conv.input_size[a], self.ranks))
        object.__setattr__(self, "output_bounds", split(self.keep[a], self.ranks))

    @staticmethod
    def max_ranks(conv: ConvGeometry, keep: tuple[int, ...], axis: int) -> int:
        """Largest number of slabs along ``axis`` with no empty slab on either side."""
        return min(conv.input_size[axis], keep[axis])

    # ------------------------------------------------------------------ one rank
    def extended_source(self, rank: int) -> np.ndarray:
        """Global input index along ``axis`` of each sample of ``rank``'s extended slab.

        ``-1`` where zero padding supplies the sample.
        """
        g, a = self.conv, self.axis
        b0, b1 = self.output_bounds[rank]
        s, d, k = g.stride[a], g.dilation[a], g.kernel_size[a]
        (lo, hi), n = g.padding[a], g.input_size[a]
        first, last = b0 * s, (b1 - 1) * s + d * (k - 1)  # padded positions read
        return source_index(n, lo, hi, g.padding_mode)[first : last + 1].numpy()

    def local_geometry(self, rank: int) -> ConvGeometry:
        """The convolution ``rank`` runs on its extended slab: no padding along ``axis``."""
        g, a = self.conv, self.axis
        size = list(g.input_size)
        size[a] = len(self.extended_source(rank))
        padding = list(g.padding)
        padding[a] = (0, 0)
        return dataclasses.replace(g, input_size=tuple(size), padding=tuple(padding))

    def owner(self, index: np.ndarray) -> np.ndarray:
        """Rank owning each global input index along ``axis`` (``-1`` stays ``-1``)."""
        starts = np.array([lo for lo, _ in self.input_bounds])
        owners = np.searchsorted(starts, index, side="right") - 1
        return np.where(index < 0, -1, owners)

    def receives(self, rank: int) -> dict[int, Transfer]:
        """What ``rank`` gathers into its extended slab, by owner (itself included)."""
        source = self.extended_source(rank)
        owners = self.owner(source)
        out = {}
        for q in np.unique(owners[owners >= 0]).tolist():
            ext = np.flatnonzero(owners == q)
            out[q] = Transfer(local=source[ext] - self.input_bounds[q][0], ext=ext)
        return out

    def sends(self, rank: int) -> dict[int, Transfer]:
        """What ``rank``'s slab contributes to each other rank's extended slab."""
        out = {}
        for r in range(self.ranks):
            if r != rank:
                found = self.receives(r).get(rank)
                if found is not None:
                    out[r] = found
        return out

    def halo_samples(self, rank: int) -> int:
        """Samples along ``axis`` that ``rank`` receives from other ranks per product."""
        return sum(len(t) for q, t in self.receives(rank).items() if q != rank)
