"""Moved to :mod:`safelab.models.inputs` (what the model reads); kept for old imports."""

from safelab.models.inputs import (
    Encoded,
    Input,
    Message,
    Position,
    encode_inputs,
    input_fingerprint,
    processing_order,
)

__all__ = [
    "Encoded",
    "Input",
    "Message",
    "Position",
    "encode_inputs",
    "input_fingerprint",
    "processing_order",
]
