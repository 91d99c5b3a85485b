"""Reliability and security: faults survived, bad input refused (see docs/reliability.md)."""
