"""The ``hil serve`` subprocess helpers of the system tests (they live in :mod:`hil.procs`,
shared with the scripts)."""

from hil.procs import READY_TIMEOUT_S, ServeProcess, wait_for

__all__ = ["READY_TIMEOUT_S", "ServeProcess", "wait_for"]
