"""convop.distributed under MPI: every rank count equals the serial operator.

Run with ``mpiexec -n N python -m pytest --with-mpi tests/mpi`` for N = 1, 2, 3 (``make
test-mpi``). The serial convop operator is the oracle (itself tested against torch): every
rank computes the serial result on the whole sample and compares its own block, and the
gathered global array. Errors are reduced over ranks before asserting, so all ranks pass or
fail together (and Hypothesis, derandomized, shrinks in step on all of them).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pylops
import pylops_mpi
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI
from pylops_mpi.optimization.basic import cg as mpi_cg
from pylops_mpi.optimization.basic import cgls as mpi_cgls

import convop
import convop.data
from convop._mpi.slabs import SlabPlan
from convop.distributed import DistributedConv, block_diag, local_device

from ..strategies import COMBO_IDS, COMBOS, conv_cases

pytestmark = pytest.mark.mpi

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
MPI_SETTINGS = settings(
    derandomize=True,  # every rank draws the same cases
    database=None,
    deadline=None,
    max_examples=int(os.environ.get("CONVOP_MPI_EXAMPLES", "25")),
    suppress_health_check=list(HealthCheck),
)


def agree(error: float) -> float:
    """The largest ``error`` over all ranks (every rank gets the same verdict)."""
    return COMM.allreduce(float(error), op=MPI.MAX)


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-300)
    return float(np.abs(got - want).max(initial=0.0)) / scale


def serial(op: convop.ConvOperator, x: np.ndarray) -> np.ndarray:
    return (op @ x.reshape(-1)).reshape(op.output_shape)


def random(shape: tuple, dtype, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def check_products(D: DistributedConv, op: convop.ConvOperator, seed: int) -> float:
    """Largest relative error of D's forward and adjoint against ``op``'s, on this rank."""
    dtype = op.dtype
    x = random(op.input_shape, dtype, seed)
    y = random(op.output_shape, dtype, seed + 1)
    fx = D @ D.scatter(x)
    ay = D.H @ D.H.scatter(y)
    want_f, want_a = serial(op, x), serial(op.H, y)
    errors = [
        rel_error(D.to_local(fx, output=True), want_f[D.output_slices[RANK]]),
        rel_error(D.gather(fx), want_f),
        rel_error(D.H.to_local(ay, output=True), want_a[D.input_slices[RANK]]),
        rel_error(D.H.gather(ay), want_a),
    ]
    return max(errors)


def widen(case, axis: int, extra: int):
    """The case with ``axis`` long enough that every rank owns input and output samples."""
    sizes = list(case.input_shape)
    stride = case.options["stride"][axis]
    sizes[1 + axis] += (SIZE - 1) * stride + extra
    return case._replace(input_shape=tuple(sizes))


# ---------------------------------------------------------------------- exactness
@pytest.mark.parametrize(("ndim", "transposed", "mode"), COMBOS, ids=COMBO_IDS)
@MPI_SETTINGS
@given(data=st.data())
def test_forward_and_adjoint_equal_the_serial_operator(ndim, transposed, mode, data):
    case = data.draw(conv_cases(ndim, transposed, mode))
    axis = data.draw(st.integers(0, ndim - 1))
    case = widen(case, axis, data.draw(st.integers(0, 3)))
    dtype = data.draw(st.sampled_from([torch.float64, torch.complex128]))
    op = case.operator(case.weight(dtype))
    error = 0.0
    for which in (op, op.H, op.T):
        D = which.to_pylops_mpi(axis=axis)
        assert D.shape == which.shape
        error = max(error, check_products(D, which, case.seed))
    assert agree(error) <= 1e-12


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_halos_reaching_past_the_neighbour(mode):
    """Slabs of 2-3 samples under a kernel spanning 13: halos come from several ranks away
    (and from the far end for circular padding)."""
    n = 2 * SIZE + 5
    weight = torch.randn(2, 1, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    op = convop.conv1d(weight, (1, n), padding=6, dilation=2, padding_mode=mode)
    D = op.to_pylops_mpi()
    assert agree(check_products(D, op, 3)) <= 1e-12


def test_halo_bytes_count_the_samples_that_cross():
    """A 9-tap 'same' convolution: 4 samples from each neighbour, per channel and column."""
    op = convop.conv2d(
        torch.ones(3, 2, 9, 1, dtype=torch.float64), (2, 10 * SIZE, 5), padding="same"
    )
    D = op.to_pylops_mpi(axis=0)
    neighbours = (RANK > 0) + (RANK < SIZE - 1)
    assert D.halo_bytes == neighbours * 4 * 2 * 5 * 8
    assert D.H.halo_bytes == D.halo_bytes  # the reduce returns what the gather took


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
def test_single_precision(dtype):
    weight = torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(2), dtype=dtype)
    op = convop.conv2d(weight, (2, 9 * SIZE, 7), padding=(2, 1), padding_mode="reflect")
    D = op.to_pylops_mpi()
    x = random(op.input_shape, op.dtype, 5)
    fx = D @ D.scatter(x)
    assert fx.dtype == op.dtype
    assert agree(rel_error(D.gather(fx), serial(op, x))) <= 1e-5


def test_every_method_and_the_weight_now():
    """'direct' and 'fft' both match, and a weight changed in place shows at the next product."""
    weight = torch.randn(
        1, 1, 9, 9, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    errors = []
    for method in ("direct", "fft"):
        op = convop.conv2d(weight.clone(), (1, 24 * SIZE, 20), padding="same", method=method)
        D = op.to_pylops_mpi()
        errors.append(check_products(D, op, 6))
        with torch.no_grad():
            op.weight.mul_(-2.0)
        errors.append(check_products(D, op, 7))
    assert agree(max(errors)) <= 1e-12


# ---------------------------------------------------------------------- pylops-mpi
@pytest.mark.parametrize(
    "build",
    [
        lambda w: convop.conv2d(w, (2, 8 * SIZE, 6), padding=2, padding_mode="circular"),
        lambda w: convop.conv2d(w, (2, 8 * SIZE, 6), stride=2, padding=1, padding_mode="reflect"),
        lambda w: convop.conv_transpose2d(
            w.transpose(0, 1).contiguous(), (2, 4 * SIZE, 5), stride=2, output_padding=1
        ),
    ],
    ids=["circular", "strided-reflect", "transposed"],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_dottest(build, dtype):
    weight = torch.randn(3, 2, 3, 3, generator=torch.Generator().manual_seed(8), dtype=dtype)
    op = build(weight)
    D = op.to_pylops_mpi()
    u = D.scatter(random(op.input_shape, op.dtype, 9))
    v = D.H.scatter(random(op.output_shape, op.dtype, 10))
    assert pylops_mpi.utils.dottest(D, u, v, rtol=1e-10)


def _blur(n: int, mode: str = "reflect") -> convop.ConvOperator:
    kernel = torch.from_numpy(convop.data.gaussian_kernel(5, 1.2))[None, None]
    return convop.conv2d(kernel, (1, n, 11), padding="same", padding_mode=mode)


def test_cgls_iterates_equal_serial_pylops():
    op = _blur(10 * SIZE)
    truth = random(op.input_shape, np.float64, 11)
    b = serial(op, truth)
    D = op.to_pylops_mpi()
    distributed = []
    x0 = D.scatter(np.zeros(op.input_shape))
    keep = distributed.append
    mpi_cgls(
        D, D.H.scatter(b), x0, niter=10, damp=0.1, tol=0.0, callback=lambda x: keep(D.gather(x))
    )
    P = op.to_pylops()
    reference = []
    keep_serial = reference.append
    cgls = pylops.optimization.basic.cgls
    cgls(P, b.ravel(), x0=np.zeros(P.shape[1]), niter=10, damp=0.1, tol=0.0,
         callback=lambda x: keep_serial(x.copy()))  # fmt: skip
    assert len(distributed) == len(reference) == 10
    error = max(rel_error(got.reshape(-1), want) for got, want in zip(distributed, reference))
    assert agree(error) <= 1e-10


def test_cg_on_the_normal_equations_equals_serial_pylops():
    """``D.H @ D`` composes into a pylops-mpi product operator that ``cg`` solves."""
    op = _blur(7 * SIZE, "replicate")
    b = serial(op.H, serial(op, random(op.input_shape, np.float64, 23)))
    D = op.to_pylops_mpi()
    normal = D.H @ D
    x = mpi_cg(normal, D.scatter(b), D.zeros(), niter=8, tol=0.0)[0]
    P = op.to_pylops()
    want = pylops.optimization.basic.cg(P.H @ P, b.ravel(), x0=np.zeros(P.shape[1]), niter=8,
                                        tol=0.0)[0]  # fmt: skip
    assert agree(rel_error(D.gather(x, output=False).reshape(-1), want)) <= 1e-10


def test_tikhonov_as_a_stack_with_a_pylops_mpi_regulariser():
    """MPIStackedVStack([D, eps I]) with cgls equals serial PyLops on VStack([A, eps I])."""
    op = _blur(8 * SIZE, "circular")
    eps = 0.3
    b = serial(op, random(op.input_shape, np.float64, 12))
    D = op.to_pylops_mpi()
    identity = pylops_mpi.MPIBlockDiag([pylops.Identity(math.prod(D.local_input_shape))])
    stack = pylops_mpi.MPIStackedVStack([D, eps * identity])
    zero = D.scatter(np.zeros(op.input_shape))
    rhs = pylops_mpi.StackedDistributedArray([D.H.scatter(b), zero.copy()])
    x = mpi_cgls(stack, rhs, zero, niter=15, tol=0.0)[0]
    P = op.to_pylops()
    serial_stack = pylops.VStack([P, eps * pylops.Identity(P.shape[1])])
    rhs_serial = np.concatenate([b.ravel(), np.zeros(P.shape[1])])
    want = pylops.optimization.basic.cgls(serial_stack, rhs_serial, x0=np.zeros(P.shape[1]),
                                          niter=15, tol=0.0)[0]  # fmt: skip
    assert agree(rel_error(D.gather(x).reshape(-1), want)) <= 1e-10


# ---------------------------------------------------------------------- layout helpers
def test_scatter_and_gather_through_a_root():
    op = _blur(5 * SIZE + 1)
    D = op.to_pylops_mpi()
    x = random(op.input_shape, np.float64, 13)
    root = SIZE - 1
    from_root = D.scatter(x if root == RANK else None, root=root)
    everywhere = D.scatter(x)
    assert np.array_equal(from_root.local_array, everywhere.local_array)
    y = D @ from_root
    gathered = D.gather(y, root=root)
    if root == RANK:
        assert np.allclose(gathered, serial(op, x), rtol=1e-12, atol=1e-14)
    else:
        assert gathered is None


def test_a_wrong_x_on_the_root_raises_on_every_rank():
    """Only the root sees ``x``: the others learn of its error instead of waiting for a block."""
    D = _blur(5 * SIZE + 1).to_pylops_mpi()
    root = SIZE - 1
    with pytest.raises(ValueError, match=rf"x must have shape .*got \(3,\) \(x on rank {root}\)"):
        D.scatter(np.zeros(3) if root == RANK else None, root=root)


def test_output_flags_name_the_other_space():
    op = convop.conv2d(torch.ones(2, 1, 3, 3, dtype=torch.float64), (1, 6 * SIZE, 5), stride=2)
    D = op.to_pylops_mpi()
    y = random(op.output_shape, np.float64, 22)
    data = D.scatter(y, output=True)
    assert np.array_equal(data.local_array, D.H.scatter(y).local_array)
    x = D.H @ data
    assert np.array_equal(D.gather(x, output=False), D.H.gather(x))
    assert np.array_equal(D.to_local(D.zeros()), np.zeros(D.local_input_shape))
    assert D.zeros(output=True).global_shape == (op.shape[0],)
    block = y[D.output_slices[RANK]]
    assert np.array_equal(D.to_local(D.from_local(block, output=True), output=True), block)
    with pytest.raises(TypeError, match="output must be a bool"):
        D.zeros(output=1)


def test_slices_partition_the_sample_and_from_local_reads_one_block():
    op = convop.conv3d(torch.ones(2, 1, 3, 3, 3, dtype=torch.float64), (1, 4, 7 * SIZE, 5),
                       padding=1)  # fmt: skip
    D = op.to_pylops_mpi(axis=1)
    assert D.axis == 1
    x = random(op.input_shape, np.float64, 14)
    covered = np.zeros(op.input_shape, dtype=int)
    for index in D.input_slices:
        covered[index] += 1
    assert np.all(covered == 1)
    own = x[D.input_slices[RANK]]
    assert own.shape == D.local_input_shape
    v = D.from_local(own)  # what a rank reading its slab from disk does
    assert np.array_equal(D.gather(D @ v), D.gather(D @ D.scatter(x)))
    assert not np.shares_memory(D.to_local(v), own)


def test_caller_arrays_are_not_modified():
    op = _blur(6 * SIZE)
    D = op.to_pylops_mpi()
    x = random(op.input_shape, np.float64, 15)
    before = x.copy()
    v = D.scatter(x)
    kept = v.local_array.copy()
    D.gather(D.H @ (D @ v))
    assert np.array_equal(x, before)
    assert np.array_equal(v.local_array, kept)


# ---------------------------------------------------------------------- refusals
def test_too_many_ranks_is_refused_naming_the_largest_count_that_works():
    op = convop.conv2d(torch.ones(1, 1, 3, 3), (1, SIZE, 8), padding=1)
    if SIZE == 1:
        assert op.to_pylops_mpi(axis=0).axis == 0
        return
    sub = COMM.Split(color=0, key=RANK)
    op = convop.conv2d(torch.ones(1, 1, 3, 3), (1, SIZE - 1, 8), padding=1)
    with pytest.raises(ValueError, match=rf"at most {SIZE - 1} ranks work on that axis"):
        op.to_pylops_mpi(comm=sub, axis=0)
    sub.Free()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(axis=2), ValueError, "axis must be a spatial axis"),
        (dict(axis=0.0), TypeError, "axis must be an int"),
        (dict(comm="world"), TypeError, "comm must be an mpi4py.MPI.Comm"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    op = convop.conv2d(torch.ones(1, 1, 3, 3), (1, 4 * SIZE, 8), padding=1)
    with pytest.raises(error, match=match):
        op.to_pylops_mpi(**kwargs)


def test_wrong_vectors_are_refused():
    op = _blur(4 * SIZE)
    D = op.to_pylops_mpi()
    with pytest.raises(TypeError, match=r"x must be a pylops_mpi\.DistributedArray"):
        D._matvec(np.zeros(D.shape[1]))
    plain = pylops_mpi.DistributedArray(D.shape[1], partition=pylops_mpi.Partition.BROADCAST)
    with pytest.raises(ValueError, match="x must be a SCATTER DistributedArray"):
        D @ plain
    with pytest.raises(ValueError, match=r"x must have shape \(1, "):
        D.scatter(np.zeros((2, 3)))


# ---------------------------------------------------------------------- ranks that disagree
def _owner_off_by_one(plan: SlabPlan, index: np.ndarray) -> np.ndarray:
    """A slab-ownership bug: the first sample of each slab goes to the rank before."""
    starts = np.array([lo for lo, _ in plan.input_bounds])
    owners = np.searchsorted(starts, index, side="left") - 1
    return np.where(index < 0, -1, owners)


@pytest.mark.skipif(SIZE < 2, reason="a disagreement needs two ranks")
def test_a_rank_that_disagrees_fails_every_rank_instead_of_hanging(monkeypatch):
    """The last rank runs a slab-ownership bug (its first sample belongs to the rank
    before). A 2-tap filter reads one sample past each slab's end: the rank before waits
    for that sample, which the last rank does not send, and the last rank waits for its own
    first sample, which nobody sends. Without the agreement check before the first
    exchange, both wait forever. Every rank must raise the same error, at once."""
    monkeypatch.setattr(SlabPlan, "owner", {SIZE - 1: _owner_off_by_one}.get(RANK, SlabPlan.owner))
    weight = torch.tensor([[[0.25, 0.75]]], dtype=torch.float64)
    op = convop.conv2d(weight[..., None], (1, 6 * SIZE, 3), padding="same")
    D = op.to_pylops_mpi(axis=0)
    x = D.scatter(random(op.input_shape, np.float64, 30))
    with pytest.raises(RuntimeError, match="the ranks disagree") as raised:
        D @ x
    messages = COMM.allgather(str(raised.value))
    assert messages == [messages[0]] * SIZE
    assert messages[0] == (
        f"the ranks disagree on the distributed convolution: rank {SIZE - 2} expects 1 halo "
        f"sample from rank {SIZE - 1}, which sends it 0; no message was exchanged"
    )
    monkeypatch.undo()  # now that every rank agrees, a new distributed operator works
    assert agree(check_products(op.to_pylops_mpi(axis=0), op, 31)) <= 1e-12


# ---------------------------------------------------------------------- many frames
def test_block_diag_of_frames_equals_each_frame_alone():
    op = _blur(9)
    frames = RANK + 1  # uneven on purpose
    B = block_diag(op, frames=frames)
    counts = COMM.allgather(frames)
    offset = sum(counts[:RANK])
    total = sum(counts)
    x = random((total, *op.input_shape), np.float64, 16)
    v = pylops_mpi.DistributedArray(B.shape[1], local_shapes=B.local_shapes_m)
    v[:] = x[offset : offset + frames].reshape(-1)
    y = (B @ v).local_array.reshape(frames, *op.output_shape)
    want = np.stack([serial(op, f) for f in x[offset : offset + frames]])
    assert agree(rel_error(y, want)) <= 1e-12
    u = pylops_mpi.DistributedArray(B.shape[0], local_shapes=B.local_shapes_n)
    u[:] = random((frames, *op.output_shape), np.float64, 17 + RANK).reshape(-1)
    assert pylops_mpi.utils.dottest(B, v, u, rtol=1e-10)


def test_block_diag_of_different_operators():
    ops = [_blur(7 + RANK + i) for i in range(2)]
    B = block_diag(ops)
    v = pylops_mpi.DistributedArray(B.shape[1], local_shapes=B.local_shapes_m)
    parts = [random(o.input_shape, np.float64, 18 + i) for i, o in enumerate(ops)]
    v[:] = np.concatenate([p.ravel() for p in parts])
    y = (B @ v).local_array
    want = np.concatenate([serial(o, p).ravel() for o, p in zip(ops, parts)])
    assert agree(rel_error(y, want)) <= 1e-12


# ---------------------------------------------------------------------- memory
def _exact_rss() -> bool:
    """Make the RSS high-water mark measure allocations: large blocks get fresh pages
    (glibc ``mallopt``: mmap from 64 KiB, no heap trimming delay) and VmHWM can be reset."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 0)  # M_TRIM_THRESHOLD
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except (OSError, AttributeError):
        return False
    return True


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _peak_bytes(run, repeats: int = 5) -> int:
    """Peak of the memory ``run()`` allocates, above what was resident before it (after
    one warm-up call: plans, spectra and caches are not the product's).

    RSS is the whole process's: anything else that touches fresh pages meanwhile (MPI's
    progress engine, a library's lazy set-up) adds to one reading and never takes away, so
    the least of ``repeats`` readings is the run's own peak."""
    run()
    peaks = []
    for _ in range(repeats):
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        kept = run()
        peaks.append((_status_kib("VmHWM") - before) * 1024)
        del kept
    return min(peaks)


