"""MVMs as DAC and ADC codes on the wire (capability ``mvm_codes``, docs/protocol.md).

A device with an integer periphery (8-bit signed DAC, ADC of at most 16 bits) computes

    x_code = rint(127·x)  (float32),   y_us = y_code · lsb_us  (float32),

so the client sends ``x_code`` (int8, 1 byte per input instead of 4) and receives ``y_code``
(int8 or int16) and ``lsb_us``. Both conversions are exact: the server hands the driver
``x = x_code/127``, whose DAC code is ``x_code`` again (``|127·x − x_code| < 1e-4``), and
recovers ``y_code = rint(y_us/lsb_us)`` from the driver's output; the client's
``y_code · float32(lsb_us)`` is the same float32 product the device made. An MVM over codes
therefore gives the float path's results bit for bit, except the sign of zero: an output
the device rounded to −0.0 arrives as +0.0 (ADC code 0 has no sign; equal as numbers).
"""

from __future__ import annotations

import numpy as np

from drivers import InvalidRequest
from drivers.base import DAC_CODE_MAX, Driver
from protocols.region import Region


def dac_codes(x: np.ndarray) -> np.ndarray:
    """``rint(127·x)`` as int8, computed as the device's DAC does (float32)."""
    xq = np.multiply(x, np.float32(DAC_CODE_MAX), dtype=np.float32)
    np.rint(xq, out=xq)
    return xq.astype(np.int8)


def from_adc_codes(y_code: np.ndarray, lsb_us: float) -> np.ndarray:
    """``y_code · lsb_us`` in float32 (µS)."""
    y = y_code.astype(np.float32)
    y *= np.float32(lsb_us)
    return y


def mvm_over_codes(
    driver: Driver, region: Region, x_code: np.ndarray, transpose: bool
) -> tuple[np.ndarray, float]:
    """The server side: run the driver's MVM on DAC codes; returns ``(y_code, lsb_us)``."""
    codes = driver.mvm_codes(region.chip)
    if codes is None:
        raise InvalidRequest(
            f"chip {region.chip} has a float periphery (no capability mvm_codes): send 'x' "
            "(float32), not 'x_code'"
        )
    if x_code.dtype != np.int8:
        raise InvalidRequest(f"'x_code' must be int8 DAC codes, got {x_code.dtype}")
    if x_code.size and int(x_code.min()) < -DAC_CODE_MAX:
        raise InvalidRequest(f"DAC code {int(x_code.min())} is below -{DAC_CODE_MAX}")
    x = x_code.astype(np.float32)
    x /= np.float32(DAC_CODE_MAX)
    y = driver.mvm(region, x, transpose=transpose)
    y_code = np.rint(y / np.float32(codes.lsb_us)).astype(codes.dtype)
    return y_code, codes.lsb_us
