"""Tests and test infrastructure: the local cluster (sim/), the stand-in model server (standin/)."""
