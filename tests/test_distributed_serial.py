"""The parts of convop.distributed that need no second process.

The distributed products themselves are tested under mpiexec in tests/mpi; here: the optional
extra stays optional, and the batched PyLops operator behind ``block_diag``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pylops
import pytest
import torch

import convop
from convop.pylops_bridge import PyLopsConv


def test_import_convop_imports_no_mpi():
    code = "import sys, convop; sys.exit(any(m in sys.modules for m in ('mpi4py', 'pylops_mpi')))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_the_extra_the_import_error_says_what_to_install():
    code = (
        "import sys; sys.modules['pylops_mpi'] = None\n"
        "try:\n    import convop.distributed\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install mpi4py pylops-mpi mpich" in out.stdout


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_frames_operator_is_one_operator_per_frame(dtype):
    weight = torch.randn(3, 2, 3, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    op = convop.conv2d(weight, (2, 7, 6), stride=2, padding=1, padding_mode="reflect")
    P = PyLopsConv(op, frames=4)
    assert P.dims == (4, *op.input_shape)
    assert P.dimsd == (4, *op.output_shape)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, op.shape[1]))
    if dtype.is_complex:
        x = x + 1j * rng.standard_normal(x.shape)
    y = P @ x.ravel()
    np.testing.assert_allclose(y.reshape(4, -1), np.stack([op @ f for f in x]), atol=1e-12)
    v = rng.standard_normal((4, op.shape[0]))
    np.testing.assert_allclose((P.H @ v.ravel()).reshape(4, -1), np.stack([op.H @ f for f in v]),
                               atol=1e-12)  # fmt: skip
    assert pylops.utils.dottest(
        P, *P.shape, rtol=1e-10, complexflag=0 if dtype.is_complex is False else 3
    )
    X = rng.standard_normal((P.shape[1], 2))
    np.testing.assert_allclose(P @ X, np.stack([P @ c for c in X.T], axis=1), atol=1e-12)
    assert "frames=4" in repr(P)
