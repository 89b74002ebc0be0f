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
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise DownloadError(f"a Hub repo id is a string like 'org/name', got {repo_id!r}")
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except ValueError as exc:  # HFValidationError: the Hub's own rules for repo ids
        raise DownloadError(f"{_short(repo_id)} is not a Hub repo id ({str(exc)[:160]}) nor an "
                            f"existing local path; give 'org/name', a model folder or a .gguf "
                            f"file") from None
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise DownloadError(f"revision must be a branch, tag or commit hash string, got "
                            f"{revision!r}")
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
            f"{_short(repo_id)} is not in the local Hugging Face cache and cannot be downloaded "
            f"(offline mode, HF_HUB_OFFLINE=1, or no network). Download it once while online, "
            f"or pass a local directory / .gguf file instead."
        ) from None
    except HfHubHTTPError as exc:
        raise DownloadError(
            f"download of {_short(repo_id)} failed: {exc}. Check the repo id and revision; gated "
            f"models (Llama, Gemma, Mistral) need HF_TOKEN set and the licence accepted."
        ) from None
    except (OSError, ValueError) as exc:
        raise DownloadError(f"download of {_short(repo_id)} failed: {exc}") from None
    return Path(path)


def _short(text: str, limit: int = 120) -> str:
    """``repr(text)``, cut to ``limit`` characters so a hostile id cannot flood a message."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(text)} characters)"


async def download_model(repo_id: str, revision: str | None = None,
                         allow_patterns: list[str] | None = None) -> Path:
    """Async variant of :func:`download_model_blocking` (runs in a worker thread)."""
    return await asyncio.to_thread(download_model_blocking, repo_id, revision, allow_patterns)
