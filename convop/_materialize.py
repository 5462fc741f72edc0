"""Explicit dense and sparse matrices of a convolution, by index arithmetic.

No probing with unit vectors and no Python loop over pixels, taps or columns: the matrix is
generated from the geometry and the weight, a block of rows at a time.

How. Every row of a convolution's matrix is one output sample ``(o, p)``. Along each spatial
dimension the kernel taps of position ``p`` read padded samples ``q = p*s + kappa*d - before``,
each a copy of input sample ``source_index(q)`` (or of nothing, for zero padding). Padding is
separable, so per dimension and position we sort the distinct sources into *slots* and record
which slot each tap folds onto. Folding the weight by those tap -> slot maps (one scatter-add
per dimension and distinct border pattern; all interior positions share one) gives the value
of every ``(row, slot)`` pair, and the slot's source gives its column. Within a row the
columns come out sorted and unique, so the CSR arrays are written directly into their final
buffers: no COO stage, no sort, no duplicate summation pass, and only structural entries
(reflect/replicate/circular taps that land on the same input sample are summed into one
entry).

Cost and guard. Planning takes O(positions * k) time and memory per dimension; the number of
nonzeros is counted exactly beforehand in bounded memory, so every builder raises
``MemoryError`` (:func:`convop._shared.memory.check_memory`) before anything large is allocated.

A transposed convolution ``T`` with weight ``w`` is the transpose of the convolution with the
same weight read in conv layout, restricted to ``T``'s input positions; adjoints are conjugate
transposes. Both are handled by writing the same blocks into a transposed target.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ._shared.arrays import numpy_dtype, zeros
from ._shared.memory import check_memory
from .geometry import ConvGeometry
from .padding import source_index

#: Candidate entries generated per block (bounds the temporaries to a few tens of MB).
BLOCK_ENTRIES = 1 << 19
#: Above this many candidate entries a build shows a progress bar by default (~2 s here).
PROGRESS_ENTRIES = 3 * 10**8
#: Elements of the (positions, taps) temporaries one planning step may allocate.
COUNT_CHUNK = 1 << 20
#: Bytes per (position, tap) pair of one dimension: the slot sources kept for the build.
_PLAN_BYTES_PER_TAP = 8
#: Bytes per (position, tap) pair of a position that reads padding: its pattern, unique'd.
_BORDER_BYTES_PER_TAP = 64
#: Bytes of one planning step's temporaries per element (sort, order, cumsum, ...).
_CHUNK_BYTES_PER_TAP = 64
#: Bytes of block temporaries per candidate entry (columns, values, rank, target, ...).
_BLOCK_BYTES_PER_ENTRY = 48


# ---------------------------------------------------------------------- one dimension
def _sources(n: int, before: int, after: int, k: int, s: int, d: int, mode: str,
             positions: range, device: torch.device) -> torch.Tensor:  # fmt: skip
    """Input sample each tap of each output position reads, (P, k) int64; -1: zero halo."""
    p = torch.arange(positions.start, positions.stop, device=device)[:, None]
    q = p * s + torch.arange(k, device=device)[None, :] * d  # positions in the padded input
    return source_index(n, before, after, mode, device=device)[q]


def _distinct(source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort each row's sources.

    ``(ordered, order, fresh)``, ``fresh`` marking the first copy of every valid (>= 0) source;
    its row sums count the distinct input samples.
    """
    ordered, order = torch.sort(source, dim=1, stable=True)
    fresh = torch.ones_like(ordered, dtype=torch.bool)
    fresh[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    fresh &= ordered >= 0
    return ordered, order, fresh


@dataclass(frozen=True)
class _Axis:
    """How one spatial dimension's taps land on input samples, for every output position.

    Taps reading the same input sample (padding folds them together) share a *slot*; slots
    are sorted by their input sample, so columns come out sorted within a row.
    """

    slot_source: torch.Tensor  # (P, k) int64: input index of each slot, -1 if unused
    counts: torch.Tensor  # (P,) int64: used slots per position
    pattern: torch.Tensor  # (P,) int64: which tap -> slot map position p uses
    tap_slots: torch.Tensor  # (T, k) int64: slot of each tap per pattern; k: tap unused


def _chunks(positions: range, k: int) -> Iterator[range]:
    """Consecutive parts of ``positions`` whose (positions, k) temporaries stay small."""
    step = max(1, COUNT_CHUNK // k)
    for start in range(positions.start, positions.stop, step):
        yield range(start, min(start + step, positions.stop))


def _axis(n: int, before: int, after: int, k: int, s: int, d: int, mode: str, positions: int,
          device: torch.device) -> _Axis:  # fmt: skip
    """O(positions * k) time; memory: the (P, k) slot sources plus the border's patterns."""
    slot_source = torch.full((positions, k), -1, dtype=torch.int64, device=device)
    counts = torch.empty(positions, dtype=torch.int64, device=device)
    border = _border_mask(n, before, k, s, d, positions, device)  # (P,) bool
    border_slots = []  # (rows, k) tap -> slot maps of the border positions
    for chunk in _chunks(range(positions), k):
        source = _sources(n, before, after, k, s, d, mode, chunk, device)  # (R, k)
        ordered, order, fresh = _distinct(source)
        slot_of_sorted = torch.cumsum(fresh, dim=1) - 1  # (R, k) slot of each sorted tap
        counts[chunk.start : chunk.stop] = fresh.sum(dim=1)
        rows = torch.arange(len(chunk), device=device)[:, None].expand(-1, k)
        slot_source[chunk.start : chunk.stop][rows[fresh], slot_of_sorted[fresh]] = ordered[fresh]
        edge = border[chunk.start : chunk.stop]
        tap_slot = torch.empty_like(slot_of_sorted[edge]).scatter_(
            1, order[edge], slot_of_sorted[edge]
        )  # (R_border, k)
        border_slots.append(torch.where(source[edge] >= 0, tap_slot, k))
    # Interior positions read k distinct samples in tap order: pattern 0, the identity.
    identity = torch.arange(k, device=device)[None, :]
    found, inverse = torch.unique(torch.cat(border_slots), dim=0, return_inverse=True)
    pattern = torch.zeros(positions, dtype=torch.int64, device=device)
    pattern[border] = inverse + 1
    return _Axis(slot_source, counts, pattern, torch.cat([identity, found]))


def _axis_total(n: int, before: int, after: int, k: int, s: int, d: int, mode: str,
                positions: int, device: torch.device) -> int:  # fmt: skip
    """Sum over positions of the distinct input samples read, in bounded memory.

    ``k`` for each interior position, counted for the border ones, O(border * k) time.
    """
    inside = _interior(n, before, k, s, d, positions)
    total = len(inside) * k
    for part in (range(inside.start), range(inside.stop, positions)):
        for chunk in _chunks(part, k):
            source = _sources(n, before, after, k, s, d, mode, chunk, device)  # (R, k)
            total += int(_distinct(source)[2].sum())
    return total


def _interior(n: int, before: int, k: int, s: int, d: int, positions: int) -> range:
    """Output positions all of whose taps read the input itself, not its padding."""
    first = -(-before // s)  # ceil: the first position whose taps start inside the input
    last = (n - 1 + before - d * (k - 1)) // s  # the last whose taps end inside it
    start = min(max(first, 0), positions)
    return range(start, max(start, min(last + 1, positions)))


def _border_mask(n: int, before: int, k: int, s: int, d: int, positions: int,
                 device: torch.device) -> torch.Tensor:  # fmt: skip
    mask = torch.ones(positions, dtype=torch.bool, device=device)
    inside = _interior(n, before, k, s, d, positions)
    mask[inside.start : inside.stop] = False
    return mask


def _border(n: int, before: int, k: int, s: int, d: int, positions: int) -> int:
    """How many output positions read some padding (each may have its own pattern)."""
    return positions - len(_interior(n, before, k, s, d, positions))


# ---------------------------------------------------------------------- whole-matrix plan
@dataclass(frozen=True)
class Plan:
    """A convolution whose matrix rows (or columns, when ``transpose``) are generated."""

    conv: ConvGeometry  # always a (non-transposed) convolution
    weight: torch.Tensor  # conv layout (O, C'/G... ) on the target device
    positions: tuple[int, ...]  # output positions generated per dimension
    transpose: bool  # the result is the transpose of the generated matrix
    conj: bool  # conjugate the values

    @property
    def rows(self) -> int:
        return self.conv.out_channels * math.prod(self.positions)

    @property
    def cols(self) -> int:
        return math.prod(self.conv.input_shape)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.cols, self.rows) if self.transpose else (self.rows, self.cols)

    @property
    def row_width(self) -> int:
        """Candidate entries per generated row: ``C_in/groups * prod(k)``."""
        return self.weight.shape[1] * math.prod(self.conv.kernel_size)

    def dims(self) -> Iterator[tuple]:
        """Per spatial dimension: ``(n, before, after, k, s, d, mode, positions, device)``."""
        g = self.conv
        for n, (lo, hi), k, s, d, positions in zip(
            g.input_size, g.padding, g.kernel_size, g.stride, g.dilation, self.positions
        ):
            yield n, lo, hi, k, s, d, g.padding_mode, positions, self.weight.device


def plan(weight: torch.Tensor, geometry: ConvGeometry, *, adjoint: bool,
         conj: bool = False) -> Plan:  # fmt: skip
    """Reduce any operator to generated conv rows, in O(ndim): nothing is built here.

    Any operator: conv or transposed, forward or adjoint, of ``weight`` or of
    ``conj(weight)``.
    """
    if not geometry.transposed:
        return Plan(geometry, weight, geometry.output_size, transpose=adjoint,
                    conj=adjoint != conj)  # fmt: skip
    # conv_transpose(x, w) = conv(., w)^T restricted to the transposed conv's input positions.
    transposed = geometry.as_convolution()
    return Plan(transposed, weight, geometry.input_size, transpose=not adjoint,
                conj=adjoint != conj)  # fmt: skip


def nnz(p: Plan) -> int:
    """Exact number of structural nonzeros: O(sum of positions * k) time, bounded memory."""
    channels = p.conv.out_channels * p.weight.shape[1]
    return channels * math.prod(_axis_total(*dims) for dims in p.dims())


def _axes(p: Plan) -> list[_Axis]:
    return [_axis(*dims) for dims in p.dims()]


def _build_bytes(p: Plan) -> int:
    """Upper bound on the memory of planning, folding and blocks, whatever the result."""
    planning = 0
    patterns = []
    for n, lo, _, k, s, d, _, positions, _ in p.dims():
        border = _border(n, lo, k, s, d, positions)
        patterns.append(1 + border)
        chunk = min(positions * k, max(k, COUNT_CHUNK))
        planning += positions * k * _PLAN_BYTES_PER_TAP + border * k * _BORDER_BYTES_PER_TAP
        planning += chunk * _CHUNK_BYTES_PER_TAP
    folded = p.conv.out_channels * p.weight.shape[1] * p.weight.element_size()
    folded *= math.prod(t * k for t, k in zip(patterns, p.conv.kernel_size))
    rows_per_block = min(p.rows, max(1, BLOCK_ENTRIES // max(1, p.row_width)))
    block = rows_per_block * p.row_width * _BLOCK_BYTES_PER_ENTRY
    return planning + 2 * folded + block


def dense_bytes(p: Plan) -> int:
    """Peak memory of :func:`dense`: the result and the planning."""
    m, n = p.shape
    return m * n * p.weight.element_size() + _build_bytes(p)


def _row_counts(p: Plan, axes: list[_Axis]) -> torch.Tensor:
    """Entries per generated row, (O * prod(P),) int64, rows in C order of (o, *p)."""
    counts = torch.tensor(p.weight.shape[1], device=p.weight.device)
    for axis in axes:
        counts = counts[..., None] * axis.counts
    return counts.reshape(1, -1).expand(p.conv.out_channels, -1).reshape(-1)


def _folded_weight(p: Plan, axes: list[_Axis]) -> torch.Tensor:
    """(O, *T, C', *slots): the weight folded by every tap -> slot pattern."""
    w = p.weight.detach()
    w = w.conj() if p.conj else w
    w = w.resolve_conj()
    ndim = len(axes)
    for i, axis in enumerate(axes):
        # kernel dim (2 + 2i) -> (pattern, slot): folded[..., t, j] = sum of taps with slot j
        w = w.movedim(2 + 2 * i, -1)  # (..., k)
        k = w.shape[-1]
        patterns = axis.tap_slots.shape[0]
        out = w.new_zeros((*w.shape[:-1], patterns, k + 1))  # slot k takes the unused taps
        index = axis.tap_slots.expand(*w.shape[:-1], patterns, k)
        out.scatter_add_(-1, index, w.unsqueeze(-2).expand(*w.shape[:-1], patterns, k))
        w = out[..., :k].movedim((-2, -1), (2 + 2 * i, 3 + 2 * i))
    # now (O, C', t1, j1, ..., tD, jD) -> (O, t1..tD, C', j1..jD)
    pattern_dims = [2 + 2 * i for i in range(ndim)]
    slot_dims = [3 + 2 * i for i in range(ndim)]
    return w.permute(0, *pattern_dims, 1, *slot_dims).contiguous()


@dataclass(frozen=True)
class _Block:
    start: int  # first generated row
    columns: torch.Tensor  # (R, C', *slots) column of each candidate (0 where unused)
    values: torch.Tensor  # (R, C', *slots), 0 where unused
    valid: torch.Tensor  # (R, 1, *slots) bool
    rank: torch.Tensor  # (R, C', *slots) int64: position of a valid candidate in its row


def _blocks(p: Plan, axes: list[_Axis], index_dtype: torch.dtype) -> Iterator[_Block]:
    g, device = p.conv, p.weight.device
    folded = _folded_weight(p, axes)
    channels = p.weight.shape[1]
    per_group = g.out_channels // g.groups
    n_in = math.prod(g.input_size)
    spatial_strides = [math.prod(g.input_size[i + 1 :]) for i in range(g.ndim)]
    positions = math.prod(p.positions)
    channel = torch.arange(channels, device=device)
    channel_offset = channel.to(index_dtype) * n_in
    step = max(1, BLOCK_ENTRIES // max(1, p.row_width))
    for start in range(0, p.rows, step):
        r = torch.arange(start, min(start + step, p.rows), device=device)
        o, flat = r // positions, r % positions
        # per row and dimension: fold pattern, slot sources, used-slot count
        patterns, sources, counts = [], [], []
        for dim in reversed(range(g.ndim)):  # unravel the last dimension first
            size = p.positions[dim]
            pos, flat = flat % size, flat // size
            patterns.insert(0, axes[dim].pattern[pos])
            sources.insert(0, axes[dim].slot_source[pos].clamp(min=0))
            counts.insert(0, axes[dim].counts[pos])
        rows = len(r)
        spatial = torch.zeros((rows,) + (1,) * g.ndim, dtype=index_dtype, device=device)
        valid = torch.ones((rows,) + (1,) * g.ndim, dtype=torch.bool, device=device)
        rank = channel.reshape(1, -1)  # (1, C') -> (R, C', *slots), row-major over valid slots
        for dim in range(g.ndim):
            shape = [rows] + [1] * g.ndim
            shape[1 + dim] = -1
            source = sources[dim].to(index_dtype) * spatial_strides[dim]
            spatial = spatial + source.reshape(shape)
            slot = torch.arange(g.kernel_size[dim], device=device)
            valid = valid & (slot < counts[dim][:, None]).reshape(shape)
            count = counts[dim].reshape((-1,) + (1,) * (rank.ndim - 1))
            rank = (rank * count)[..., None] + slot
        group_offset = (o // per_group * channels * n_in).to(index_dtype)
        columns = (
            group_offset.reshape((-1,) + (1,) * (g.ndim + 1))
            + channel_offset.reshape((1, -1) + (1,) * g.ndim)
            + spatial.unsqueeze(1)
        )  # (R, C', *slots)
        values = folded[(o, *patterns)]  # (R, C', *slots)
        yield _Block(start, columns, values, valid.unsqueeze(1), rank)


# ---------------------------------------------------------------------- builders
def index_dtype(p: Plan, count: int) -> torch.dtype:
    """int32 indices when every index fits, as scipy would choose; int64 otherwise."""
    return torch.int32 if max(count, *p.shape) < 2**31 - 1 else torch.int64


def _progress(p: Plan, show: bool | None, what: str):
    total = p.rows * p.row_width
    if show is None:
        show = total > PROGRESS_ENTRIES
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=p.rows, desc=what, unit="row", unit_scale=True, leave=False)


def dense(p: Plan, *, max_bytes: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """The matrix as a dense tensor of shape ``p.shape`` on the weight's device.

    Guarded: ``MemoryError`` before anything large is allocated when the result plus the
    planning would exceed ``max_bytes`` (default: half the memory available).
    """
    m, n = p.shape
    dtype = numpy_dtype(p.weight.dtype)
    check_memory(
        dense_bytes(p),
        max_bytes,
        f"todense() of a {m} x {n} {dtype} matrix",
        p.weight.device,
    )
    out = zeros(p.shape, p.weight.dtype, p.weight.device)
    target = out.T if p.transpose else out  # generated rows are rows of ``target``
    bar = _progress(p, progress, "todense")
    for block in _blocks(p, _axes(p), torch.int64):
        rows = block.values.shape[0]
        slab = target[block.start : block.start + rows]
        slab.scatter_add_(1, block.columns.reshape(rows, -1), block.values.reshape(rows, -1))
        if bar is not None:
            bar.update(rows)
    if bar is not None:
        bar.close()
    return out


def compressed(
    p: Plan,
    *,
    max_bytes: int | None = None,
    what: str = "the sparse matrix",
    convert: bool = False,
    progress: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indptr, indices, data)`` of the generated rows.

    CSR of the matrix, or CSC of its transpose when ``p.transpose`` (the same arrays).

    Guarded: the exact number of nonzeros is counted first (bounded memory), then
    ``MemoryError`` is raised before anything large is allocated when the result plus the
    planning (plus one more copy and COO indices when the caller will ``convert`` it) would
    exceed ``max_bytes`` (default: half the memory available).
    """
    total = nnz(p)
    itype = index_dtype(p, total)
    result = total * (p.weight.element_size() + itype.itemsize) + 3 * (p.rows + 1) * 8
    if convert:
        result += result + total * 8
    check_memory(
        result + _build_bytes(p),
        max_bytes,
        f"{what} with {total} nonzeros",
        p.weight.device,
    )
    axes = _axes(p)
    device = p.weight.device
    counts = _row_counts(p, axes)
    indptr = torch.zeros(p.rows + 1, dtype=torch.int64, device=device)
    indptr[1:] = torch.cumsum(counts, dim=0)
    del counts
    # One spare element at the end takes every unused candidate, so no mask pass is needed.
    indices = torch.empty(total + 1, dtype=itype, device=device)
    data = torch.empty(total + 1, dtype=p.weight.dtype, device=device)
    bar = _progress(p, progress, "tosparse")
    for block in _blocks(p, axes, itype):
        rows = block.values.shape[0]
        first = indptr[block.start : block.start + rows].reshape(
            (-1,) + (1,) * (block.rank.ndim - 1)
        )
        target = torch.where(block.valid, first + block.rank, total).reshape(-1)
        indices.index_copy_(0, target, block.columns.reshape(-1))
        data.index_copy_(0, target, block.values.reshape(-1))
        if bar is not None:
            bar.update(rows)
    if bar is not None:
        bar.close()
    indices, data = indices[:total], data[:total]
    indptr = indptr.to(itype)
    return indptr, indices, data
