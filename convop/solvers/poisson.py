"""Richardson–Lucy: maximum-likelihood deconvolution of Poisson data.

Plain, accelerated or with total variation; on one device, a batch at a time, or over MPI
ranks.

The loop (:func:`_iterate`) sees only torch tensors and a :class:`Space`: the products, the
global sums and the shapes. :class:`Batch` is a serial convop operator on a batch of
samples (any device); ``convop.solvers._poisson_mpi.Ranks`` is a ``DistributedConv`` on the
rank's slab, whose sums are allreduced (scalars only: nothing is gathered in the loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .._shared.arrays import TORCH_TO_NUMPY
from .._shared.checks import as_float, as_int
from .._shared.memory import check_memory
from ..operator import ConvOperator
from ._batch import read_batch
from ._common import SolverResult, check_callback, stops

#: Vectors of the input side the loop holds (x, its predecessor, the extrapolation's two
#: steps, Aᵀ1, the update) and of the output side (the data, the background, A x, the ratio).
INPUT_VECTORS, OUTPUT_VECTORS = 6, 4


class Space:
    """What the loop needs of an operator: products, sums per sample, and its tensors.

    Tensors are ``(B, ...)``: ``B`` independent problems (samples), each reduced on its own.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """``A x`` of input-side tensors."""
        raise NotImplementedError

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """``A^T r`` of output-side tensors."""
        raise NotImplementedError

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """``(B,)``: each sample's sum (float64)."""
        return t.reshape(t.shape[0], -1).sum(1, dtype=torch.float64)


class Batch(Space):
    """A serial convop operator on ``(B, *op.input_shape)`` tensors, in no-grad mode."""

    def __init__(self, op: ConvOperator) -> None:
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``op.apply(x)``."""
        return self.op.apply(x)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        """``op.apply_adjoint(r)``."""
        return self.op.apply_adjoint(r)


# ---------------------------------------------------------------------- checks
def check_weight(weight: torch.Tensor, name: str) -> None:
    """A real, finite, non-negative weight: what makes ``A x >= 0`` for ``x >= 0``."""
    if weight.is_complex():
        raise TypeError(
            f"richardson_lucy() needs a real operator, got the {name} of {weight.dtype}"
        )
    if weight.numel() and not bool(torch.isfinite(weight).all()):
        raise ValueError(f"richardson_lucy() needs a finite weight: the {name}'s is not")
    if weight.numel() and float(weight.min()) < 0:
        raise ValueError(
            f"richardson_lucy() needs a non-negative weight (a PSF): the {name}'s smallest "
            f"tap is {float(weight.min()):.3g}"
        )


def check_nonneg(t: torch.Tensor, name: str) -> None:
    """``t`` finite and ``>= 0`` (Poisson counts, a background, a start)."""
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} must be finite, got {bad} non-finite value(s)")
    if t.numel() and float(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got a smallest value of {float(t.min()):.6g}")


def tv_limit(sensitivity: torch.Tensor) -> float:
    """The largest TV weight for which ``s - tv div(s n)`` stays positive for every ``x``.

    ``s = A^T 1`` of shape ``(1, C, *spatial)``; ``n = grad x / |grad x|`` (forward
    differences, zero at the last sample of each axis), any unit vectors. ``div(s n)(p) =
    sum_a s(p) n_a(p) - s(p - e_a) n_a(p - e_a)`` reaches ``s(p) sqrt(k_p) + sum_a s(p -
    e_a)`` at most (``k_p`` the axes along which ``p`` has a next sample; the sum over the
    axes along which it has a previous one), and does: the vectors of different pixels are
    free. The limit is the least ``s(p) / that`` over the pixels some measurement sees.
    """
    s = sensitivity[0]
    reach = torch.zeros_like(s)
    ahead = torch.zeros_like(s)
    for axis in range(1, s.ndim):
        size = s.shape[axis]
        reach.narrow(axis, 1, size - 1).add_(s.narrow(axis, 0, size - 1))
        ahead.narrow(axis, 0, size - 1).add_(1)
    reach = reach + s * ahead.sqrt()
    seen = (s > 0) & (reach > 0)
    return float((s[seen] / reach[seen]).min()) if bool(seen.any()) else math.inf


# ---------------------------------------------------------------------- the loop
@dataclass
class Problem:
    """A checked problem: data, background, start, Aᵀ1, on the loop's tensors."""

    y: torch.Tensor  # (B, *out)
    background: torch.Tensor | None  # broadcasts against y; None for none
    x: torch.Tensor  # (B, *in), the start
    sensitivity: torch.Tensor  # (1 or B, *in), Aᵀ1
    tv: float
    accelerate: bool

    def __post_init__(self) -> None:
        s = self.sensitivity
        self.seen = s > 0
        self.unseen = not bool(self.seen.all())  # pixels no measurement sees keep their value
        self.inverse = torch.where(self.seen, 1 / torch.where(self.seen, s, 1), 0)

    def mean(self, blurred: torch.Tensor) -> torch.Tensor:
        """``A x + b`` (a new tensor)."""
        return blurred.clone() if self.background is None else blurred + self.background


