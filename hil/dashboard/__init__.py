"""``hil dashboard``: a read-only web app for runs and device servers (see :mod:`hil.dashboard.app`)."""
