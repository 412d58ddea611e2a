"""``python -m pyro.cli`` runs the pyro command."""

from pyro.cli.main import main

raise SystemExit(main())
