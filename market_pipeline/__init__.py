"""market_pipeline: a local-first market-data lake (README.md)."""

from market_pipeline.core.telemetry.memory import fix_mmap_threshold, use_jemalloc_for_arrow
from market_pipeline.kernel_cache import use_kernel_cache

# Before any kernel module is imported: numba's cache must not serve kernels of older sources.
use_kernel_cache()
# Before the first large array: memory must not grow with the days a process works through.
fix_mmap_threshold()
use_jemalloc_for_arrow()
