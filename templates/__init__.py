"""The contract both tools share: the region stack, its policies, the enforcer and the bootstrap."""
