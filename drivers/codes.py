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
    q = np.divide(y, np.float32(codes.lsb_us))
    np.rint(q, out=q)  # in place: one temporary less
    return q.astype(codes.dtype), codes.lsb_us


# ------------------------------------------------------------ sparse pulse counts
SPARSE_BYTES_PER_PULSED = 5
"""Wire bytes of one pulsed device in the sparse form: a uint32 index and a uint8 count."""
SPARSE_SPEC_BYTES = 80
"""About the header bytes a second array spec adds (the sparse form has two arrays)."""


def sparse_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pulse_index, pulse_count)`` of ``counts`` (values 0..255) when that is fewer wire
    bytes than the dense ``uint8`` map, else ``None``: flat C-order indices (uint32,
    strictly increasing) of the devices that get pulses and their counts (uint8)."""
    flat = counts.reshape(-1)
    index = np.flatnonzero(flat)
    if index.size * SPARSE_BYTES_PER_PULSED + SPARSE_SPEC_BYTES >= flat.size:
        return None
    return index.astype(np.uint32), flat[index].astype(np.uint8)


def dense_counts(
    pulse_index: np.ndarray, pulse_count: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """The server side: the dense ``uint8`` counts of ``shape`` that a sparse request
    names, after checking it strictly (dtypes, 1-D of equal length, indices in range and
    strictly increasing, counts >= 1); any violation is :class:`~drivers.InvalidRequest`.
    ``shape`` must be a checked region's, so the allocation is bounded by the chip."""
    if pulse_index.dtype != np.uint32 or pulse_count.dtype != np.uint8:
        raise InvalidRequest(
            f"sparse pulses need 'pulse_index' uint32 and 'pulse_count' uint8, got "
            f"{pulse_index.dtype} and {pulse_count.dtype}"
        )
    if pulse_index.ndim != 1 or pulse_count.shape != pulse_index.shape:
        raise InvalidRequest(
            f"'pulse_index' {pulse_index.shape} and 'pulse_count' {pulse_count.shape} must "
            f"be 1-D of the same length"
        )
    size = 1
    for n in shape:
        size *= n
    if pulse_index.size:
        if pulse_index.size > 1 and not bool(np.all(pulse_index[1:] > pulse_index[:-1])):
            raise InvalidRequest("'pulse_index' must be strictly increasing (no repeats)")
        if int(pulse_index[-1]) >= size:  # the largest, as they increase
            raise InvalidRequest(
                f"'pulse_index' {int(pulse_index[-1])} is out of range: the region has "
                f"{size} devices (rows x cols x devices), flat C-order indices 0..{size - 1}"
            )
        if int(pulse_count.min()) < 1:
            raise InvalidRequest(
                "'pulse_count' entries must be >= 1 (devices without pulses are left out)"
            )
    out = np.zeros(size, np.uint8)
    out[pulse_index] = pulse_count
    return out.reshape(shape)
