"""Moved to :mod:`safelab.models.capture` (the model's own forward hooks); kept for old imports."""

from safelab.models.capture import (
    Activations,
    Encoded,
    Input,
    Message,
    Position,
    capture,
    encode_inputs,
    input_fingerprint,
    iter_capture,
    processing_order,
)

__all__ = [
    "Activations",
    "Encoded",
    "Input",
    "Message",
    "Position",
    "capture",
    "encode_inputs",
    "input_fingerprint",
    "iter_capture",
    "processing_order",
]
