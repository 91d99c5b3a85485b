"""The half_plus_three demo model (y = 0.5 x + 3) of the TF Serving REST docs."""
