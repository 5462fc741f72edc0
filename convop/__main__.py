"""``python -m convop``: the same as the ``convop`` command (see :mod:`convop.cli`)."""

from convop.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
