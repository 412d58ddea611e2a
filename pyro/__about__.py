"""Single source of pyro's version."""

__version__ = "0.1.0"
