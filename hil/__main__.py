"""``python -m hil`` is the same as the ``hil`` console script."""

from hil.cli import main

raise SystemExit(main())
