"""Tests against the local control plane (marked ``cluster`` by tests/conftest.py)."""
