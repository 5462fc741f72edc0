"""Explicit dense and sparse matrices of a convolution, by index arithmetic.

No probing with unit vectors and no Python loop over pixels, taps or columns: the matrix is
generated from the geometry and the weight, a block of rows at a time.

How. Every row of a convolution's matrix is one output sample ``(o, p)``. Along each spatial
dimension the kernel taps of position ``p`` read padded samples ``q = p*s + kappa*d - before``,
each a copy of input sample ``source_index(q)`` (or of nothing, for zero padding). Padding is
separable, so per dimension and position we sort the distinct sources into *slots* and record
which taps fold onto each slot. Folding the weight with those 0/1 matrices (one small einsum
per dimension and distinct border pattern) gives the value of every ``(row, slot)`` pair, and
the slot's source gives its column. Within a row the columns come out sorted and unique, so the
CSR arrays are written directly into their final buffers: no COO stage, no sort, no duplicate
summation pass, and only structural entries (reflect/replicate/circular taps that land on the
same input sample are summed into one entry).

A transposed convolution ``T`` with weight ``w`` is the transpose of the convolution with the
same weight read in conv layout, restricted to ``T``'s input positions; adjoints are conjugate
transposes. Both are handled by writing the same blocks into a transposed target.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ._arrays import zeros
from .geometry import ConvGeometry
from .padding import source_index

#: Fraction of the currently available memory a result may take by default.
DEFAULT_MEMORY_FRACTION = 0.5
#: Candidate entries generated per block (bounds the temporaries to a few hundred MB).
BLOCK_ENTRIES = 1 << 19
#: Above this many candidate entries a build shows a progress bar by default (~2 s here).
PROGRESS_ENTRIES = 3 * 10**8


# ---------------------------------------------------------------------- per-dimension plan
@dataclass(frozen=True)
class _Axis:
    """How one spatial dimension's taps land on input samples, for every output position."""

    slot_source: torch.Tensor  # (P, k) int64: input index of each slot, -1 if unused
    slot_valid: torch.Tensor  # (P, k) bool
    pattern: torch.Tensor  # (P,) int64: which fold pattern position p uses
    folds: torch.Tensor  # (n_patterns, k, k) 0/1: folds[t, j, kappa] = tap kappa -> slot j
    counts: torch.Tensor  # (P,) int64: used slots per position


