"""The MNIST softmax-regression trainer, its data loading and its client."""
