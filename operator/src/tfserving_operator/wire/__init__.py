"""TensorFlow Serving's gRPC protocol, spoken without TensorFlow.

``tfserving_wire.proto`` declares the few ModelService messages the operator
needs, wire-compatible with TF Serving's; ``client`` probes model servers with
them. Nothing is imported here so that ``regenerate`` runs without grpc.
"""
