"""`make image`: the operator image, built with podman from Debian packages and wheels."""
