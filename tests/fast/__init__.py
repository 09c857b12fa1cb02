"""The fast tier (`pytest -m fast`): core tests on toy kinds, no torch, under a minute.

A package, so that its `conftest.py` is `fast.conftest` and never shadows `tests/conftest.py`,
which other test files import as `conftest`.
"""
