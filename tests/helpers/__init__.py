"""Helpers shared by the tests; see tests/conftest.py for the fixtures that hand them out."""
