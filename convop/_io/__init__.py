"""Files, validated when read and written atomically.

The strict readers behind :func:`convop.load_matrix`: Matrix Market (``mtx``) and
``.npz``; and ``stacks``, the images and stacks of ``convop deconvolve`` (TIFF, ``.npy``,
``.npz``; header first, voxel sizes, slab-by-slab writes).
"""
