"""Scenario 2 (TransformerLens side): HookedTransformer.run_with_cache from TL 3.9, the last
line with HookedTransformer, in its own virtual environment (created on first use)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .common import ROOT, run_worker

TL_VENV = Path(ROOT) / ".venv-tl"
TL_VERSION = "transformer-lens==3.9.0"


def ensure_venv() -> Path:
    python = TL_VENV / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(TL_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # CPU wheel first, as everywhere
    subprocess.run([*pip, TL_VERSION], check=True)
    return python


def run_with_cache(hf_dir: Path, seq_len: int = 128, reps: int = 8) -> dict:
    python = ensure_venv()
    worker = Path(ROOT) / "workers" / "tl_worker.py"
    return run_worker([str(worker), str(hf_dir), str(seq_len), str(reps)], python=str(python),
                      timeout=1800)
