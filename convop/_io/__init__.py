"""The strict readers behind :func:`convop.load_matrix`: Matrix Market (``mtx``) and ``.npz``."""
