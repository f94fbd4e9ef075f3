"""ZeroMQ wire protocol: pydantic message models and raw-buffer array framing."""


class ProtocolError(Exception):
    """Root of the protocol's error tree: a message or frame is malformed."""
