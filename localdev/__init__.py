"""Local development tooling: a product of ours, not a test and not shipped.

* ``localdev.sim``: the local Kubernetes cluster (real control plane built
  from source, kwok nodes); ``make sim-up`` / ``make sim-down``.
* ``localdev.standin``: the stand-in for ``tensorflow_model_server`` that
  plays the model server of every model-server pod of the local cluster.
* ``localdev.support``: helpers the tests, the demo and the benchmarks share
  (the operator as a process, model folders, Kubernetes shortcuts, waiting).
* ``localdev.demo``: ``make demo``.

pytest never collects this folder (``testpaths = ["tests"]``); nothing here
imports from ``tests``.
"""
