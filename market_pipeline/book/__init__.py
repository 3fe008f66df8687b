"""Order-book reconstruction: numba kernels over int64 ticks and lots, and their Python glue."""
