"""pcm-hil: hardware-in-the-loop online training of spiking networks on PCM crossbars.

Layers (enforced by import-linter, see ``pyproject.toml``)::

    hil/        trainer, learning rules, tasks, runs, CLI      (top)
    drivers/    driver contract, SimDriver, RemoteDriver, server, board driver
    simulator/  statistical PCM crossbar physics (pure numpy)
    protocols/  ZeroMQ wire messages and array framing (pure pydantic/numpy)
"""

from hil.errors import HilError

__all__ = ["HilError", "__version__"]
__version__ = "0.1.0"
