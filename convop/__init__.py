"""convop: convolutions as exact lazy linear operators.

One object per convolution that is a ``scipy.sparse.linalg.LinearOperator`` (matvec is the
convolution, rmatvec its exact adjoint), torch-native (``apply``/``apply_adjoint`` on any
device, batched, differentiable) and covers all of PyTorch's conv semantics.
"""

from ._auto.calibrate import calibrate
from .constructors import (
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    from_module,
)
from .deconvolution import Preconditioner, preconditioner
from .extended import ExtendedDomain, extended_domain
from .geometry import ConvGeometry
from .layer_norms import lipschitz, spectral_normalize
from .linear import to_linear, to_linear_model
from .matrix_io import load_matrix, save_matrix
from .noise import estimate_noise
from .operator import ConvOperator
from .regularization import choose_damping
from .solvers import (
    normal_operator,
    pcg,
    richardson_lucy,
    solve_tikhonov,
    tikhonov,
    total_variation,
)
from .spectral import OpNorm, is_circulant, opnorm, svdvals
from .threads import solver_threads
from .weight_operator import WeightOperator

__version__ = "0.1.0.dev0"

__all__ = [
    # constructors
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "from_module",
    # conversions
    "to_linear",
    "to_linear_model",
    # types
    "ConvGeometry",
    "ConvOperator",
    "WeightOperator",
    # matrices on disk
    "load_matrix",
    "save_matrix",
    # spectra and norms
    "svdvals",
    "opnorm",
    "OpNorm",
    "is_circulant",
    "lipschitz",
    "spectral_normalize",
    # deconvolution
    "preconditioner",
    "Preconditioner",
    "solve_tikhonov",
    "choose_damping",
    "estimate_noise",
    "extended_domain",
    "ExtendedDomain",
    # solvers (convop.solvers)
    "normal_operator",
    "pcg",
    "richardson_lucy",
    "tikhonov",
    "total_variation",
    # thread pools in solver loops
    "solver_threads",
    # method="auto": this machine's constants
    "calibrate",
]
