"""Fault injection between the tools and the emulator, at botocore's `before-send` event."""
