"""Unit tests: pure functions, no cluster."""