@pytest.mark.parametrize("method", ["direct", "fft"])
def test_memory_per_rank_is_the_local_blocks_and_halo(method):
    """Peak memory of a product on each rank <= 1.6 x (input block + halo + output block)
    plus the workspace torch's convolution needs for the same local problem in one process
    (measured alone on the extended slab): no rank holds the global array or copies beyond
    its extended slab."""
    if not _exact_rss():
        pytest.skip("needs glibc and Linux /proc/self/clear_refs to measure the peak")
    n = 40 * SIZE
    weight = torch.ones(1, 1, 5, 5, 5, dtype=torch.float32) / 125
    op = convop.conv3d(weight, (1, n, 128, 128), padding=2, padding_mode="reflect", method=method)
    D = op.to_pylops_mpi(axis=0)
    x = D.from_local(random(D.local_input_shape, np.float32, 19 + RANK))  # no global volume
    y = D.H.from_local(random(D.local_output_shape, np.float32, 29 + RANK))
    local = D._core.local(conj=False)
    ext = torch.randn(1, *local.input_shape)
    out = torch.randn(1, *local.output_shape)
    torch_alone = {  # the local convolution's own workspace, as in a one-process product
        True: _peak_bytes(lambda: local.apply(ext)) - out.nbytes,
        False: _peak_bytes(lambda: local.apply_adjoint(out)) - ext.nbytes,
    }
    itemsize = op.dtype.itemsize
    blocks = (math.prod(D.local_input_shape) + math.prod(D.local_output_shape)) * itemsize
    blocks += D.halo_bytes
    ratios = []
    for forward, product, vector in ((True, D, x), (False, D.H, y)):
        COMM.Barrier()
        peak = _peak_bytes(lambda product=product, vector=vector: product @ vector)
        ratios.append((peak - max(torch_alone[forward], 0)) / blocks)
    worst = agree(max(ratios))
    # Measured 1.0-1.1 forward, 0.5-0.6 adjoint; CI saw 1.39-1.45 once each for the direct
    # method, whose oneDNN workspace (4-5x the blocks, subtracted) varies with the process's
    # allocation history. 1.6 still fails any rank holding the global input or output: on 2
    # ranks that alone adds >= 1.0.
    assert worst <= 1.6, f"(peak - torch's workspace) / (blocks + halo) = {worst:.2f}"


# ---------------------------------------------------------------------- GPU ranks
@pytest.mark.cuda
def test_weight_on_this_ranks_gpu():
    device = local_device()
    weight = torch.randn(2, 1, 3, 3, 3, generator=torch.Generator().manual_seed(20),
                         dtype=torch.float64)  # fmt: skip
    op_gpu = convop.conv3d(
        weight.to(device), (1, 6 * SIZE, 5, 4), padding=1, padding_mode="reflect"
    )
    op_cpu = convop.conv3d(weight, (1, 6 * SIZE, 5, 4), padding=1, padding_mode="reflect")
    D = op_gpu.to_pylops_mpi()
    assert agree(check_products(D, op_cpu, 21)) <= 1e-12
