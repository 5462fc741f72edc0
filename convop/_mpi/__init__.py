"""The MPI face's machinery: slabs, halos and blocks.

``slabs``: the slab decomposition of a convolution along one axis, pure index arithmetic.
``halo``: one rank's part of a distributed product, the halo gather and reduce, and the
agreement check across ranks before the first exchange. ``blocks``: whole blocks of a
global sample scattered from one rank or gathered to one or all.
"""
