"""Single source of pyro's version."""

__version__ = "0.1.0"

# Version of the checked-in environment catalog (pyro/data/environments); bump when a
# catalog spec changes what an environment contains.
CATALOG_VERSION = 1
