"""Support code every layer uses: validators, numpy/torch conversions, the memory guard, files.

``checks`` (validators whose messages name the parameter), ``arrays`` (the one place where
numpy and torch meet), ``memory`` (the memory available and the guard every large
allocation asks first) and ``files`` (atomic writes and the one exception of the validating
readers). Nothing here knows what a convolution is.
"""
