"""Golden files of render.py and the ServedModels they are rendered from."""
