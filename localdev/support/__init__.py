"""Helpers shared by the test suites (waiting on conditions, Kubernetes shortcuts)."""
