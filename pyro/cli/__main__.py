"""``python -m pyro.cli`` runs the pyro command, as the ``pyro`` script does."""

from pyro.cli.main import entry

entry()
