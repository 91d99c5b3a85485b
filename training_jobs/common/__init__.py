"""Helpers shared by the export jobs."""
