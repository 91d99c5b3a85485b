"""Training and export jobs for the models the operator serves."""
