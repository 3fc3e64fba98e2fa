"""Helpers for the pool tests that must run in a child process of their own."""
