"""``method="auto"``: which evaluation, direct or FFT, a product uses.

``cost`` estimates the seconds and bytes of a direct and of an FFT product from the
geometry, the dtype and a device's constants; ``probe`` measures those constants on this
machine and ``cache`` keeps them in a file; ``calibrate`` decides which constants are used
(:func:`convop.calibrate`'s, the cache file's, or the built-in ones); ``trial`` times both
methods where the estimates are too close to call; ``choice`` is what an operator does with
all of it (``op.method``, ``op.estimate()``, the method of each product).
"""
