"""What ``method="auto"`` does for an operator: resolve, say why, and time where unsure.

:class:`AutoMethod` gives :class:`~convop.operator.ConvOperator` its ``method`` and
:meth:`~AutoMethod.estimate`, and decides which method each product runs by (``_run``):

- the cost model's pick, estimated once per weight dtype, device and set of constants
  (:func:`convop._auto.calibrate.estimate`) and kept; pure arithmetic, so building an
  operator, ``repr(op)``, ``op.method`` and ``op.estimate()`` never time, probe or write;
- where the two estimates are too close to call (:func:`convop._auto.trial.uncertain`), the
  faster of the two timed on the first product of each batch size (``trial.race``), kept
  per size class and shared with the operator's adjoint and transposes.

The operator provides ``geometry``, ``_method``, ``_choice`` (None at first), ``_raced`` (a
dict), ``_weight``, ``_current_weight()`` and ``_evaluate(batch, weight, *, adjoint,
method)``, the product by a given method.
"""

from __future__ import annotations

import torch

from .._shared.checks import as_int
from . import calibrate, trial
from .cost import Estimate


class AutoMethod:
    """``method``, :meth:`estimate` and the per-product choice of ``method="auto"``."""

    @property
    def method(self) -> str:
        """How products are evaluated now: ``'direct'`` or ``'fft'``.

        ``'auto'`` is resolved for the weight's current dtype and device by the cost model,
        for one sample (:meth:`estimate`). Where the model's two estimates are too close to
        call (within 4x), the first product of each batch size times both methods and keeps
        the faster for that size; ``repr(op)`` lists what was timed.
        """
        if self._method != "auto":
            return self._method
        return self._auto(self._current_weight()).method

    def _auto(self, weight: torch.Tensor) -> Estimate:
        """Why 'auto' picks what it picks for ``weight``'s dtype and device.

        Estimated once per dtype, device and set of constants (``convop.calibrate()``
        replaces them) and kept meanwhile.
        """
        choice = self._choice
        generation = calibrate.generation
        if (
            choice is None
            or choice[0] is not weight.dtype
            or choice[1] != weight.device
            or choice[2] != generation
        ):
            found = calibrate.estimate(self.geometry, weight.dtype, weight.device)
            choice = self._choice = (weight.dtype, weight.device, generation, found)
        return choice[3]

    def estimate(self, batch: int = 1) -> Estimate:
        """What one product costs by each method, and which one ``method='auto'`` picks.

        The cost model's estimates, all from one set of constants (those of this process's
        :func:`convop.calibrate`, else of the cache file an earlier calibration wrote for
        this machine, else the built-in ones; ``source`` says which), for the weight's dtype
        and device now. Pure arithmetic: nothing is timed, probed, allocated or written.

        Parameters
        ----------
        batch : int, default 1
            Samples per product. The estimates are one sample's times ``batch``: a batch can
            shift the balance, which is why ``'auto'`` times both methods on the first
            product of a batch size where the two are within 4x (``uncertain``).

        Returns
        -------
        Estimate
            ``direct``, ``fft``: estimated seconds of one product (the mean of forward and
            adjoint) of ``batch`` samples; ``direct_bytes``, ``fft_bytes``: the memory it
            takes beyond its input (direct: the output and the input once more, as the
            product guard counts; FFT: the weight's spectrum, built on first use and kept,
            plus one product's transforms); ``method``: the smaller estimate, ``'auto'``'s
            pick; ``source``: where the constants came from; ``uncertain``: whether the
            first product of this batch size times both; ``batch``. The same whatever
            ``op.method`` is: a fixed method costs what its column says.

        Raises
        ------
        TypeError, ValueError
            If ``batch`` is not an int >= 1, or the weight became unusable.

        Examples
        --------
        >>> import torch, convop
        >>> op = convop.conv2d(torch.ones(1, 1, 15, 15), (1, 1024, 1024), padding="same")
        >>> guess = op.estimate()
        >>> guess.method, guess.fft < guess.direct, guess.source
        ('fft', True, 'built-in')
        >>> guess.fft_bytes > guess.direct_bytes
        True
        >>> op.estimate(batch=8).fft == 8 * guess.fft
        True
        """
        batch = as_int(batch, "batch", minimum=1)
        weight = self._current_weight()
        return calibrate.estimate(self.geometry, weight.dtype, weight.device, batch=batch)

    # ------------------------------------------------------------------ per product
    def _run(self, batch: torch.Tensor, weight: torch.Tensor, *, adjoint: bool) -> torch.Tensor:
        """The forward map (or its adjoint) of ``batch`` (B, ...) with ``weight``.

        ``weight`` is the current weight cast to the batch's dtype; ``adjoint`` is the
        geometry's direction.
        """
        size, method = batch.shape[0], self._method
        if method == "auto":  # `method` without its checks: a small layer's product counts us
            guess = self._auto(self._weight)
            method = guess.method
            if guess.uncertain and size:  # too close to call: timed once per size class
                key = (batch.dtype, batch.device, trial.size_class(size), adjoint)
                method = self._raced.get(key)
                if method is None:
                    return self._race(batch, weight, adjoint=adjoint, key=key)
        return self._evaluate(batch, weight, adjoint=adjoint, method=method)

    def _race(self, batch: torch.Tensor, weight: torch.Tensor, *, adjoint: bool,
              key: tuple) -> torch.Tensor:  # fmt: skip
        """``_evaluate`` by the faster method, found by timing both (:func:`trial.race`).

        Timed without autograd; a product that autograd records runs once more, by the
        method kept.
        """
        with torch.no_grad():
            method, out, _ = trial.race(
                lambda method: self._evaluate(batch, weight, adjoint=adjoint, method=method),
                batch.device,
            )
        self._raced[key] = method
        if torch.is_grad_enabled() and (batch.requires_grad or weight.requires_grad):
            return self._evaluate(batch, weight, adjoint=adjoint, method=method)
        return out
