"""Small helpers every layer may use, torch-free: lazy re-exports (``lazy``), the duration
parser (``durations``), matplotlib for files (``figures``), the CPU cores (``machine``) and the
allocator tuning (``allocator``)."""
