"""convop's test suite (a package: helpers are imported relatively)."""
