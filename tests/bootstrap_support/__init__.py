"""Local stand-ins the bootstrap tests run the real script against (metadata service, stubs)."""
