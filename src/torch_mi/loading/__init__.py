"""Weight loading: safetensors (single or sharded), GGUF, Hub resolution."""
