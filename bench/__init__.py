"""Benchmarks of condor-annex against the `aws` CLI on a local emulator (`make bench`)."""
