"""Scripts run in fresh processes (per-loader peak RSS) or in TransformerLens' own venv."""
