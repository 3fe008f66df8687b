"""market_pipeline: a local-first market-data lake (README.md)."""

from market_pipeline.kernel_cache import use_kernel_cache

# Before any kernel module is imported: numba's cache must not serve kernels of older sources.
use_kernel_cache()