def _axis(n: int, before: int, after: int, k: int, s: int, d: int, mode: str, positions: int,
          device: torch.device) -> _Axis:  # fmt: skip
    p = torch.arange(positions, device=device)[:, None]
    kappa = torch.arange(k, device=device)[None, :]
    q = p * s + kappa * d  # (P, k) positions in the padded input
    source = source_index(n, before, after, mode, device=device)[q]  # (P, k), -1 = zero halo
    # Distinct sources per position, sorted; invalid (-1) taps sort first and are dropped.
    ordered, order = torch.sort(source, dim=1, stable=True)
    fresh = torch.ones_like(ordered, dtype=torch.bool)
    fresh[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    fresh &= ordered >= 0
    slot_of_sorted = torch.cumsum(fresh, dim=1) - 1  # (P, k) slot of each sorted tap
    counts = fresh.sum(dim=1)
    slot_valid = torch.arange(k, device=device)[None, :] < counts[:, None]
    slot_source = torch.full((positions, k), -1, dtype=torch.int64, device=device)
    rows = torch.arange(positions, device=device)[:, None].expand(-1, k)
    slot_source[rows[fresh], slot_of_sorted[fresh]] = ordered[fresh]
    # fold[p, j, kappa] = 1 where tap kappa (valid) lands in slot j
    fold = torch.zeros((positions, k, k), dtype=torch.int8, device=device)
    tap_slot = torch.empty_like(slot_of_sorted).scatter_(1, order, slot_of_sorted)
    tap_valid = source >= 0
    taps = kappa.expand(positions, -1)
    fold[rows[tap_valid], tap_slot[tap_valid], taps[tap_valid]] = 1
    folds, pattern = torch.unique(fold.reshape(positions, -1), dim=0, return_inverse=True)
    return _Axis(slot_source, slot_valid, pattern, folds.reshape(-1, k, k), counts)


# ---------------------------------------------------------------------- whole-matrix plan
@dataclass(frozen=True)
class _Plan:
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


def plan(weight: torch.Tensor, geometry: ConvGeometry, *, adjoint: bool) -> _Plan:
    """Reduce any operator (conv or transposed, forward or adjoint) to generated conv rows."""
    if not geometry.transposed:
        return _Plan(geometry, weight, geometry.output_size, transpose=adjoint, conj=adjoint)
    # conv_transpose(x, w) = conv(., w)^T restricted to the transposed conv's input positions.
    conv = ConvGeometry(
        in_channels=geometry.out_channels,
        out_channels=geometry.in_channels,
        kernel_size=geometry.kernel_size,
        input_size=geometry.output_size,
        stride=geometry.stride,
        padding=geometry.padding,
        dilation=geometry.dilation,
        groups=geometry.groups,
    )
    return _Plan(conv, weight, geometry.input_size, transpose=not adjoint, conj=adjoint)


def nnz(p: _Plan) -> int:
    """Exact number of structural nonzeros, without building anything."""
    return int(_row_counts(p, _axes(p)).sum()) if p.rows else 0


def _axes(p: _Plan) -> list[_Axis]:
    g = p.conv
    return [
        _axis(n, lo, hi, k, s, d, g.padding_mode, positions, p.weight.device)
        for n, (lo, hi), k, s, d, positions in zip(
            g.input_size, g.padding, g.kernel_size, g.stride, g.dilation, p.positions
        )
    ]


def _row_counts(p: _Plan, axes: list[_Axis]) -> torch.Tensor:
    """Entries per generated row, (O * prod(P),) int64, rows in C order of (o, *p)."""
    counts = torch.tensor(p.weight.shape[1], device=p.weight.device)
    for axis in axes:
        counts = counts[..., None] * axis.counts
    return counts.reshape(1, -1).expand(p.conv.out_channels, -1).reshape(-1)


def _folded_weight(p: _Plan, axes: list[_Axis]) -> torch.Tensor:
    """(O, *n_patterns, C', *slots): the weight folded by every border pattern."""
    w = p.weight.detach()
    w = w.conj() if p.conj else w
    ndim = len(axes)
    for i, axis in enumerate(axes):
        # contract kernel dim (2 + 2i) with folds (t, j, kappa) -> pattern and slot dims
        folds = axis.folds.to(w.dtype)
        w = torch.tensordot(w, folds, dims=([2 + 2 * i], [2]))  # kernel dim -> (t, j) at end
        w = w.movedim((-2, -1), (2 + 2 * i, 3 + 2 * i))
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


def _blocks(p: _Plan, axes: list[_Axis], index_dtype: torch.dtype) -> Iterator[_Block]:
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


# ---------------------------------------------------------------------- memory guard
def available_memory(device: torch.device | None = None) -> int:
    """Bytes available to a new allocation on ``device`` (host: Linux ``MemAvailable``)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(
    needed: int, max_bytes: int | None, what: str, device: torch.device | None = None
) -> None:
    """Raise ``MemoryError`` before allocating more than ``max_bytes``.

    The default limit is :data:`DEFAULT_MEMORY_FRACTION` of the memory available now.
    """
    if max_bytes is None:
        free = available_memory(device)
        limit = int(DEFAULT_MEMORY_FRACTION * free)
        source = f"half the {format_bytes(free)} available now"
    elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ValueError(f"max_bytes must be a non-negative int or None, got {max_bytes!r}")
    else:
        limit, source = max_bytes, "max_bytes"
    if needed > limit:
        raise MemoryError(
            f"{what} needs {format_bytes(needed)}, more than the limit of "
            f"{format_bytes(limit)} ({source}); pass max_bytes={needed} or more to build "
            f"it anyway"
        )


def index_dtype(p: _Plan, count: int) -> torch.dtype:
    """int32 indices when every index fits, as scipy would choose; int64 otherwise."""
    return torch.int32 if max(count, *p.shape) < 2**31 - 1 else torch.int64


# ---------------------------------------------------------------------- builders
def _progress(p: _Plan, show: bool | None, what: str):
    total = p.rows * p.row_width
    if show is None:
        show = total > PROGRESS_ENTRIES
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=p.rows, desc=what, unit="row", unit_scale=True, leave=False)


def dense(p: _Plan, *, progress: bool | None = None) -> torch.Tensor:
    """The matrix as a dense tensor of shape ``p.shape`` on the weight's device."""
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
    p: _Plan, *, progress: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(indptr, indices, data)`` of the generated rows: CSR of the matrix, or CSC of its
    transpose when ``p.transpose`` (the same arrays)."""
    axes = _axes(p)
    device = p.weight.device
    counts = _row_counts(p, axes)
    total = int(counts.sum()) if p.rows else 0
    itype = index_dtype(p, total)
    indptr = torch.zeros(p.rows + 1, dtype=torch.int64, device=device)
    indptr[1:] = torch.cumsum(counts, dim=0)
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
