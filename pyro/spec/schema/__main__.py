"""``python -m pyro.spec.schema``: see :mod:`pyro.spec.schema.files`."""

from pyro.spec.schema.files import main

raise SystemExit(main())
