"""Developer tooling, never imported by the product: ``python -m pipeline.tools {bench,
bench-ensemble, soak}``."""
