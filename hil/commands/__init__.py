"""Sub-commands of the ``hil`` CLI, one module each (see :mod:`hil.cli`)."""
