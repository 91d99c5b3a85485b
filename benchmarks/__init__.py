"""Benchmarks of the operator against a local cluster instance of its own (`make bench`).

Each module measures one thing and returns plain figures; `__main__` runs
them in order on one cluster and writes benchmarks/results/latest.{md,json}.
Nothing here is a pass/fail test: figures are printed, never asserted.
"""
