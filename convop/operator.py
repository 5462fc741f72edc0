"""The convolution as a scipy ``LinearOperator``, with a torch-native face.

One class, :class:`ConvOperator`, describes a convolution (or transposed convolution) *or*
its adjoint: ``op.H`` flips between the two and shares the weight, so ``op.H.H`` is the
convolution again. The operator holds the weight tensor itself and reads it at every use;
the one thing it keeps, the FFT spectrum, is keyed on the weight's current values
(:class:`convop._fft.SpectrumCache`).

It implements the operator contract of ``convop._base`` (``_product`` and what describes it),
which gives it the numpy, torch and PyLops faces; its explicit matrices come from
``convop._explicit`` and ``method="auto"`` (``op.method``, ``op.estimate()``, the choice
per product) from ``convop._auto.choice``. What is left here is the weight and the
evaluation by a given method, done by :mod:`convop.functional` and ``convop._fft``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import _fft, _materialize, functional
from ._auto import trial as _trial
from ._auto.choice import AutoMethod
from ._auto.cost import Estimate
from ._auto.cost import check as check_method
from ._base import Operator
from ._explicit import ExplicitMatrices
from ._shared.arrays import TORCH_TO_NUMPY, check_weight_tensor, to_numpy
from ._shared.memory import check_memory
from .geometry import ConvGeometry

if TYPE_CHECKING:
    from .weight_operator import WeightOperator

__all__ = ["PRODUCT_GUARD_BYTES", "ConvOperator", "Estimate"]

#: Products whose estimated memory exceeds this check the memory available first.
PRODUCT_GUARD_BYTES = 256 * 1024**2


class ConvOperator(AutoMethod, ExplicitMatrices, Operator):
    r"""A convolution as an exact, lazy linear operator.

    Usually made by :func:`convop.conv2d` and friends or :func:`convop.from_module`.
    Vectors are flattened in C order of ``(C, *spatial)``, i.e. ``tensor.reshape(-1)`` of
    one sample, so ``op.shape == (prod(output_shape), prod(input_shape))``. Its faces
    (numpy and scipy, torch, PyLops) are those every convop operator has
    (:class:`convop._base.Operator`).

    Parameters
    ----------
    weight : torch.Tensor
        In PyTorch's layout for ``geometry`` (``geometry.weight_shape``), dense, with data
        (not on the meta device). Held as given, not copied: the operator runs on its
        device and :meth:`apply` is differentiable with respect to it.
    geometry : ConvGeometry
        The convolution.
    bias : torch.Tensor, optional
        Per-output-channel bias of the layer the operator came from. It is *not* part of the
        (linear) operator; :attr:`bias` exposes it as a flat vector.
    method : {'auto', 'direct', 'fft'}, default 'auto'
        How products are evaluated: torch's direct convolutions, or FFTs (``convop._fft``);
        ``'auto'`` picks the faster by a cost model of the geometry and the weight's dtype
        and device at the time of use (:meth:`estimate`). FFT round-off is relative to
        ``||w||_1 * max|x|`` (the bound on any output sample), not to each output sample;
        data or weights holding NaN or Inf (or large enough to overflow in a transform) are
        evaluated directly, so results always have the direct convolution's non-finite
        pattern.

    Attributes
    ----------
    geometry : ConvGeometry
    weight : torch.Tensor
        The tensor given, read at every use.
    is_adjoint : bool
    method : str
        ``'direct'`` or ``'fft'``, the evaluation products use now.
    input_shape, output_shape : tuple of int
        Shapes of one sample in and out (swapped for an adjoint).
    shape : (int, int)
    dtype : numpy.dtype
        The weight's dtype, now.

    See Also
    --------
    convop.conv2d : Builds one from PyTorch's arguments (and ``conv1d`` ... ``conv3d``).
    convop.from_module : Builds one from a ``torch.nn`` conv layer.
    convop.WeightOperator : The same convolution as a linear map of its weight.
    convop.opnorm : Certified bounds on its norm.

    Notes
    -----
    Forward, per output channel :math:`o` and position :math:`p` (:math:`s` stride,
    :math:`d` dilation, :math:`G` groups, :math:`\tilde x` the padded input), PyTorch's
    cross-correlation:

    .. math::

        y[o, p] = \sum_{c'=0}^{C_{in}/G - 1} \sum_{\kappa} w[o, c', \kappa]\,
        \tilde x\big[g\, C_{in}/G + c',\; p s + \kappa d\big],
        \qquad g = \lfloor o / (C_{out}/G) \rfloor .

    With the convolution written as :math:`A = C P`, :math:`P` the padding and :math:`C`
    the convolution without padding, the adjoint is :math:`A^H = P^H C^H`: ``x =
    pad_adjoint(conv_transpose(y, conj(w), output_padding=r))``, where :math:`P^H` adds
    each halo sample back onto the input sample it was copied from; see
    :func:`convop.functional.adjoint` and ``docs/conventions.md``, sections 2-6 (which give
    the transposed convolutions' maps too). ``matvec`` is the forward map, ``rmatvec`` the
    adjoint, ``matmat``/``rmatmat`` run one batched convolution for all columns.

    State: the operator reads the weight tensor it holds at every use, so changes made to
    it in place (an optimizer step, ``load_state_dict``, ``module.to(dtype)``, writes through
    ``.data``) show in every face: products, ``dtype``, ``method``, explicit matrices, the
    PyLops operator. Replacing a module's parameter by a *new* tensor
    (``layer.weight = nn.Parameter(...)``) does not reach an operator built before. A weight
    changed to an unsupported dtype or another shape is refused at the next use. Building an
    operator does O(ndim) work and allocates nothing; the FFT spectrum is computed on first
    use, under the memory guard, and recomputed whenever the weight's values change.
    Building it, ``repr(op)``, ``op.method`` and :meth:`estimate` never time, probe or write
    anything.

    Dtypes: the numpy face computes in ``np.result_type(op.dtype, x.dtype)`` (a float32
    operator given float32 data returns float32; given float64 data, float64; a real operator
    given complex data, complex), like a dense matrix would. The torch face uses torch's
    promotion, ``torch.promote_types(weight.dtype, x.dtype)``, and rejects integer tensors
    as torch's convolutions do.

    Examples
    --------
    >>> import numpy as np, torch, convop
    >>> op = convop.conv2d(torch.ones(1, 1, 2, 2), (1, 3, 3))
    >>> op
    ConvOperator(conv2d, input_shape=(1, 3, 3), output_shape=(1, 2, 2), kernel_size=(2, 2),
                 method='direct' (auto: est. direct ..., fft ...), dtype=float32, device=cpu)
    >>> op @ np.arange(9.0, dtype=np.float32)
    array([ 8., 12., 20., 24.], dtype=float32)
    >>> op.H
    ConvOperator(adjoint of conv2d, input_shape=(1, 2, 2), output_shape=(1, 3, 3), ...)
    >>> with torch.no_grad():
    ...     _ = op.weight.mul_(2)  # the operator follows its weight
    >>> op @ np.arange(9.0, dtype=np.float32)
    array([16., 24., 40., 48.], dtype=float32)
    """

    def __init__(
        self,
        weight: torch.Tensor,
        geometry: ConvGeometry,
        *,
        bias: torch.Tensor | None = None,
        method: str = "auto",
    ) -> None:
        check_method(method)
        if not isinstance(geometry, ConvGeometry):
            raise TypeError(f"geometry must be a ConvGeometry, got {type(geometry).__name__}")
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
        _check_weight(weight, geometry)
        self._setup(weight, geometry, bias, method, adjoint=False, conj=False,
                    spectra=_fft.SpectrumCache(geometry))  # fmt: skip

    def _setup(self, weight, geometry, bias, method, *, adjoint, conj, spectra,
               raced=None) -> None:  # fmt: skip
        self.geometry = geometry
        self._weight = weight
        self._bias = bias
        self._method = method
        # (dtype, device, generation of the constants, Estimate): 'auto' as last resolved
        self._choice: tuple | None = None
        self.is_adjoint = adjoint
        self._conj = conj  # use conj(weight): op.T
        self._spectra = spectra
        self._grids = _fft.Grids()  # FFT products' zero grids, kept per thread
        # what 'auto' measured where the model cannot tell (convop._auto.trial), shared with the
        # adjoint and transposes: (dtype, device, size class, geometry's adjoint) -> method
        self._raced: dict[tuple, str] = {} if raced is None else raced
        shapes = (geometry.input_shape, geometry.output_shape)
        self._weight_shape = torch.Size(geometry.weight_shape)
        self._sample_numel = sum(map(math.prod, shapes))  # one sample in and out: the guard
        # the direct evaluation of the geometry's forward map and adjoint, arguments worked out
        self._direct = _direct_products(geometry)
        super().__init__(*(shapes[::-1] if adjoint else shapes))

    def __getstate__(self) -> dict:
        """Everything but the direct products, which are rebuilt from the geometry.

        They are functions made by :func:`convop.functional.direct`: pickles and copies of
        an operator hold its weight, geometry and caches, not them.
        """
        state = self.__dict__.copy()
        del state["_direct"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._direct = _direct_products(self.geometry)

    @classmethod
    def _derived(cls, op: ConvOperator, *, adjoint: bool, conj: bool) -> ConvOperator:
        """``op``'s weight and geometry as its adjoint (``adjoint``) and/or conjugate."""
        new = cls.__new__(cls)
        spectra = op._spectra if conj == op._conj else _fft.SpectrumCache(op.geometry, conj=conj)
        new._setup(op._weight, op.geometry, op._bias, op._method, adjoint=adjoint, conj=conj,
                   spectra=spectra, raced=op._raced)  # fmt: skip
        return new

    # ------------------------------------------------------------------ the weight, now
    @property
    def weight(self) -> torch.Tensor:
        """The weight tensor the operator holds (not a copy) and reads at every use."""
        return self._weight

    def _current_weight(self) -> torch.Tensor:
        """The weight as it is now, checked to be usable; what every use reads."""
        w = self._weight
        if w.dtype not in TORCH_TO_NUMPY:
            raise TypeError(
                f"the operator's weight now has dtype {w.dtype} (changed in place after the "
                f"operator was built, e.g. by module.half()); expected float32, float64, "
                f"complex64 or complex128: convert it back or build a new operator"
            )
        if w.shape != self._weight_shape:
            raise ValueError(
                f"the operator's weight now has shape {tuple(w.shape)}, not the "
                f"{self.geometry.weight_shape} it was built for; build a new operator"
            )
        if w.is_meta or w.layout != torch.strided:
            where = "on the meta device" if w.is_meta else f"of layout {w.layout}"
            raise ValueError(
                f"the operator's weight is now {where} (changed after the operator was "
                f"built); expected a dense tensor with data"
            )
        return w

    def _weight_now(self) -> torch.Tensor:
        """The current weight, conjugated (lazily) for a transpose."""
        w = self._current_weight()
        return w.conj() if self._conj else w

    @property
    def torch_dtype(self) -> torch.dtype:
        """The weight's dtype now."""
        return self._current_weight().dtype

    def _zero_copy_dtype(self) -> np.dtype | None:
        w = self._weight  # validated by _product: the solvers' path counts microseconds
        return TORCH_TO_NUMPY.get(w.dtype) if w.is_cpu else None

    # ------------------------------------------------------------------ descriptive
    @property
    def device(self) -> torch.device:
        """Device of the weight, now; every product runs there."""
        return self._weight.device

    @property
    def bias(self) -> np.ndarray | None:
        """The layer's bias as a flat vector of length ``shape[0]``, or ``None``.

        ``op @ x + op.bias`` equals the layer's output. ``None`` for adjoints.
        """
        if self._bias is None or self.is_adjoint:
            return None
        per_channel = self._bias.detach().reshape(-1)
        return to_numpy(per_channel.repeat_interleave(math.prod(self.output_shape[1:])))

    @property
    def name(self) -> str:
        """``'conv2d'``, ``'conv_transpose1d'``, ``'adjoint of conv3d'``, ..."""
        return f"adjoint of {self.geometry.name}" if self.is_adjoint else self.geometry.name

    def __repr__(self) -> str:
        try:
            method, dtype = repr(self.method), self.dtype
            if self._method == "auto":  # say why: method='fft' (auto: est. fft 2.1 ms, ...)
                timed = _trial.describe(self._raced)
                method += f" (auto: {self._auto(self._current_weight())}"
                method += f"; {timed})" if timed else ")"
        except (TypeError, ValueError):  # a weight changed into one no product can use
            method, dtype = "unusable", self._weight.dtype
        return (
            f"{type(self).__name__}({self.name}, input_shape={self.input_shape}, "
            f"output_shape={self.output_shape}, {self.geometry.describe()}, "
            f"method={method}, dtype={dtype}, device={self.device})"
        )

    # ------------------------------------------------------------------ products
    def _product(self, batch: torch.Tensor, *, adjoint: bool, grad: bool = False) -> torch.Tensor:
        """The operator (its adjoint if ``adjoint``) of ``batch`` (the ``convop._base`` contract).

        ``batch`` is ``(B, *shape_in)`` on the operator's device; the result ``(B,
        *shape_out)`` in ``torch.promote_types(weight.dtype, batch.dtype)``, differentiable
        with respect to ``batch`` and the weight only with ``grad``.
        """
        weight = self._current_weight()
        if self._conj:
            weight = weight.conj()
        if weight.dtype != batch.dtype:
            dtype = torch.promote_types(weight.dtype, batch.dtype)
            batch, weight = batch.to(dtype), weight.to(dtype)
        adjoint = adjoint != self.is_adjoint
        if grad or not (weight.requires_grad or batch.requires_grad):
            return self._run(batch, weight, adjoint=adjoint)
        with torch.no_grad():  # something requires grad, but no graph was asked for
            return self._run(batch, weight.detach(), adjoint=adjoint)

    def _evaluate(self, batch: torch.Tensor, weight: torch.Tensor, *, adjoint: bool,
                  method: str) -> torch.Tensor:  # fmt: skip
        """:meth:`_run` by ``method``: ``'fft'`` where exact, else the direct sum."""
        size = batch.shape[0]
        if size and method == "fft":
            found = self._spectrum(weight)
            if found is not None and _fft.representable(batch, found[1], found[0]):
                geom, spectrum = self.geometry, found[0]
                channels = geom.in_channels + geom.out_channels
                need = _fft.workspace_bytes(spectrum, channels, size, batch.dtype)
                self._guard_product(batch, need)
                product = _fft.adjoint if adjoint else _fft.forward
                return product(batch, spectrum, geom, grids=self._grids)
        need = size * self._sample_numel * batch.element_size()
        if need > PRODUCT_GUARD_BYTES:  # checked here: a small layer's product counts microseconds
            self._guard_product(batch, need)
        return self._direct[adjoint](batch, weight)

    def _spectrum(self, weight: torch.Tensor) -> tuple[_fft.Spectrum, float] | None:
        """The FFT spectrum for ``weight``.

        The cached one for the weight's own precision; a fresh, differentiable one when
        autograd needs it or for a promoted precision.
        """
        raw = self._weight
        if (torch.is_grad_enabled() and weight.requires_grad) or (
            weight.real.dtype != raw.real.dtype
        ):
            return _fft.spectrum_of(weight, self.geometry)
        return self._spectra.lookup(raw)

    def _guard_product(self, batch: torch.Tensor, needed: int) -> None:
        """``MemoryError`` before a product whose memory cannot fit (checked when large)."""
        if needed > PRODUCT_GUARD_BYTES:
            check_memory(
                needed,
                None,
                f"a product of the {self.name} on a batch of {batch.shape[0]} samples",
                batch.device,
                fraction=1.0,
                hint="apply it to smaller batches",
            )

    def _plan(self) -> _materialize.Plan:
        """The plan of the explicit matrices (``convop._explicit``), for the weight now."""
        return _materialize.plan(self._current_weight(), self.geometry, adjoint=self.is_adjoint,
                                conj=self._conj)  # fmt: skip

    # ------------------------------------------------------------------ the weight as unknown
    def weight_operator(self, x: torch.Tensor | np.ndarray) -> WeightOperator:
        """The operator's output for a fixed input ``x``, as a linear operator of the weight.

        For blind deconvolution: ``A @ w`` is the operator's output for ``x`` had it the
        weight ``w`` (flattened, ``op.geometry.weight_shape``), and ``A.H`` gives the
        weight gradient.

        Parameters
        ----------
        x : torch.Tensor or numpy.ndarray
            One sample of ``input_shape``, or flattened. A tensor is held as given, an array
            copied.

        Returns
        -------
        convop.weight_operator.WeightOperator
            Shape ``(shape[0], weight.numel())``.

        See Also
        --------
        convop.WeightOperator : The operator returned, its formulas and faces.

        Examples
        --------
        >>> import numpy as np, torch, convop
        >>> op = convop.conv1d(torch.zeros(1, 1, 2), (1, 4))
        >>> A = op.weight_operator(np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32))
        >>> A @ np.array([1.0, -1.0], dtype=np.float32)
        array([-1., -2., -4.], dtype=float32)
        """
        from .weight_operator import WeightOperator

        return WeightOperator(self, x)

    # ------------------------------------------------------------------ MPI face
    def to_pylops_mpi(self, comm=None, axis: int | None = None):
        """The operator spread over MPI ranks, as a ``pylops_mpi.MPILinearOperator``.

        One contiguous slab of the spatial axis ``axis`` per rank, with exact halo
        exchange for every geometry (see :class:`convop.distributed.DistributedConv`).
        Needs mpi4py and pylops-mpi (convop's ``mpi`` extra). Every rank calls it, with the same
        geometry and weight values.

        Parameters
        ----------
        comm : mpi4py.MPI.Comm, optional
            Default ``MPI.COMM_WORLD``.
        axis : int, optional
            Spatial axis to split (0 is the first spatial axis). Default: the axis with
            the most samples on both sides.

        Returns
        -------
        convop.distributed.DistributedConv

        Examples
        --------
        >>> import numpy as np, torch, convop
        >>> op = convop.conv3d(torch.ones(1, 1, 3, 3, 3, dtype=torch.float64), (1, 16, 8, 8),
        ...                    padding=1, padding_mode="circular")
        >>> D = op.to_pylops_mpi()
        >>> D.axis, D.shape == op.shape
        (0, True)
        >>> x = np.ones(op.input_shape)
        >>> float(D.gather(D.H @ (D @ D.scatter(x))).max())
        729.0
        """
        from .distributed import DistributedConv

        return DistributedConv(self, comm=comm, axis=axis)

    def _adjoint(self) -> ConvOperator:
        return ConvOperator._derived(self, adjoint=not self.is_adjoint, conj=self._conj)

    def _transpose(self) -> ConvOperator:
        # A^T = conj(A^H): the adjoint structure with the weight conjugated once more, at use.
        return ConvOperator._derived(self, adjoint=not self.is_adjoint, conj=not self._conj)


def _direct_products(geometry: ConvGeometry) -> tuple:
    """The direct forward map and adjoint of ``geometry``, torch's arguments worked out."""
    return functional.direct(geometry, adjoint=False), functional.direct(geometry, adjoint=True)


def _check_weight(weight: torch.Tensor, geometry: ConvGeometry) -> None:
    """Refuse at construction a weight no product could use."""
    check_weight_tensor(weight)
    if tuple(weight.shape) != geometry.weight_shape:
        raise ValueError(
            f"weight must have shape {geometry.weight_shape} for this geometry, "
            f"got {tuple(weight.shape)}"
        )
