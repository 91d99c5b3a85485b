"""tfserving-operator: serve TensorFlow SavedModels on Kubernetes from one ServedModel object."""

__version__ = "0.1.0"
