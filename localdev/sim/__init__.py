"""The local Kubernetes cluster for tests and the demo (test infrastructure).

Real etcd, kube-apiserver, kube-controller-manager and kube-scheduler built
from source at pinned versions (toolchain.py), kwok playing the kubelets of
simulated CPU and GPU nodes (kwok-stages.yaml, nodes.py), and the stand-in
model server (localdev/standin) in place of tensorflow_model_server.
"""
