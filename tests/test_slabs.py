"""The slab plan behind convop.distributed, checked in one process for many rank counts.

Every rank of a P-rank split is simulated here: its extended slab is read straight from the
global sample through the plan's source indices, its local convolution is run, and the
slabs put side by side must equal the serial operator; the adjoint's halo reduce (adding
each extended sample back onto its source) must equal the serial adjoint. The transfers
(who sends what to whom) must describe exactly those source indices. tests/test_halo.py
then runs the messages themselves over the same geometries (the halo core, simulated ranks
in one process), and the MPI tests (tests/mpi) under ``mpiexec``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from convop import functional
from convop._mpi.slabs import SlabPlan, Transfer, choose_axis, conv_form, split
from convop.geometry import ConvGeometry

from .checks import assert_close
from .strategies import COMBO_IDS, COMBOS, conv_cases


@pytest.mark.parametrize(("n", "parts"), [(10, 3), (7, 7), (5, 1), (9, 4)])
def test_split_is_contiguous_and_balanced_remainder_first(n, parts):
    bounds = split(n, parts)
    assert bounds[0][0] == 0
    assert bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert sizes == sorted(sizes, reverse=True)
    assert max(sizes) - min(sizes) <= 1


def _simulate(plan: SlabPlan, weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """Forward and adjoint of ``crop o C`` assembled from every rank's local work."""
    a = 1 + plan.axis  # tensors here carry a batch dimension: (1, C, *spatial)
    outs, adjoint = [], torch.zeros_like(x)
    for rank in range(plan.ranks):
        source = torch.from_numpy(plan.extended_source(rank))
        local = plan.local_geometry(rank)
        ext = x.index_select(a + 1, source.clamp(min=0))
        ext[(slice(None),) * (a + 1) + (source < 0,)] = 0
        keep = [hi - lo for lo, hi in [plan.output_bounds[rank]]]
        out = functional.forward(ext, weight, local)
        for i, k in enumerate(plan.keep):
            out = out.narrow(2 + i, 0, keep[0] if i == plan.axis else k)
        outs.append(out)
        b0, b1 = plan.output_bounds[rank]
        block = y.narrow(a + 1, b0, b1 - b0)
        pads = []
        for i in reversed(range(plan.conv.ndim)):
            pads += [0, local.output_size[i] - block.shape[2 + i]]
        grad = functional.adjoint(torch.nn.functional.pad(block, pads), weight, local)
        valid = source >= 0
        adjoint.index_add_(a + 1, source[valid], grad.index_select(a + 1, valid.nonzero()[:, 0]))
    return torch.cat(outs, dim=a + 1), adjoint


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_simulated_ranks_equal_the_serial_convolution(ndim, transposed, mode, data):
    case = data.draw(conv_cases(ndim, transposed, mode))
    weight = case.weight(torch.float64)
    conv, keep, flip = conv_form(case.operator(weight).geometry)
    axis = data.draw(st.integers(0, ndim - 1))
    ranks = data.draw(st.integers(1, SlabPlan.max_ranks(conv, keep, axis)))
    plan = SlabPlan(conv, keep, axis, ranks)
    x = case.random((1, *conv.input_shape), torch.float64, 1)
    y = case.random((1, conv.out_channels, *keep), torch.float64, 2)
    forward, adjoint = _simulate(plan, weight, x, y)
    want = functional.forward(x, weight, conv)
    for i, k in enumerate(keep):
        want = want.narrow(2 + i, 0, k)
    assert_close(forward, want, dtype=torch.float64, terms=case.terms)
    full = list(conv.output_shape)
    pads = []
    for i in reversed(range(ndim)):
        pads += [0, full[1 + i] - keep[i]]
    want = functional.adjoint(torch.nn.functional.pad(y, pads), weight, conv)
    assert_close(adjoint, want, dtype=torch.float64, terms=case.terms)
    if flip:  # crop o C is the transposed convolution's adjoint (weight conjugated)
        geometry = case.operator(weight).geometry
        want = functional.adjoint(x, weight, geometry)
        assert_close(forward, want, dtype=torch.float64, terms=case.terms)


