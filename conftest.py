"""Collection rules for the whole repository (tests/ and the doctests in convop/).

``convop.distributed`` needs the optional ``mpi`` extra; where it is missing (Python 3.10,
or a plain ``pip install convop``), its doctests are not collected instead of failing.
"""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("mpi4py") is None or importlib.util.find_spec("pylops_mpi") is None:
    collect_ignore.append("convop/distributed.py")
