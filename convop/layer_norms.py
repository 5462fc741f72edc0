"""Lipschitz constants of conv layers and models, and spectral normalisation by them.

A conv layer's Lipschitz constant (in the 2-norm) is the operator norm of its linear part,
which depends on the input size, the padding mode and the stride, not only on the weight:
``torch.nn.utils.parametrizations.spectral_norm`` normalises by the largest singular value
of the weight reshaped to ``(C_out, -1)``, which neither bounds nor equals it. Here the
norm is the operator's, exact for circulant layers and certified for the rest
(:func:`convop.opnorm`).

Certified means an upper bound, never an estimate: :func:`lipschitz` multiplies the
certified bounds of the layers (each kind's in :mod:`convop._layer_bounds`: activation
constants are the supremum of ``|f'|`` rounded *up*), and refuses a layer that is not one
fixed function of its input sample here — batch norm, dropout or RReLU in training mode, a
power-iteration parametrization in training mode, forward hooks, a subclass overriding
``forward``, a layer mixing the batch. :func:`spectral_normalize` divides a conv layer's
weight by its operator norm (:class:`ConvSpectralNorm`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import functional
from ._layer_bounds import BATCH_NORMS, BOUNDS, CONVS, DROPOUTS
from .constructors import from_module
from .geometry import ConvGeometry
from .operator import ConvOperator
from .spectral import check_rtol, opnorm


def _check_shape(input_shape: object) -> tuple[int, ...]:
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(f"input_shape must be a tuple of ints, got {type(input_shape).__name__}")
    shape = tuple(input_shape)
    if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0
                            for n in shape):  # fmt: skip
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape!r}")
    return shape


# --------------------------------------------------------------------------- which layer
def _kind(module: nn.Module) -> type:
    """The torch class whose function ``module`` computes: the first known one it derives from.

    A subclass that overrides that class's forward computes something else: refused.
    """
    cls = type(module)
    kind = next((c for c in cls.__mro__ if c in BOUNDS), None)
    if kind is None:
        raise TypeError(
            f"lipschitz() has no bound for {cls.__name__}; it knows conv layers, nn.Linear, "
            f"pooling, eval-mode batch norm and dropout, nn.Sequential and common activations"
        )
    for name in ("forward", "_conv_forward"):
        if getattr(cls, name, None) is not getattr(kind, name, None):
            raise TypeError(
                f"lipschitz(): {cls.__name__} overrides nn.{kind.__name__}.{name}; expected a "
                f"layer that computes exactly nn.{kind.__name__}'s function"
            )
    return kind


def _check_hooks(module: nn.Module) -> None:
    if module._forward_hooks or module._forward_pre_hooks:
        raise ValueError(
            f"lipschitz(): {type(module).__name__} has forward hooks or pre-hooks, which may "
            f"change what it computes; expected none (remove them first)"
        )


def _check_fixed(module: nn.Module, kind: type) -> None:
    """``ValueError`` unless ``module`` is one fixed function of its input sample now.

    Checked before anything runs the module: a training-mode batch norm would update its
    running statistics, a power-iteration parametrization its singular vectors.
    """
    name = type(module).__name__
    if any(isinstance(p, nn.parameter.UninitializedParameter) for p in module.parameters()):
        raise ValueError(f"lipschitz(): {name} has uninitialised parameters; run one forward "
                         f"pass first")  # fmt: skip
    if kind in BATCH_NORMS and module.training:
        raise ValueError(
            f"lipschitz(): {name} in training mode depends on the batch; call model.eval() first"
        )
    if kind in BATCH_NORMS and not module.track_running_stats:
        raise ValueError(
            f"lipschitz(): {name} with track_running_stats=False normalises by the batch in "
            f"eval mode too; expected running statistics"
        )
    if kind in DROPOUTS and module.training and module.p > 0:
        raise ValueError(
            f"lipschitz(): {name}(p={module.p}) in training mode is random (a new mask each "
            f"call, scaled by 1/(1-p)); call model.eval() first, where it is the identity"
        )
    if kind is nn.RReLU and module.training:
        raise ValueError(
            f"lipschitz(): {name} in training mode draws a random slope each call; call "
            f"model.eval() first"
        )
    if parametrize.is_parametrized(module):
        stateful = (ConvSpectralNorm, nn.utils.parametrizations._SpectralNorm)
        for attribute, chain in module.parametrizations.items():
            for p in chain:
                if p.training and isinstance(p, stateful):
                    raise ValueError(
                        f"lipschitz(): the {type(p).__name__} parametrization of {name}."
                        f"{attribute} changes it at every call in training mode (power "
                        f"iterations); call model.eval() first"
                    )


def _output_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The sample shape ``module`` maps ``shape`` to (batches of 1 and 2 zero samples).

    ``ValueError`` where ``shape`` does not fit or the batch dimension is not kept.
    """
    name = type(module).__name__
    p = next(module.parameters(), None)
    dtype = p.dtype if p is not None else torch.get_default_dtype()
    device = p.device if p is not None else None
    try:
        with torch.no_grad():
            one, two = (
                module(torch.zeros((b, *shape), dtype=dtype, device=device)) for b in (1, 2)
            )
    except (RuntimeError, ValueError, IndexError) as error:
        raise ValueError(f"input_shape={shape} does not fit {name}: {error}") from error
    if not isinstance(one, torch.Tensor):
        raise TypeError(f"lipschitz(): {name} returns a {type(one).__name__}, expected a tensor")
    if one.shape[:1] != (1,) or tuple(two.shape) != (2, *one.shape[1:]):
        raise ValueError(
            f"lipschitz(): {name} does not map samples one by one: a batch of 1 gives shape "
            f"{tuple(one.shape)}, of 2 gives {tuple(two.shape)}"
        )
    return tuple(one.shape[1:])


