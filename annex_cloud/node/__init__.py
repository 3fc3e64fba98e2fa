"""What runs on an annex node: the bootstrap script and its configuration rules."""
