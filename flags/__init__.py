"""absl flag definitions for the tools, and one flagfile per paper experiment (``*.cfg``)."""
