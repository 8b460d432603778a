"""Exports in TF Serving's layout (the writer and the reader move here as the
regrouping goes on: docs/architecture.md)."""
