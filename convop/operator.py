"""The convolution as a scipy ``LinearOperator``, with a torch-native face.

One class, :class:`ConvOperator`, describes a convolution (or transposed convolution) *or*
its adjoint: ``op.H`` flips between the two and shares the weight, so ``op.H.H`` is the
convolution again. The operator holds the weight tensor itself and reads it at every use;
the one thing it keeps, the FFT spectrum, is keyed on the weight's current values
(:class:`convop._fft.SpectrumCache`).

This module is longer than most (about 800 lines) because it is one class with many faces
(scipy, torch, PyLops, MPI, explicit matrices), each a public method with a numpydoc
docstring and a runnable example; the work itself is done in :mod:`convop.functional`,
``convop._fft`` and ``convop._materialize``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import LinearOperator

from . import _fft, _materialize, functional
from ._auto import trial as _trial
from ._auto.calibrate import estimate as estimate_auto
from ._auto.cost import Estimate
from ._auto.cost import check as check_method
from ._shared.arrays import (
    TORCH_TO_NUMPY,
    check_weight_tensor,
    numpy_dtype,
    result_dtype,
    to_numpy,
    to_tensor,
)
from ._shared.checks import check_choice
from ._shared.memory import check_memory
from .geometry import ConvGeometry

if TYPE_CHECKING:
    from .weight_operator import WeightOperator

SPARSE_FORMATS = ("csr", "csc", "coo")
#: Products whose estimated memory exceeds this check the memory available first.
PRODUCT_GUARD_BYTES = 256 * 1024**2


class ConvOperator(LinearOperator):
    """A convolution as an exact, lazy linear operator.

    Usually made by :func:`convop.conv2d` and friends or :func:`convop.from_module`.
    Vectors are flattened in C order of ``(C, *spatial)``, i.e. ``tensor.reshape(-1)`` of
    one sample, so ``op.shape == (prod(output_shape), prod(input_shape))``.

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
        How products are evaluated: torch's direct convolutions, or FFTs (:mod:`convop._fft`);
        ``'auto'`` picks the faster by a cost model of the geometry and the weight's dtype
        and device at the time of use. FFT round-off is relative to ``||w||_1 * max|x|``
        (the bound on any output sample), not to each output sample; data or weights
        holding NaN or Inf (or large enough to overflow in a transform) are evaluated
        directly, so results always have the direct convolution's non-finite pattern.

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

    Notes
    -----
    Forward, per output channel ``o`` and position ``p`` (``s`` stride, ``d`` dilation)::

        y[o, p] = sum_{c, k} w[o, c, k] * pad(x)[c, p*s + k*d]

    The adjoint is ``x = pad_adjoint(conv_transpose(y, conj(w), output_padding=r))``; see
    :func:`convop.functional.adjoint`. ``matvec`` is the forward map, ``rmatvec`` the adjoint,
    ``matmat``/``rmatmat`` run one batched convolution for all columns.

    State: the operator reads the weight tensor it holds at every use, so changes made to
    it in place (an optimizer step, ``load_state_dict``, ``module.to(dtype)``, writes through
    ``.data``) show in every face: products, ``dtype``, ``method``, explicit matrices, the
    PyLops operator. Replacing a module's parameter by a *new* tensor
    (``layer.weight = nn.Parameter(...)``) does not reach an operator built before. A weight
    changed to an unsupported dtype or another shape is refused at the next use. Building an
    operator does O(ndim) work and allocates nothing; the FFT spectrum is computed on first
    use, under the memory guard, and recomputed whenever the weight's values change.

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
        self._choice: tuple | None = None  # (dtype, device, Estimate) 'auto' last resolved by
        self.is_adjoint = adjoint
        self._conj = conj  # use conj(weight): op.T
        self._spectra = spectra
        self._grids = _fft.Grids()  # FFT products' zero grids, kept per thread
        # what 'auto' measured where the model cannot tell (convop._auto.trial), shared with the
        # adjoint and transposes: (dtype, device, size class, geometry's adjoint) -> method
        self._raced: dict[tuple, str] = {} if raced is None else raced
        if adjoint:
            self.input_shape, self.output_shape = geometry.output_shape, geometry.input_shape
        else:
            self.input_shape, self.output_shape = geometry.input_shape, geometry.output_shape
        shape = (math.prod(self.output_shape), math.prod(self.input_shape))
        self._weight_shape = torch.Size(geometry.weight_shape)
        self._sample_numel = sum(shape)  # one sample in and out, for the product guard
        # (1, *sample) of a flattened vector in (matvec, rmatvec), for the solvers' fast path
        self._vector_shapes = ((1, *self.input_shape), (1, *self.output_shape))
        # the direct evaluation of the geometry's forward map and adjoint, arguments worked out
        self._direct = _direct_products(geometry)
        super().__init__(dtype=None, shape=shape)  # dtype is a property: it follows the weight

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
    def dtype(self) -> np.dtype:
        """The weight's dtype now, as a numpy dtype."""
        return numpy_dtype(self._current_weight().dtype)

    @dtype.setter
    def dtype(self, value) -> None:
        if value is not None:  # scipy's __init__ assigns None
            raise AttributeError(
                "ConvOperator.dtype follows the weight and cannot be set; cast the weight"
            )

    @property
    def method(self) -> str:
        """How products are evaluated now: ``'direct'`` or ``'fft'``.

        ``'auto'`` is resolved for the weight's current dtype and device by the cost model,
        for one sample. Where the model's two estimates are too close to call (within 4x,
        with calibrated constants), the first product of each batch size times both methods
        and keeps the faster for that size; ``repr(op)`` lists what was timed.
        """
        return self._method_for(self._current_weight())

    def _method_for(self, weight: torch.Tensor) -> str:
        if self._method != "auto":
            return self._method
        return self._auto(weight).method

    def _auto(self, weight: torch.Tensor) -> Estimate:
        """Why 'auto' picks what it picks for ``weight``'s dtype and device.

        Estimated once per dtype and device (the first time calibrates, see
        ``convop._auto.calibrate``) and kept while they stay the same.
        """
        choice = self._choice
        if choice is None or choice[0] is not weight.dtype or choice[1] != weight.device:
            found = estimate_auto(self.geometry, weight.dtype, weight.device)
            choice = self._choice = (weight.dtype, weight.device, found)
        return choice[2]

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

    # ------------------------------------------------------------------ torch face
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the operator to a batch of tensors.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(..., *input_shape)`` on the operator's device; any leading dimensions.

        Returns
        -------
        torch.Tensor
            Shape ``(..., *output_shape)``, differentiable with respect to ``x`` and the weight.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.tensor([[[1.0, -1.0]]]), (1, 4))
        >>> op.apply(torch.tensor([[1.0, 2.0, 4.0, 8.0]]))
        tensor([[-1., -2., -4.]])
        """
        return self._apply(x, adjoint=self.is_adjoint, shape_in=self.input_shape)

    def apply_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Apply the adjoint to a batch of tensors.

        Parameters
        ----------
        y : torch.Tensor
            Shape ``(..., *output_shape)`` on the operator's device; any leading dimensions.

        Returns
        -------
        torch.Tensor
            Shape ``(..., *input_shape)``, differentiable like :meth:`apply`.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.tensor([[[1.0, -1.0]]]), (1, 4))
        >>> op.apply_adjoint(torch.tensor([[1.0, 0.0, 0.0]]))
        tensor([[ 1., -1.,  0.,  0.]])
        """
        return self._apply(y, adjoint=not self.is_adjoint, shape_in=self.output_shape)

    def _apply(self, x: torch.Tensor, *, adjoint: bool, shape_in: tuple) -> torch.Tensor:
        name = "y" if adjoint != self.is_adjoint else "x"
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        k = len(shape_in)
        if x.ndim < k or x.shape[x.ndim - k :] != shape_in:
            raise ValueError(
                f"{name} must have shape (..., {', '.join(map(str, shape_in))}), "
                f"got {tuple(x.shape)}"
            )
        weight = self._weight_now()
        if x.device != weight.device:
            raise ValueError(
                f"{name} is on {x.device} but the operator's weight is on {weight.device}; "
                f"move it with .to({str(weight.device)!r})"
            )
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(f"{name} must be a floating-point or complex tensor, got {x.dtype}")
        dtype = torch.promote_types(weight.dtype, x.dtype)
        if x.dtype != dtype:
            x = x.to(dtype)
        if weight.dtype != dtype:
            weight = weight.to(dtype)
        if x.ndim == k + 1:  # already one batch dimension: no reshapes (a few us per call)
            return self._run(x, weight, adjoint=adjoint)
        lead = x.shape[: x.ndim - k]
        batch = x.reshape(math.prod(lead), *shape_in)  # (B, *shape_in)
        out = self._run(batch, weight, adjoint=adjoint)
        return out.reshape(*lead, *out.shape[1:])

    def _run(self, batch: torch.Tensor, weight: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        """The forward map (or its adjoint) of ``batch`` (B, ...) with ``weight``.

        ``weight`` is the current weight cast to the batch's dtype. FFT only where it is
        exact (see :func:`convop._fft.representable`); empty batches run directly.
        """
        size, method = batch.shape[0], self._method
        if method == "auto":  # _method_for, inlined: a small layer's product counts microseconds
            guess = self._auto(self._weight)
            method = guess.method
            if guess.uncertain and size:  # too close to call: timed once per size class
                key = (batch.dtype, batch.device, _trial.size_class(size), adjoint)
                method = self._raced.get(key)
                if method is None:
                    return self._race(batch, weight, adjoint=adjoint, key=key)
        return self._evaluate(batch, weight, adjoint=adjoint, method=method)

    def _race(self, batch: torch.Tensor, weight: torch.Tensor, *, adjoint: bool,
              key: tuple) -> torch.Tensor:  # fmt: skip
        """:meth:`_evaluate` by the faster method, found by timing both (:func:`_trial.race`).

        Timed without autograd; a product that autograd records runs once more, by the
        method kept.
        """
        with torch.no_grad():
            method, out, _ = _trial.race(
                lambda method: self._evaluate(batch, weight, adjoint=adjoint, method=method),
                batch.device,
            )
        self._raced[key] = method
        if torch.is_grad_enabled() and (batch.requires_grad or weight.requires_grad):
            return self._evaluate(batch, weight, adjoint=adjoint, method=method)
        return out

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

    # ------------------------------------------------------------------ explicit matrices
    def todense(self, *, max_bytes: int | None = None, progress: bool | None = None) -> np.ndarray:
        """The exact matrix as a dense numpy array of shape ``op.shape``.

        Built by index arithmetic from the geometry and the weight (no probing), one block
        of rows at a time, straight into the result.

        Parameters
        ----------
        max_bytes : int, optional
            Refuse (``MemoryError``, before allocating) results larger than this. Default:
            half of the memory available now.
        progress : bool, optional
            Show a progress bar; by default only for builds that take several seconds.

        Returns
        -------
        numpy.ndarray
            ``op.dtype``; ``op.H.todense()`` is ``op.todense().conj().T``.

        Examples
        --------
        >>> import numpy as np, torch, convop
        >>> op = convop.conv1d(torch.tensor([[[1.0, 2.0, 3.0]]]), (1, 4), padding=1)
        >>> op.todense()
        array([[2., 3., 0., 0.],
               [1., 2., 3., 0.],
               [0., 1., 2., 3.],
               [0., 0., 1., 2.]], dtype=float32)
        """
        return to_numpy(self.to_dense(max_bytes=max_bytes, progress=progress))

    def to_dense(
        self, *, max_bytes: int | None = None, progress: bool | None = None
    ) -> torch.Tensor:
        """The exact matrix as a dense tensor on the operator's device.

        Parameters
        ----------
        max_bytes : int, optional
            As for :meth:`todense`.
        progress : bool, optional
            As for :meth:`todense`.

        Returns
        -------
        torch.Tensor
            Shape ``op.shape``, the weight's dtype; the tensor form of :meth:`todense`.
        """
        plan = self._plan()
        return _materialize.dense(plan, max_bytes=max_bytes, progress=progress)

    def tosparse(
        self,
        format: str = "csr",
        *,
        max_bytes: int | None = None,
        progress: bool | None = None,
    ) -> sp.sparray:
        """The exact matrix as a scipy sparse array, in O(nnz) time and memory.

        Only structural entries are stored: every (output, input) pair some kernel tap
        connects, taps that padding folds onto the same input sample summed into one entry.
        The result is canonical (sorted indices, no duplicates).

        Parameters
        ----------
        format : {'csr', 'csc', 'coo'}, default 'csr'
        max_bytes : int, optional
            Refuse (``MemoryError``, before allocating) builds whose peak would exceed this.
            Default: half of the memory available now.
        progress : bool, optional
            Show a progress bar; by default only for builds that take several seconds.

        Returns
        -------
        scipy.sparse.csr_array, csc_array or coo_array
            Shape ``op.shape``, dtype ``op.dtype``; indices int32 when they fit.

        Notes
        -----
        CSR of a convolution and CSC of its adjoint or of a transposed convolution are
        written directly; the other format costs one scipy conversion (about twice the
        result's memory at the peak).

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv2d(torch.ones(4, 2, 3, 3), (2, 16, 16), padding=1)
        >>> A = op.tosparse()
        >>> A.shape, A.nnz, A.format
        ((1024, 512), 16928, 'csr')
        """
        check_choice(format, "format", SPARSE_FORMATS)
        plan = self._plan()
        native = "csc" if plan.transpose else "csr"
        arrays = _materialize.compressed(
            plan,
            max_bytes=max_bytes,
            what=f"tosparse({format!r})",
            convert=format != native,
            progress=progress,
        )
        indptr, indices, data = (to_numpy(t) for t in arrays)
        cls = sp.csc_array if plan.transpose else sp.csr_array
        matrix = cls((data, indices, indptr), shape=self.shape)
        matrix.has_sorted_indices = True
        matrix.has_canonical_format = True
        if format == native:
            return matrix
        converted = matrix.asformat(format)
        if format == "coo":
            converted.sum_duplicates()  # sorts into canonical (row-major) order; no duplicates
        return converted

    def to_sparse_csr(
        self, *, max_bytes: int | None = None, progress: bool | None = None
    ) -> torch.Tensor:
        """The exact matrix as a torch sparse CSR tensor on the operator's device.

        Same entries as :meth:`tosparse`; the torch counterpart of ``tensor.to_sparse_csr()``.

        Parameters
        ----------
        max_bytes : int, optional
            As for :meth:`tosparse`.
        progress : bool, optional
            As for :meth:`tosparse`.

        Returns
        -------
        torch.Tensor
            Sparse CSR, shape ``op.shape``, the weight's dtype.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv1d(torch.ones(1, 1, 2), (1, 3))
        >>> op.to_sparse_csr().to_dense()
        tensor([[1., 1., 0.],
                [0., 1., 1.]])
        """
        plan = self._plan()
        indptr, indices, data = _materialize.compressed(
            plan,
            max_bytes=max_bytes,
            what="to_sparse_csr()",
            convert=plan.transpose,
            progress=progress,
        )
        build = torch.sparse_csc_tensor if plan.transpose else torch.sparse_csr_tensor
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse (CSR|CSC) tensor support is in beta")
            tensor = build(indptr, indices, data, size=self.shape, check_invariants=False)
            return tensor.to_sparse_csr() if plan.transpose else tensor

    def _plan(self) -> _materialize.Plan:
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

    # ------------------------------------------------------------------ pylops face
    def to_pylops(self, name: str | None = None):
        """The operator as a ``pylops.LinearOperator`` with N-d ``dims`` and ``dimsd``.

        ``dims == op.input_shape`` and ``dimsd == op.output_shape``, so ``P @ x`` works on
        N-d arrays; it composes with PyLops operators (``VStack``, ``BlockDiag``,
        ``Laplacian``, ...) and runs in PyLops solvers. numpy arrays use the numpy face;
        CuPy arrays cross into torch by DLPack without copies (the weight must be on the
        same GPU). pylops is imported only here.

        Parameters
        ----------
        name : str, optional
            PyLops' operator name.

        Returns
        -------
        convop.pylops_bridge.PyLopsConv

        Examples
        --------
        >>> import numpy as np, pylops, torch, convop
        >>> op = convop.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float64), (1, 8, 8),
        ...                    padding="same", padding_mode="reflect")
        >>> P = op.to_pylops()
        >>> P.dims, P.dimsd
        ((1, 8, 8), (1, 8, 8))
        >>> (P @ np.ones((1, 8, 8))).shape
        (1, 8, 8)
        >>> bool(pylops.utils.dottest(P, *P.shape, rtol=1e-10))
        True
        """
        from .pylops_bridge import PyLopsConv

        return PyLopsConv(self, name=name)

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

    # ------------------------------------------------------------------ scipy face
    def _array_product(self, X: np.ndarray, *, adjoint: bool) -> np.ndarray:
        """Internal entry point of the numpy faces (scipy, PyLops).

        The product of every column of ``X`` (shape ``(n, k)``) as one batched convolution,
        ``(m, k)`` out, in ``np.result_type(op.dtype, X.dtype)``.
        """
        X = np.asarray(X)
        dtype = result_dtype(self.dtype, X.dtype, "x")
        shape_in = self.output_shape if adjoint else self.input_shape
        m, k = self.shape[1] if adjoint else self.shape[0], X.shape[1]
        x = to_tensor(X.T, dtype, self.device).reshape(k, *shape_in)  # (k, *shape_in)
        y = self._product(x, adjoint=adjoint)  # (k, *shape_out)
        return to_numpy(y.reshape(k, m)).T

    def _vector_apply(self, x, *, adjoint: bool) -> np.ndarray:
        """matvec (rmatvec if ``adjoint``) of one flattened sample, validated."""
        n = self.shape[0] if adjoint else self.shape[1]
        weight = self._current_weight()
        if (
            type(x) is np.ndarray
            and x.shape == (n,)
            and x.dtype == TORCH_TO_NUMPY[weight.dtype]
            and weight.is_cpu
        ):  # what solvers pass: one view in, one view out (the general path costs ~20 us)
            flags = x.flags  # a new object at every access
            if flags.c_contiguous and flags.aligned and flags.writeable:
                t = torch.from_numpy(x.reshape(self._vector_shapes[adjoint]))  # (1, *sample)
                y = self._product(t, adjoint=adjoint, weight=weight)  # (1, *sample_out)
                return (y.resolve_conj() if y.is_conj() else y).numpy().reshape(-1)
        sample = self.output_shape if adjoint else self.input_shape
        x = np.asanyarray(x)
        self._check_vector(x, n, "x", sample)
        y = self._rmatvec(x) if adjoint else self._matvec(x)
        return y.reshape(self.shape[1] if adjoint else self.shape[0], *x.shape[1:])

    def _product(
        self, x: torch.Tensor, *, adjoint: bool, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Internal entry point of every array face (numpy, PyLops, DLPack, MPI slabs).

        ``x`` is a batch ``(B, *shape_in)`` on the operator's device; the result is
        ``(B, *shape_out)`` in ``torch.promote_types(weight.dtype, x.dtype)``, without
        autograd, of the operator (``adjoint=False``) or of its adjoint. Unlike
        :meth:`apply` it does not validate shapes or devices: callers do. ``weight``: the
        result of :meth:`_current_weight` if the caller already has it.
        """
        if weight is None:
            weight = self._current_weight()
        if self._conj:
            weight = weight.conj()
        if weight.dtype != x.dtype:
            dtype = torch.promote_types(weight.dtype, x.dtype)
            x, weight = x.to(dtype), weight.to(dtype)
        if not weight.requires_grad:  # data from arrays never requires grad
            return self._run(x, weight, adjoint=adjoint != self.is_adjoint)
        with torch.no_grad():
            return self._run(x, weight.detach(), adjoint=adjoint != self.is_adjoint)

    def _matmat(self, X: np.ndarray) -> np.ndarray:
        return self._array_product(X, adjoint=False)

    def _rmatmat(self, X: np.ndarray) -> np.ndarray:
        return self._array_product(X, adjoint=True)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._array_product(np.reshape(x, (-1, 1)), adjoint=False)[:, 0]

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._array_product(np.reshape(x, (-1, 1)), adjoint=True)[:, 0]

    def matvec(self, x):
        """The convolution of one flattened sample.

        Parameters
        ----------
        x : array_like
            Shape ``(n,)`` or ``(n, 1)``: a sample of ``input_shape``, flattened.

        Returns
        -------
        numpy.ndarray
            Shape ``(m,)`` or ``(m, 1)`` like ``x``, in ``np.result_type(op.dtype, x.dtype)``.
        """
        return self._vector_apply(x, adjoint=False)

    def rmatvec(self, x):
        """The adjoint applied to one flattened output sample.

        Parameters
        ----------
        x : array_like
            Shape ``(m,)`` or ``(m, 1)``: a sample of ``output_shape``, flattened.

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)`` or ``(n, 1)`` like ``x``.
        """
        return self._vector_apply(x, adjoint=True)

    # Overrides of scipy's public methods, each kept because it pays (benchmarks/
    # bench_operators.py, "layer" rows "scipy's ... path"): matvec, rmatvec and dot skip
    # scipy's dispatch for the one-vector case solvers call (about 20-40 us of a 100 us
    # product on a small layer); matmat and rmatmat only add an error message that names
    # the sample shape. ``@`` needs no override: scipy's __matmul__ calls dot.
    def dot(self, x):
        """``op @ x``: :meth:`matvec` for a vector, :meth:`matmat` for a matrix.

        Parameters
        ----------
        x : array_like, scalar or LinearOperator
            Operators and scalars compose as in scipy (``op @ other_operator`` is a product
            operator, ``op.dot(2.0)`` a scaled one).

        Returns
        -------
        numpy.ndarray or LinearOperator
        """
        if type(x) is np.ndarray and x.ndim == 1:  # skip scipy's dispatch for the common case
            return self._vector_apply(x, adjoint=False)
        return super().dot(x)

    def matmat(self, X):
        """The convolution of each column of ``X``, as one batched convolution.

        Parameters
        ----------
        X : array_like
            Shape ``(n, k)``: one flattened input sample per column.

        Returns
        -------
        numpy.ndarray
            Shape ``(m, k)``.
        """
        self._check_matrix(X, self.shape[1], self.input_shape)
        return super().matmat(X)

    def rmatmat(self, X):
        """The adjoint applied to each column of ``X``, as one batched convolution.

        Parameters
        ----------
        X : array_like
            Shape ``(m, k)``: one flattened output sample per column.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, k)``.
        """
        self._check_matrix(X, self.shape[0], self.output_shape)
        return super().rmatmat(X)

    @staticmethod
    def _check_vector(x, n: int, name: str, sample: tuple) -> None:
        shape = np.shape(x)
        if shape not in ((n,), (n, 1)):
            raise ValueError(
                f"{name} must have shape ({n},) or ({n}, 1), a flattened sample of shape "
                f"{sample}, got shape {shape}"
            )

    @staticmethod
    def _check_matrix(X, n: int, sample: tuple) -> None:
        shape = np.shape(X)
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(
                f"X must have shape ({n}, k), one flattened sample of shape {sample} per "
                f"column, got shape {shape}"
            )

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
