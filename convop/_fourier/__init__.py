"""The kernel in the frequency domain, shared by spectra, preconditioners, damping and solvers.

``lags`` (the autocorrelation of a kernel: the symbol of its Gram operators) and
``gram_diagonal`` (the exact diagonal of ``B^H B`` under every padding mode).
"""