def _bound(module: nn.Module, shape: tuple[int, ...], rtol: float) -> tuple[float, tuple]:
    """``(Lipschitz bound, output sample shape)`` of ``module`` on samples of ``shape``."""
    _check_hooks(module)
    if isinstance(module, nn.Sequential):
        if type(module).forward is not nn.Sequential.forward:
            raise TypeError(
                f"lipschitz(): {type(module).__name__} overrides nn.Sequential.forward (a "
                f"residual block, say); expected a plain chain of layers"
            )
        bound = 1.0
        for layer in module:
            factor, shape = _bound(layer, shape, rtol)
            bound *= factor
        return bound, shape
    kind = _kind(module)
    _check_fixed(module, kind)
    if kind in CONVS:
        op = from_module(module, shape)
        return opnorm(op, rtol=rtol).upper, tuple(op.output_shape)
    out = _output_shape(module, shape)
    return BOUNDS[kind](module, shape, out), out


def lipschitz(model: nn.Module, input_shape: Sequence[int], *, rtol: float = 1e-2) -> float:
    r"""Certified upper bound on the Lipschitz constant (2-norm) of a layer or a Sequential.

    The product of the layers' certified bounds: conv layers by :func:`convop.opnorm`
    (their norm for *this* input size and padding), ``nn.Linear`` exactly, pooling (max,
    average, adaptive; any padding, dilation and ``ceil_mode``) per dimension, eval-mode
    batch norm by its largest scale, and activations by the supremum of their slope, rounded
    up (1 for ReLU and tanh, 1.1289042 for GELU, ``max(1, |alpha|)`` for ELU, ...). Biases
    do not change a Lipschitz constant. Nested ``nn.Sequential`` models are walked. A zero
    layer has the bound 0.

    Only layers that are one fixed function of each input sample are bounded. Training-mode
    batch norm (a function of the batch), dropout with ``p > 0`` and RReLU (random maps: no
    constant bounds ``model(x) - model(y)`` across two draws, though each draw of dropout is
    ``1/(1-p)``-Lipschitz) and power-iteration parametrizations (``spectral_normalize``,
    torch's ``spectral_norm``: the weight changes at every call) are refused in training
    mode; in eval mode dropout is the identity. Layers with forward hooks, subclasses that
    override ``forward`` (a residual ``nn.Sequential``, say) and layers that mix the batch
    are refused too.

    Parameters
    ----------
    model : torch.nn.Module
        A conv layer, another supported layer, or an ``nn.Sequential`` of them.
    input_shape : tuple of int
        ``(C, *spatial)`` of one input sample, without a batch dimension.
    rtol : float, default 1e-2
        Relative gap passed to :func:`convop.opnorm` for each conv layer (the bound of a
        circulant layer is exact whatever ``rtol``).

    Returns
    -------
    float
        ``L`` with ``||model(x) - model(y)|| <= L ||x - y||`` for all inputs of
        ``input_shape`` (one sample; a batch maps sample by sample), up to the round-off of
        evaluating the model.

    Raises
    ------
    TypeError
        For a layer without a known bound, or a subclass overriding its forward (the class
        is named).
    ValueError
        For a layer that is not a fixed function here (training mode, hooks, see above), a
        parameter that makes it not Lipschitz (``CELU`` with ``alpha < 0``, ``Softplus``
        with a low ``threshold``), or an ``input_shape`` that is invalid or does not fit.

    See Also
    --------
    convop.opnorm : The certified bound of each conv layer, for its input size.
    spectral_normalize : Divide a conv layer by its operator norm, to make it 1-Lipschitz.

    Notes
    -----
    The Lipschitz constant of a composition is at most the product of its factors' (as
    used for neural networks by [1]_), and a bias changes none:

    .. math::

        \operatorname{Lip}(f_L \circ \cdots \circ f_1) \le \prod_{i=1}^{L}
        \operatorname{Lip}(f_i), \qquad \operatorname{Lip}(x \mapsto A x + b) = \|A\|_2 .

    A conv layer's :math:`\|A\|_2` is the operator norm of the convolution on
    ``input_shape`` with its padding and stride, exact for circulant layers [2]_ and
    certified from above for the others (:func:`convop.opnorm`), not the norm of the
    weight reshaped to a matrix. An elementwise activation :math:`f` contributes
    :math:`\sup |f'|`. Max pooling changes each output by at most the largest change in its
    window, so it contributes :math:`\sqrt{h}` with :math:`h` the most windows one sample
    falls in; average pooling of windows of :math:`k` samples with divisor :math:`q`
    contributes the norm of its matrix, at most :math:`\sqrt{h k} / q` (Schur's test).
    Eval-mode batch norm is the diagonal scaling
    :math:`\gamma / \sqrt{\mathrm{var} + \varepsilon}`.

    References
    ----------
    .. [1] C. Szegedy, W. Zaremba, I. Sutskever, J. Bruna, D. Erhan, I. Goodfellow and
       R. Fergus, "Intriguing Properties of Neural Networks," International Conference on
       Learning Representations (ICLR), 2014.
    .. [2] H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional
       Layers," International Conference on Learning Representations (ICLR), 2019.

    Examples
    --------
    >>> import torch, convop
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), torch.nn.ReLU(),
    ...     torch.nn.Conv2d(4, 1, 3, padding=1, padding_mode="circular"))
    >>> bound = convop.lipschitz(model, (1, 16, 16))
    >>> x, y = torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16)
    >>> bool((model(x) - model(y)).norm() <= bound * (x - y).norm())
    True
    """
    shape = _check_shape(input_shape)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return _bound(model, shape, check_rtol(rtol))[0]


