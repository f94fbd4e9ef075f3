"""Bounded waits on subprocess pipes: a test never blocks without a deadline (the helpers
live in :mod:`hil.procs`, shared with the scripts)."""

from hil.procs import readline_within

__all__ = ["readline_within"]
