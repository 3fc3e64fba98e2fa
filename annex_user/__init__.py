"""The scientist's client: launch, extend, inspect and end annexes."""
