"""The kernel in the frequency domain, shared by spectra, preconditioners, damping and solvers.

The kernel's symbol:

- ``lags``: the autocorrelation of a kernel, the symbol of its Gram operators;
- ``circulant``: the taps placed on a grid and transformed, written once; a circulant's
  transfer matrices and polyphase blocks;
- ``boundary``: the boundary models (extensions, folds, the DCT-II and the model's
  transforms, the model's diagonal);
- ``symbol``: the Gram operator's symbol under a boundary model (``gram_symbol``), for the
  preconditioner and the damping rules;
- ``gram_diagonal``: the exact diagonal of ``B^H B`` under every padding mode.

The certified bounds of :func:`convop.opnorm`: ``grams`` (the circulant embedding's Gram
blocks), ``separable`` (separable kernels' factors), ``bracket`` (the Lanczos bracket and the
exact fallback), ``rounding`` (the rounding-error budgets) and ``scaling`` (the weight at
unit scale).
"""
