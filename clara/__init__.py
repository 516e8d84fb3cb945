"""Clara: a memory-first chat bot built on one shared fact/entity store (see `storage`)."""

__version__ = "0.1.0"