# --------------------------------------------------------------------------- normalisation
def _unit(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||``, scaled by its largest entry first; zero stays zero.

    The scaling keeps the squares from underflowing or overflowing. No host synchronisation.
    """
    peak = x.abs().amax()
    x = x / torch.where(peak > 0, peak, 1)
    norm = torch.linalg.vector_norm(x)
    return x / torch.where(norm > 0, norm, 1)


def _power_of_two(weight: torch.Tensor) -> torch.Tensor:
    """``2**e`` with ``max|weight| / 2**e`` in [0.5, 1) (1 for a zero weight), detached.

    Dividing by it is exact and brings any weight, 1e-300 or 1e300, near 1.
    """
    peak = weight.detach().abs().amax()
    mantissa, _ = torch.frexp(peak)  # peak = mantissa * 2**e
    return torch.where(peak > 0, peak / mantissa, 1)


class ConvSpectralNorm(nn.Module):
    """The parametrization :func:`spectral_normalize` registers: ``weight / ||A(weight)||``.

    In training mode the norm is estimated by power iterations on the layer's operator,
    warm-started from the last forward pass (``n_power_iterations`` each), and differentiated
    as ``<u, A(weight) v>`` for the current singular vector estimates, as Miyato et al. [1]_
    do for the reshaped weight matrix. In eval mode the weight is divided by the
    *certified* upper bound of :func:`convop.opnorm` (exact for circulant layers), so that the
    layer's Lipschitz constant is at most 1 for certain; that bound is kept as long as the
    weight's values are unchanged.

    The weight is first divided by a power of two bringing its largest entry into [0.5, 1)
    (exact), so tiny and huge weights normalise like any other. A weight whose operator is
    zero (a zero-initialised layer, say) is returned as it is: its norm is 0, and the
    gradient there is the identity's, so training can leave it.

    See Also
    --------
    spectral_normalize : Registers it on a conv layer.
    convop.opnorm : The certified bound used in eval mode.

    References
    ----------
    .. [1] T. Miyato, T. Kataoka, M. Koyama and Y. Yoshida, "Spectral Normalization for
       Generative Adversarial Networks," International Conference on Learning
       Representations (ICLR), 2018.
    """

    def __init__(self, geometry: ConvGeometry, weight: torch.Tensor, *, rtol: float,
                 n_power_iterations: int) -> None:  # fmt: skip
        super().__init__()
        self.geometry = geometry
        self.rtol = rtol
        self.n_power_iterations = n_power_iterations
        gen = torch.Generator(device=weight.device).manual_seed(0)
        v = torch.randn((1, *geometry.input_shape), generator=gen, dtype=weight.dtype,
                        device=weight.device)  # fmt: skip
        self.register_buffer("_v", v / torch.linalg.vector_norm(v))
        self._certified: tuple[torch.Tensor, float] | None = None

    def _operator_norm_bound(self, weight: torch.Tensor) -> float:
        kept = self._certified
        w = weight.detach()
        if (kept is not None and kept[0].dtype == w.dtype and kept[0].device == w.device
                and torch.equal(kept[0], w)):  # fmt: skip
            return kept[1]
        upper = opnorm(ConvOperator(w, self.geometry), rtol=self.rtol).upper
        self._certified = (w.clone(), upper)
        return upper

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The normalised weight (see the class)."""
        weight = weight / _power_of_two(weight)
        if not self.training:
            upper = self._operator_norm_bound(weight)
            return weight / upper if upper > 0 else weight
        geom = self.geometry
        with torch.no_grad():
            v = self._v
            for _ in range(self.n_power_iterations):
                u = _unit(functional.forward(v, weight, geom))
                v = _unit(functional.adjoint(u, weight, geom))
            # a zero operator leaves no direction: keep the last one for when it has
            self._v.copy_(torch.where((v != 0).any(), v, self._v))
            u = _unit(functional.forward(self._v, weight, geom))
        sigma = torch.vdot(u.reshape(-1), functional.forward(self._v, weight, geom).reshape(-1))
        return weight / torch.where(sigma.real > 0, sigma.real, 1)


def spectral_normalize(module: nn.Module, input_shape: Sequence[int], *, rtol: float = 1e-2,
                       n_power_iterations: int = 1) -> nn.Module:  # fmt: skip
    r"""Make a conv layer 1-Lipschitz by its operator norm, for training.

    Registers a :class:`ConvSpectralNorm` parametrization on ``module.weight``
    (``torch.nn.utils.parametrize``), in the module's current mode: in training mode the
    weight is divided by a power-iteration estimate of the layer's operator norm
    (differentiable), in eval mode by the certified upper bound of :func:`convop.opnorm`, so
    that the evaluated layer is at most 1-Lipschitz for certain. Unlike
    ``torch.nn.utils.parametrizations.spectral_norm``, which divides by the norm of the
    weight reshaped to a matrix, this is the norm of the convolution itself, for
    ``input_shape``, its padding mode and stride. A layer whose operator is zero stays zero.

    Parameters
    ----------
    module : torch.nn.Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d or ConvTranspose3d
        The layer to parametrize, in place.
    input_shape : tuple of int
        ``(C_in, *spatial)`` of one input sample.
    rtol : float, default 1e-2
        The certified bound's relative gap (eval mode).
    n_power_iterations : int, default 1
        Power iterations per training forward pass.

    Returns
    -------
    torch.nn.Module
        ``module``, parametrized.

    See Also
    --------
    lipschitz : Certified Lipschitz bounds of the layer, or of a model holding it.
    convop.opnorm : Certified bounds on the operator norm it divides by in eval mode.
    ConvSpectralNorm : The parametrization registered.

    Notes
    -----
    With :math:`A(W)` the convolution of weight :math:`W` on ``input_shape``, the layer
    computes with

    .. math::

        \widehat W = \frac{W}{\sigma(W)}, \qquad \sigma(W) \approx \|A(W)\|_2 .

    In training mode :math:`\sigma(W) = \operatorname{Re} \langle u, A(W) v \rangle` for the
    power iterations' current unit vectors :math:`u, v`, differentiated through :math:`W`
    only, the scheme of [1]_ applied to the operator instead of the reshaped weight. In
    eval mode :math:`\sigma(W)` is the certified upper bound of :func:`convop.opnorm`, so
    :math:`\|A(\widehat W)\|_2 \le 1`.

    References
    ----------
    .. [1] T. Miyato, T. Kataoka, M. Koyama and Y. Yoshida, "Spectral Normalization for
       Generative Adversarial Networks," International Conference on Learning
       Representations (ICLR), 2018.

    Examples
    --------
    >>> import torch, convop
    >>> torch.manual_seed(0)
    <torch._C.Generator object at ...>
    >>> layer = convop.spectral_normalize(torch.nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16))
    >>> _ = layer.eval()
    >>> convop.lipschitz(layer, (3, 16, 16), rtol=1e-3) <= 1 + 1e-6
    True
    """
    if not isinstance(module, CONVS):
        raise TypeError(
            f"module must be a torch.nn conv layer (Conv1d/2d/3d, ConvTranspose1d/2d/3d), "
            f"got {type(module).__name__}"
        )
    if (
        isinstance(n_power_iterations, bool)
        or not isinstance(n_power_iterations, int)
        or (n_power_iterations < 1)
    ):
        raise ValueError(f"n_power_iterations must be a positive int, got {n_power_iterations!r}")
    op = from_module(module, _check_shape(input_shape))
    check_rtol(rtol)
    parametrization = ConvSpectralNorm(op.geometry, module.weight.detach(), rtol=rtol,
                                       n_power_iterations=n_power_iterations)  # fmt: skip
    torch.nn.utils.parametrize.register_parametrization(module, "weight", parametrization)
    return module
