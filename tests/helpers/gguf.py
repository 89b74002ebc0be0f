"""Writing GGUF metadata in tests (shared by the GGUF format and real-model tests)."""

from __future__ import annotations

from typing import Any


def add_metadata(writer, kv: dict[str, Any]) -> None:
    """Add each key/value to a ``gguf.GGUFWriter`` with the GGUF type its Python value implies
    (numpy scalars in arrays become Python scalars)."""
    for key, value in kv.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, [v.item() if hasattr(v, "item") else v for v in value])
