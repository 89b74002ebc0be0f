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
    """TL 3.9 plus this checkout of torch-mi, so both run in one process."""
    python = TL_VENV / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q"]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TL_VENV)], check=True)
        subprocess.run([*pip, "torch==2.13.0"], check=True)  # CPU wheel first, as everywhere
        subprocess.run([*pip, TL_VERSION], check=True)
    check = subprocess.run([str(python), "-c", "import torch_mi"], capture_output=True)
    if check.returncode != 0:
        subprocess.run([*pip, "-e", str(Path(ROOT).parent)], check=True)
    return python


def run_with_cache(hf_dir: Path, seq_len: int = 128, reps: int = 8) -> dict:
    python = ensure_venv()
    return run_worker(["-m", "benchmarks.workers.tl_worker", str(hf_dir), str(seq_len),
                       str(reps)], python=str(python), timeout=1800)
