"""Side-by-side benchmarks of torch-mi against HuggingFace transformers and TransformerLens.

Run ``python -m benchmarks`` (see ``--help``); results go to benchmarks/results/latest.json
and docs/benchmarks.md.
"""
