"""Hub downloads through ``huggingface_hub``: the standard cache, ``HF_TOKEN``,
``HF_HUB_OFFLINE=1`` and its progress bars."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .errors import DownloadError

# What a model folder needs: configs, tokenizer files, safetensors (never pickles).
MODEL_FILE_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.txt", "*.yaml"]


def download_model_blocking(repo_id: str, revision: str | None = None,
                            allow_patterns: list[str] | None = None) -> Path:
    """Download (or find in the local cache) a Hub repo; returns the snapshot folder."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a dependency
        raise DownloadError(f"huggingface_hub is required for downloads: {exc}") from exc
    try:
        path = snapshot_download(repo_id, revision=revision,
                                 allow_patterns=allow_patterns or MODEL_FILE_PATTERNS)
    except LocalEntryNotFoundError:
        raise DownloadError(
            f"{repo_id!r} is not in the local Hugging Face cache and cannot be downloaded "
            f"(offline mode, HF_HUB_OFFLINE=1, or no network). Download it once while online, "
            f"or pass a local directory / .gguf file instead."
        ) from None
    except HfHubHTTPError as exc:
        raise DownloadError(
            f"download of {repo_id!r} failed: {exc}. Check the repo id and revision; gated "
            f"models (Llama, Gemma, Mistral) need HF_TOKEN set and the licence accepted."
        ) from None
    except (OSError, ValueError) as exc:
        raise DownloadError(f"download of {repo_id!r} failed: {exc}") from None
    return Path(path)


async def download_model(repo_id: str, revision: str | None = None,
                         allow_patterns: list[str] | None = None) -> Path:
    """Async variant of :func:`download_model_blocking` (runs in a worker thread)."""
    return await asyncio.to_thread(download_model_blocking, repo_id, revision, allow_patterns)
