"""tfnode's version, in a module of its own so that any part can read it without
importing the package's public surface (which imports data, layers and models)."""

__version__ = "0.1.0"