@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@given(data=st.data())
def test_transfers_describe_the_extended_slabs_exactly(ndim, transposed, mode, data):
    case = data.draw(conv_cases(ndim, transposed, mode))
    conv, keep, _ = conv_form(case.operator(case.weight(torch.float64)).geometry)
    axis = data.draw(st.integers(0, ndim - 1))
    ranks = data.draw(st.integers(1, SlabPlan.max_ranks(conv, keep, axis)))
    plan = SlabPlan(conv, keep, axis, ranks)
    for rank in range(ranks):
        source = plan.extended_source(rank)
        seen = np.full(len(source), -1)
        for owner, transfer in plan.receives(rank).items():
            lo, hi = plan.input_bounds[owner]
            assert np.all((transfer.local >= 0) & (transfer.local < hi - lo))
            seen[transfer.ext] = transfer.local + lo
            if owner != rank:
                sent = plan.sends(owner)[rank]
                assert np.array_equal(sent.local, transfer.local)
                assert np.array_equal(sent.ext, transfer.ext)
        assert np.array_equal(seen, source)  # every sample from its owner, zeros left out
        assert plan.halo_samples(rank) == sum(
            len(t) for q, t in plan.receives(rank).items() if q != rank
        )


def test_interior_slabs_receive_only_the_kernel_span():
    conv, keep, _ = conv_form(
        functional.ConvGeometry.from_torch((1, 1, 9), (1, 100), padding="same")
    )
    plan = SlabPlan(conv, keep, 0, 4)
    assert [plan.halo_samples(r) for r in range(4)] == [4, 8, 8, 4]
    own = plan.receives(1)[1]
    start, rest = own.window(25)
    assert start == 4
    assert not rest.any()


def test_circular_first_rank_reads_the_last_rank():
    conv, keep, _ = conv_form(
        functional.ConvGeometry.from_torch((1, 1, 5), (1, 12), padding=2, padding_mode="circular")
    )
    plan = SlabPlan(conv, keep, 0, 3)
    assert sorted(plan.receives(0)) == [0, 1, 2]
    assert plan.receives(0)[2].local.tolist() == [2, 3]  # samples 10 and 11 of 12
    assert plan.receives(2)[0].local.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("local", "ext", "n", "window"),
    [
        ([0, 1, 2], [4, 5, 6], 3, (4, [])),
        ([1, 0, 1, 2, 3], [0, 1, 2, 3, 4], 4, (1, [0])),  # reflect: sample 1 copied before
        ([0, 1, 2, 0], [2, 3, 4, 5], 3, (2, [3])),  # circular wrap on one rank
        ([2, 1, 0], [0, 1, 2], 3, None),  # reversed: no slab-copy window
        ([0, 2], [0, 1], 2, None),
        ([0, 1], [0, 2], 2, None),  # not consecutive in the extended slab
        ([], [], 1, None),
    ],
)
def test_transfer_window(local, ext, n, window):
    t = Transfer(np.array(local, dtype=np.int64), np.array(ext, dtype=np.int64))
    found = t.window(n)
    if window is None:
        assert found is None
    else:
        assert found[0] == window[0]
        assert np.flatnonzero(found[1]).tolist() == window[1]


# ---------------------------------------------------------------------- the split axis
#: 4 input and output samples along axis 0, 9 along axis 1 (stride 1, "same" padding).
WIDE = ConvGeometry.from_torch((1, 1, 3, 3), (1, 4, 9), padding=1)


@pytest.mark.parametrize(("axis", "ranks", "chosen"), [(None, 5, 1), (None, 2, 1), (0, 4, 0),
                                                        (-2, 3, 0), (-1, 9, 1)])  # fmt: skip
def test_choose_axis_takes_the_axis_given_or_the_one_with_most_slabs(axis, ranks, chosen):
    assert choose_axis(WIDE, WIDE.output_size, ranks, axis) == chosen


@pytest.mark.parametrize(
    ("axis", "ranks", "error", "match"),
    [
        (0, 5, ValueError, r"the layer cannot be split over 5 ranks along spatial axis 0: .* "
                           r"at most 4 ranks work on that axis \(at most 9 on the best axis\)"),
        (None, 10, ValueError, r"over 10 ranks along spatial axis 1: .* at most 9 ranks"),
        (2, 2, ValueError, r"axis must be a spatial axis of the 2-d sample, in \[-2, 1\], got "
                           r"axis=2"),
        (1.0, 2, TypeError, r"axis must be an int or None, got 1\.0"),
    ],
)  # fmt: skip
def test_choose_axis_refuses_axes_that_do_not_fit(axis, ranks, error, match):
    with pytest.raises(error, match=match):
        choose_axis(WIDE, WIDE.output_size, ranks, axis, what="layer")
