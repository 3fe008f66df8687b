"""Imported in the fork server of the instrument-day workers (`parallel._context`), and nowhere
else: it loads there once what every worker would otherwise load for itself, since a step's
workers are new processes (a run of two instruments on two workers paid it twice a step).

- numba's code generator, which a process loads at the first kernel it runs, even one from the
  on-disk cache: 0.33-0.46 s, against 0.01-0.05 s for each kernel after it (measured:
  `skew_pass._skew_pass` first, then `row_keys._message_candidates` (since replaced), `_mix_column` and
  `delta_replay.replay_lake_batch`).
- pandas, which pyarrow imports (when it is installed) at a process's first `pa.array`: 0.27 s
  alone, 0.5-0.9 s in a worker beside the other one.

The server is single-threaded when it forks, as the workers' use of numba needs.
"""

import pyarrow as pa
from numba import njit


@njit(cache=True)
def _load_code_generator() -> int:
    return 1


_load_code_generator()
pa.array([0])
