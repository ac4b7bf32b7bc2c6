"""Developer tooling, never imported by the product: ``python -m pipeline.tools {bench, prepare,
plan-check, bench-ensemble, soak, formats, score}``."""
