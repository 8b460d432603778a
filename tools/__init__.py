"""Thin absl apps: each parses flags from ``flags/`` and calls one tfnode function."""
