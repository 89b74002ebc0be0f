"""Shared test helpers: tiny random HF models, GGUF writers."""
