"""vidd: a self-hosted video conversion daemon."""

__version__ = "0.1.0"