def ratio(problem: Problem, blurred: torch.Tensor) -> torch.Tensor:
    """``y / (A x + b)``, 0 where ``A x + b`` is at round-off level of its largest value."""
    denominator = problem.mean(blurred)
    if not denominator.numel():
        return denominator
    top = denominator.reshape(denominator.shape[0], -1).amax(1).clamp_(min=0)
    floor = (top * torch.finfo(denominator.dtype).eps).reshape(-1, *[1] * (denominator.ndim - 1))
    low = denominator <= floor
    return torch.div(problem.y, denominator, out=denominator).masked_fill_(low, 0)


def log_likelihood(space: Space, problem: Problem, blurred: torch.Tensor) -> torch.Tensor:
    """``(B,)``: ``sum y log(A x + b) - (A x + b)``, the Poisson log-likelihood up to a constant.

    ``0 log 0 = 0``; a measurement ``y > 0`` of a model ``<= 0`` counts ``-inf``.
    """
    mean = problem.mean(blurred).clamp_(min=0)
    logs = torch.where(problem.y > 0, problem.y * torch.log(mean), 0)
    return space.total(logs - mean)


def rl_step(space: Space, problem: Problem, x: torch.Tensor,
            blurred: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """One EM update ``x Aᵀ(y / (A x + b)) / Aᵀ1`` (Dey's with TV), from ``blurred = A x``."""
    update = space.adjoint(ratio(problem, blurred)).clamp_(min=0).mul_(x)
    if problem.tv:
        denominator = problem.sensitivity - problem.tv * _tv_divergence(x, problem.sensitivity)
        update = update.div_(torch.where(problem.seen, denominator, 1))
    else:
        update = update.mul_(problem.inverse)
    return torch.where(problem.seen, update, x) if problem.unseen else update


def _tv_divergence(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``div(s grad x / |grad x|)`` per sample and channel, minus the weighted TV's gradient.

    Forward differences; ``grad x / |grad x| = 0`` where ``grad x = 0``; ``s = A^T 1``.
    """
    spatial = range(2, x.ndim)
    parts = []
    for axis in spatial:
        d = torch.zeros_like(x)
        d.narrow(axis, 0, x.shape[axis] - 1).copy_(torch.diff(x, dim=axis))
        parts.append(d)
    length = torch.sqrt(sum(p * p for p in parts))
    scale = torch.where(length > 0, s / torch.where(length > 0, length, 1), 0)
    div = torch.zeros_like(x)
    for axis, p in zip(spatial, parts):
        n = p * scale
        div = div + n
        div.narrow(axis, 1, x.shape[axis] - 1).sub_(n.narrow(axis, 0, x.shape[axis] - 1))
    return div


def _iterate(
    space: Space, problem: Problem, iterations: int, callback: Callable | None
) -> tuple[torch.Tensor, torch.Tensor, int, str]:
    """Run RL from ``problem.x``: ``(x, A x, iterations run, stop)``.

    Accelerated (Biggs & Andrews 1997): the step from the point ``p_k`` gives ``x_{k+1} =
    RL(p_k)`` and ``g_k = x_{k+1} - p_k``; the next point is ``p_{k+1} = x_{k+1} + alpha
    (x_{k+1} - x_k)``, ``alpha = <g_k, g_{k-1}> / <g_{k-1}, g_{k-1}>`` clipped to ``[0,
    1)``, each value at least a tenth of ``x_{k+1}``'s (no value reaches zero, from where RL
    could never lift it). Where ``p_{k+1}``'s likelihood is below ``p_k``'s, ``p_{k+1} =
    x_{k+1}`` instead (a plain step never lowers it): the points' likelihoods never
    decrease. The result is the last ``x_k``, an RL step's output.
    """
    point = x = problem.x
    blurred = space.forward(point)
    level = log_likelihood(space, problem, blurred) if problem.accelerate else None
    g_old = None
    stop, k = "iterations", 0
    for k in range(1, iterations + 1):
        new = rl_step(space, problem, point, blurred)
        ahead = new
        if problem.accelerate:
            g = new - point
            if g_old is not None:
                alpha = space.total(g * g_old) / space.total(g_old * g_old).clamp(min=1e-300)
                alpha = alpha.clamp(0, 0.999).to(new.dtype).reshape(-1, *[1] * (new.ndim - 1))
                ahead = torch.maximum(new + alpha * (new - x), new / 10)
            g_old = g
        x = new
        blurred = space.forward(ahead)
        if problem.accelerate:
            now = log_likelihood(space, problem, blurred)
            worse = now < level
            if ahead is not new and bool(worse.any()):
                ahead = torch.where(worse.reshape(-1, *[1] * (new.ndim - 1)), new, ahead)
                blurred = space.forward(ahead)
                now = log_likelihood(space, problem, blurred)
            level = now
        point = ahead
        if callback is not None and stops(callback(k, x)):
            stop = "callback"
            break
    if point is not x:
        blurred = space.forward(x)
    return x, blurred, k, stop


# ---------------------------------------------------------------------- the public face
def richardson_lucy(op, y, iterations: int = 50, *, background=0.0, x0=None,
                    accelerate: bool = False, tv: float = 0.0,
                    callback=None) -> SolverResult:  # fmt: skip
    r"""Richardson–Lucy deconvolution: the maximum-likelihood image of Poisson data.

    Iterates the expectation-maximisation update of Poisson data ``y ~ Poisson(A x + b)``,

    .. math:: x \leftarrow \frac{x}{A^T 1}\, A^T\!\left(\frac{y}{A x + b}\right),

    for a convop operator ``A`` with a non-negative weight (a PSF): 1-D to 3-D, any padding
    mode, stride, dilation, several output channels (multi-view: one object seen through
    several PSFs, summed in ``A^T``), a transposed convolution. The normalisation by ``A^T
    1`` makes it exact at the boundaries: with the extended-domain model of
    :func:`convop.extended_domain` the object goes on past the frame and nothing rings from
    the borders inward [2]_. Each iteration raises the likelihood [1]_; the iteration count is
    the regularisation (stop early: noise grows with it).

    Parameters
    ----------
    op : ConvOperator or convop.distributed.DistributedConv
        ``A``, real with a non-negative weight (checked at the call, for the weight ``op``
        holds now). A ``DistributedConv`` (``op.to_pylops_mpi()``) runs over MPI ranks.
    y : numpy.ndarray, torch.Tensor or pylops_mpi.DistributedArray
        The counts, finite and ``>= 0``: one sample (``op.output_shape``, or without its
        channel axis where the operator has one channel on both sides, as
        :func:`extended_domain`'s: the image itself), flat (``op.shape[0]``) or a batch
        ``(B, *op.output_shape)`` of independent problems;
        with a ``DistributedConv``, a ``DistributedArray`` in its layout. Never written to.
    iterations : int, default 50
        RL iterations (``>= 1``), each one product and one adjoint product (accelerated:
        sometimes one more product).
    background : float or array_like, default 0.0
        ``b``, the mean counts that do not come from the object (dark current, stray
        light): a scalar, or an array like ``y`` (one sample's shape broadcasts over a
        batch); finite and ``>= 0``.
    x0 : numpy.ndarray or torch.Tensor, optional
        The start, ``>= 0``, shaped like the solution (or one sample's, for a batch).
        Default: the constant ``(sum(y) - sum(b)) / sum(A^T 1)`` per sample (0 where that
        is negative): the flat object whose blur carries the data's counts.
    accelerate : bool, default False
        Biggs–Andrews vector extrapolation [3]_: about half the iterations for the same
        likelihood. Each extrapolated point is kept at least a tenth of the last RL output
        (positive values stay positive) and is dropped for the plain step where it would
        lower the likelihood: the likelihood never decreases.
    tv : float, default 0.0
        The weight ``lambda`` of a total-variation penalty ``lambda sum_p s(p) |grad
        x(p)|``, weighted by the sensitivity ``s = A^T 1``: Dey et al.'s RL-TV [4]_ (the
        same where ``s = 1``: circular boundaries, and away from the frame), whose update's
        denominator becomes ``s - lambda div(s grad x / |grad x|)``. The weighting keeps the
        denominator positive where the data see the object only in part (the rim of
        :func:`extended_domain`'s object, where ``s`` is small); a ``tv`` that could make it
        zero or negative for some ``x`` is refused with the limit (``1 / (2 + sqrt 2)``
        inside a 2-D image with ``s = 1``). Typical values: 1e-3 to 1e-2.
    callback : callable, optional
        ``callback(iteration, x)`` after each iteration with the current estimate in the
        form of the solution (numpy: a read-only view; a tensor or ``DistributedArray``:
        do not write to it; copy to keep). Returning True stops.

    Returns
    -------
    SolverResult
        ``x`` in ``y``'s form (numpy or a tensor on ``y``'s device; flat, one sample or a
        batch), ``iterations``, ``stop`` (``'iterations'`` or ``'callback'``),
        ``converged`` (True when the iterations asked for ran), ``residual`` (``||y - (A
        x + b)||``) and ``method`` (``'richardson-lucy'``, ``'richardson-lucy-accelerated'``).

    Raises
    ------
    TypeError
        For an operator that is no convop operator, a complex operator or data, or
        parameters of the wrong type.
    ValueError
        For negative or non-finite ``y``, ``background`` or ``x0``, a negative tap in the
        weight, wrong shapes, ``iterations < 1``, ``tv < 0`` or ``tv`` too large.
    MemoryError
        When the loop's vectors and products would not fit (checked before the first).

    See Also
    --------
    extended_domain : The boundary-exact model of a measured image.
    tikhonov, total_variation : Gaussian noise instead of Poisson counts.

    Notes
    -----
    All the arithmetic runs in torch on the weight's device (a CUDA weight runs on the
    GPU), in the promotion of the weight's and the data's dtypes (float32 data and weight:
    float32). Division by zero: where ``A x + b`` is at most ``eps`` times its largest value
    (``A`` is zero on ``x``'s support there, up to round-off), the ratio is 0; pixels that no
    measurement sees (``A^T 1 = 0``) keep their start. Round-off of FFT products below zero
    is clipped, so ``x`` stays ``>= 0``.

    References
    ----------
    .. [1] L. B. Lucy, "An iterative technique for the rectification of observed
       distributions," Astronomical Journal 79 (1974), 745-754; W. H. Richardson,
       "Bayesian-based iterative method of image restoration," J. Opt. Soc. Am. 62 (1972).
    .. [2] M. Bertero and P. Boccacci, "A simple method for the reduction of boundary
       effects in the Richardson-Lucy approach to image deconvolution," Astronomy &
       Astrophysics 437 (2005), 369-374.
    .. [3] D. S. C. Biggs and M. Andrews, "Acceleration of iterative image restoration
       algorithms," Applied Optics 36 (1997), 1766-1775.
    .. [4] N. Dey et al., "Richardson-Lucy algorithm with total variation regularization
       for 3D confocal microscope deconvolution," Microscopy Research and Technique 69
       (2006), 260-266.

    Examples
    --------
    A blurred point source, restored:

    >>> import numpy as np, convop
    >>> psf = np.array([0.25, 0.5, 0.25])
    >>> op = convop.conv1d(psf[None, None], (1, 32), padding="same", padding_mode="reflect")
    >>> truth = np.zeros(32)
    >>> truth[16] = 100.0
    >>> res = convop.richardson_lucy(op, op @ truth, 200)
    >>> int(res.x.argmax()), bool(res.x[16] > 50), res.stop
    (16, True, 'iterations')
    """
    iterations = as_int(iterations, "iterations", minimum=1)
    tv = as_float(tv, "tv", minimum=0.0)
    if not isinstance(accelerate, bool):
        raise TypeError(f"accelerate must be a bool, got {type(accelerate).__name__}")
    callback = check_callback(callback)
    if not isinstance(op, ConvOperator):
        from ._poisson_mpi import distributed

        found = distributed(op, y, iterations, background=background, x0=x0,
                            accelerate=accelerate, tv=tv, callback=callback)  # fmt: skip
        if found is not None:
            return found
        raise TypeError(
            f"op must be a convop.ConvOperator or a convop.distributed.DistributedConv, got "
            f"{type(op).__name__}"
        )
    weight = op._weight_now().detach()
    check_weight(weight, op.name)
    batch, form = read_batch(op, y, weight, real="richardson_lucy()")
    check_nonneg(batch, "y")
    dtype, device = batch.dtype, weight.device
    b = _side_tensor(background, "background", tuple(op.output_shape), batch)
    check_memory(
        batch.element_size() * batch.shape[0] * (INPUT_VECTORS * math.prod(op.input_shape)
                                                 + OUTPUT_VECTORS * math.prod(op.output_shape))
        + getattr(op.estimate(batch.shape[0]), f"{op.method}_bytes"),
        None, f"Richardson-Lucy on {batch.shape[0]} sample(s) of {tuple(op.input_shape)}",
        device, hint="deconvolve fewer samples at a time",
    )  # fmt: skip
    space = Batch(op)
    with torch.no_grad():
        ones = torch.ones((1, *op.output_shape), dtype=dtype, device=device)
        sensitivity = space.adjoint(ones).clamp(min=0)
        check_tv(tv, sensitivity)
        start = _side_tensor(x0, "x0", tuple(op.input_shape), batch, like=sensitivity)
        if start is None:
            start = flat_start(space, batch, b, sensitivity)
        else:
            start = start.expand(batch.shape[0], *op.input_shape).clone()
        problem = Problem(batch, b, start, sensitivity, tv, accelerate)
        seen = (
            None if callback is None else (lambda k, x: callback(k, form.back(x, read_only=True)))
        )
        x, blurred, k, stop = _iterate(space, problem, iterations, seen)
        residual = float(torch.linalg.vector_norm(batch - problem.mean(blurred)))
    method = "richardson-lucy-accelerated" if accelerate else "richardson-lucy"
    return SolverResult(form.back(x), k, stop == "iterations", stop, residual, method)


def check_tv(tv: float, sensitivity: torch.Tensor) -> None:
    """Refuse a TV weight that could make the denominator ``s - tv div(s n)`` non-positive."""
    limit = tv_limit(sensitivity) if tv else math.inf
    if tv >= limit:
        raise ValueError(
            f"tv={tv:g} could make the denominator A^T 1 - tv div(A^T 1 grad x / |grad x|) "
            f"zero or negative for some x: tv must be below {limit:.3g} for this operator"
        )


def flat_start(space: Space, y: torch.Tensor, b: torch.Tensor | None,
               sensitivity: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``(sum(y) - sum(b)) / sum(A^T 1)`` per sample, ``>= 0``, as a constant image."""
    counts = space.total(y)
    if b is not None:
        counts = counts - space.total(b.expand_as(y))
    level = (counts.clamp(min=0) / space.total(sensitivity).clamp(min=1e-300)).to(y.dtype)
    shape = (y.shape[0], *sensitivity.shape[1:])
    return level.reshape(-1, *[1] * (len(shape) - 1)).expand(shape).clone()


def _side_tensor(value: object, name: str, shape: tuple[int, ...], batch: torch.Tensor,
                 like: torch.Tensor | None = None) -> torch.Tensor | None:  # fmt: skip
    """A background (output side) or a start (input side), checked, in the solve's dtype.

    None, a scalar, or an array of one sample's shape, flat, or the batch's; finite and
    ``>= 0``.
    """
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        scalar = as_float(value, name, minimum=0.0)
        if like is not None:  # a start: a constant image
            return torch.full((1, *shape), scalar, dtype=batch.dtype, device=batch.device)
        return None if scalar == 0 else torch.tensor(scalar, dtype=batch.dtype,
                                                     device=batch.device)  # fmt: skip
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        t = torch.from_numpy(np.array(value, dtype=TORCH_TO_NUMPY[batch.dtype], copy=True))
        t = t.to(batch.device)
    elif isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real, got {value.dtype}")
        t = value.detach().to(device=batch.device, dtype=batch.dtype)
    else:
        raise TypeError(
            f"{name} must be a float, numpy.ndarray or torch.Tensor, got {type(value).__name__}"
        )
    n = math.prod(shape)
    if t.shape == (n,) or tuple(t.shape) == shape:
        t = t.reshape(1, *shape)
    elif not (t.ndim == len(shape) + 1 and tuple(t.shape[1:]) == shape
              and t.shape[0] == batch.shape[0]):  # fmt: skip
        raise ValueError(
            f"{name} must be a scalar or have shape {shape}, ({n},) or "
            f"({batch.shape[0]}, *{shape}), got {tuple(t.shape)}"
        )
    check_nonneg(t, name)
    return t
