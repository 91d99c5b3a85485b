"""Tests of the stand-in model server, without Kubernetes (per-pod servers started directly)."""
