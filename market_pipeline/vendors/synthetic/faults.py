"""Vendor-feed faults injected into the synthetic lake, each recorded for the tests and checks.

Faults that pick messages pick them by sequence number before the day is simulated, so they can
be applied block by block while the day streams to disk. The picks are distinct even offsets
from the first sequence number: no message carries two faults, and the partner of a swapped
message (the next, odd offset) is never itself a target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path

import numpy as np

from market_pipeline.vendors.synthetic.config import FaultSettings

FAULT_NAMES = (
    "dropped_messages",
    "clock_skew_episodes",
    "off_grid_prices",
    "float_noise_prices",
    "duplicated_rows",
    "out_of_order_rows",
    "truncated_file",
    "dropped_trades",
    "stale_snapshots",
)

_OFF_GRID_TICKS = Decimal("0.37")
_SECOND = 1_000_000_000
_DAY = 86_400 * _SECOND
# Targets stay in the first 90% of the expected messages, so the day always has them.
_TARGET_SPAN = 0.9


@dataclass
class DeltaRows:
    """book_delta_v2 rows in file order; tick is the exact price behind the float one."""

    origin_time: np.ndarray
    received_time: np.ndarray
    sequence_number: np.ndarray
    side_is_bid: np.ndarray
    price: np.ndarray
    size: np.ndarray
    tick: np.ndarray

    def __len__(self) -> int:
        return len(self.sequence_number)

    def take(self, index: np.ndarray | slice) -> DeltaRows:
        return DeltaRows(*(getattr(self, f.name)[index] for f in fields(self)))

    def copy(self) -> DeltaRows:
        return DeltaRows(*(getattr(self, f.name).copy() for f in fields(self)))

    @staticmethod
    def concat(first: DeltaRows, second: DeltaRows) -> DeltaRows:
        return DeltaRows(*(np.concatenate([getattr(first, f.name), getattr(second, f.name)]) for f in fields(first)))


def _instants(rng: np.random.Generator, count: int, day_start_ns: int) -> list[int]:
    """`count` instants of the day, in order, within the first 90% of it."""
    return sorted(day_start_ns + int(x) for x in rng.integers(_SECOND, int(_DAY * _TARGET_SPAN), size=count))


@dataclass(frozen=True)
class _Target:
    sequence_number: int
    row_pick: float  # which row of the message, as a fraction of its rows
    ulps: int  # float noise only: signed number of ulps


class FaultInjector:
    def __init__(
        self,
        faults: FaultSettings,
        rng: np.random.Generator,
        first_sequence: int,
        expected_messages: int,
        day_start_ns: int,
        tick_size: Decimal,
    ):
        self._tick = tick_size
        counts = {
            "dropped_messages": faults.dropped_messages,
            "off_grid_prices": faults.off_grid_prices,
            "float_noise_prices": faults.float_noise_prices,
            "duplicated_rows": faults.duplicated_rows,
            "out_of_order_rows": faults.out_of_order_rows,
        }
        wanted = sum(counts.values())
        slots = max(0, int(expected_messages * _TARGET_SPAN) // 2 - 1)
        if wanted > slots:
            raise ValueError(f"a day of ~{expected_messages} messages cannot hold {wanted} faulty messages")
        offsets = 2 * (1 + rng.choice(slots, size=wanted, replace=False))
        picks = rng.random(wanted)
        ulps = rng.integers(1, 5, size=wanted) * rng.choice([-1, 1], size=wanted)
        self._targets: dict[str, dict[int, _Target]] = {}
        at = 0
        for name, count in counts.items():
            chosen = {}
            for i in range(at, at + count):
                seq = first_sequence + int(offsets[i])
                chosen[seq] = _Target(seq, float(picks[i]), int(ulps[i]))
            self._targets[name] = chosen
            at += count

        self.records: dict[str, list[dict]] = {name: [] for name in FAULT_NAMES}
        self._episodes = self.records["clock_skew_episodes"]
        n = faults.clock_skew_episodes
        for i in range(n):
            slot_start, slot_len = day_start_ns + i * _DAY // n, _DAY // n
            length = min(int(rng.uniform(60, 600) * _SECOND), slot_len // 2)
            start = slot_start + _SECOND + int(rng.integers(0, slot_len - length - _SECOND))
            # Alternating signs: a clock ahead of the exchange, then one behind it.
            if i % 2 == 0:
                skew = int(rng.uniform(2, 5) * _SECOND)
            else:
                skew = -int(rng.uniform(0.5, 2) * _SECOND)
            self._episodes.append(
                {
                    "start_origin_time": start,
                    "end_origin_time": start + length,
                    "skew_ns": skew,
                    "delta_rows": 0,
                    "book_rows": 0,
                }
            )
        self._truncate = faults.truncated_file
        self._held: DeltaRows | None = None
        # Trades and snapshots are picked by time: the first one at or after each drawn instant
        # (drawn last, so the picks above are the same with these faults on or off).
        self._trade_times = _instants(rng, faults.dropped_trades, day_start_ns)
        self._stale_times = _instants(rng, faults.stale_snapshots, day_start_ns)
        self._last_snapshot: tuple[np.ndarray, ...] | None = None

    def drop_trades(self, origin: np.ndarray, trade_ids: np.ndarray, received: np.ndarray) -> np.ndarray:
        """The indices of a block's trades to keep (trades in origin order); dropped ones recorded."""
        due = self._due(self._trade_times, origin)
        for i in due:
            self.records["dropped_trades"].append(
                {"trade_id": str(trade_ids[i]), "origin_time": int(origin[i]), "received_time": int(received[i])}
            )
        return np.delete(np.arange(len(origin)), due)

    def stale_book(self, origin: np.ndarray, seq: np.ndarray, levels: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """A block's snapshot levels (bid ticks, bid sizes, ask ticks, ask sizes; level-major) with the
        picked snapshots showing the levels of the snapshot before. A pick is the first snapshot at or
        after its instant whose top of book differs from the one before, so that the damage shows
        against the exchange's bookTicker (a stale copy of an unchanged top would not)."""
        previous = self._last_snapshot
        if not len(origin):
            return levels
        tops = np.stack([a[0] for a in levels])  # (4, n): best bid tick and size, best ask tick and size
        before_first = np.array([b[0] for b in previous]) if previous is not None else tops[:, 0]
        changed = np.flatnonzero(np.any(tops != np.column_stack([before_first, tops[:, :-1]]), axis=0))
        self._last_snapshot = tuple(a[:, -1].copy() for a in levels)
        picked: list[int] = []
        while self._stale_times and self._stale_times[0] <= origin[-1]:
            at = int(np.searchsorted(changed, np.searchsorted(origin, self._stale_times[0])))
            while at < len(changed) and int(changed[at]) in picked:
                at += 1
            if at == len(changed):
                break  # no change left in this block: the instant waits for the next one
            self._stale_times.pop(0)
            picked.append(int(changed[at]))
        if not picked:
            return levels
        shown = tuple(a.copy() for a in levels)
        for i in sorted(picked):
            before = tuple(a[:, i - 1] for a in levels) if i > 0 else previous
            assert before is not None  # the day's first snapshot has no change to show
            for a, b in zip(shown, before, strict=True):
                a[:, i] = b
            self.records["stale_snapshots"].append({"sequence_number": int(seq[i]), "origin_time": int(origin[i])})
        return shown

    @staticmethod
    def _due(instants: list[int], origin: np.ndarray) -> list[int]:
        """Indices of the rows first at or after each pending instant that this block reaches (one
        row per instant, distinct); those instants are consumed."""
        picked: list[int] = []
        while instants and len(origin) and instants[0] <= origin[-1]:
            i = int(np.searchsorted(origin, instants.pop(0)))
            while i in picked and i + 1 < len(origin):
                i += 1
            if i not in picked:
                picked.append(i)
        return sorted(picked)

    def push(self, rows: DeltaRows) -> DeltaRows:
        """Faulted rows ready for the file; a message whose swap partner is still to come waits."""
        if self._held is not None:
            rows = DeltaRows.concat(self._held, rows)
            self._held = None
        if len(rows) == 0:
            return rows
        seq = rows.sequence_number
        if int(seq[-1]) in self._targets["out_of_order_rows"]:
            cut = int(np.searchsorted(seq, seq[-1]))
            self._held = rows.take(slice(cut, None))
            rows = rows.take(slice(0, cut))
        return self._apply(rows)

    def finish(self) -> DeltaRows | None:
        held, self._held = self._held, None
        return None if held is None else self._apply(held)

    def skew_book(self, origin: np.ndarray, received: np.ndarray) -> np.ndarray:
        """Book received times under the skew episodes.

        May run beside push() in another thread: it only touches the episodes' book_rows.
        """
        received = received.copy()
        for episode in self._episodes:
            hit = self._skew(episode, origin, received)
            episode["book_rows"] += hit
        return received

    def truncate(self, tmp_file: Path, final_file: Path, root: Path) -> None:
        """Cut the delta file to half its bytes before it is renamed into place."""
        if not self._truncate:
            return
        size = tmp_file.stat().st_size
        os.truncate(tmp_file, size // 2)
        self.records["truncated_file"].append(
            {
                "table": "book_delta_v2",
                "path": final_file.relative_to(root).as_posix(),
                "original_bytes": size,
                "truncated_bytes": size // 2,
            }
        )

    @staticmethod
    def _skew(episode: dict, origin: np.ndarray, received: np.ndarray) -> int:
        hit = (origin >= episode["start_origin_time"]) & (origin < episode["end_origin_time"])
        received[hit] = origin[hit] + episode["skew_ns"]
        return int(hit.sum())

    def _apply(self, rows: DeltaRows) -> DeltaRows:
        if len(rows) == 0:
            return rows
        seq = rows.sequence_number
        starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])
        ends = np.r_[starts[1:], len(seq)]
        msg_seq = seq[starts]
        first, last = int(msg_seq[0]), int(msg_seq[-1])

        def here(name: str) -> list[tuple[_Target, int, int]]:
            found = []
            for seq_number, target in self._targets[name].items():
                if first <= seq_number <= last:
                    i = int(np.searchsorted(msg_seq, seq_number))
                    found.append((target, int(starts[i]), int(ends[i])))
            return sorted(found, key=lambda item: item[1])

        def row_of(target: _Target, start: int, end: int) -> int:
            return start + int(target.row_pick * (end - start))

        off_grid, noise = here("off_grid_prices"), here("float_noise_prices")
        swaps, duplicated = here("out_of_order_rows"), here("duplicated_rows")
        dropped = here("dropped_messages")
        origin = rows.origin_time
        episodes = [
            e for e in self._episodes if e["start_origin_time"] <= origin[-1] and e["end_origin_time"] > origin[0]
        ]
        if not (off_grid or noise or swaps or duplicated or dropped or episodes):
            return rows

        rows = rows.copy()  # the caller's arrays stay clean
        for target, start, end in off_grid:
            r = row_of(target, start, end)
            true_price = float(rows.price[r])
            rows.price[r] = float((Decimal(int(rows.tick[r])) + _OFF_GRID_TICKS) * self._tick)
            self.records["off_grid_prices"].append(self._row_record(rows, r, true_price=true_price))
        for target, start, end in noise:
            r = row_of(target, start, end)
            true_price = float(rows.price[r])
            direction = np.inf if target.ulps > 0 else -np.inf
            noisy = rows.price[r]
            for _ in range(abs(target.ulps)):
                noisy = np.nextafter(noisy, direction)
            rows.price[r] = noisy
            self.records["float_noise_prices"].append(
                self._row_record(rows, r, true_price=true_price, ulps=target.ulps)
            )
        for episode in episodes:
            episode["delta_rows"] += self._skew(episode, rows.origin_time, rows.received_time)

        order = np.arange(len(seq))
        for target, start, end in swaps:
            after = int(ends[np.searchsorted(starts, end)])
            order[start:after] = np.r_[np.arange(end, after), np.arange(start, end)]
            self.records["out_of_order_rows"].append(
                {"sequence_numbers": [target.sequence_number, target.sequence_number + 1]}
            )
        if duplicated:
            positions = []
            for target, start, end in duplicated:
                r = row_of(target, start, end)
                positions.append(int(np.flatnonzero(order == r)[0]) + 1)
                self.records["duplicated_rows"].append(self._row_record(rows, r))
            order = np.insert(order, positions, order[np.array(positions) - 1])
        if dropped:
            for target, start, end in dropped:
                self.records["dropped_messages"].append(
                    {
                        "sequence_number": target.sequence_number,
                        "origin_time": int(rows.origin_time[start]),
                        "rows": end - start,
                    }
                )
            gone = np.isin(seq[order], [target.sequence_number for target, _, _ in dropped])
            order = order[~gone]
        return rows.take(order)

    @staticmethod
    def _row_record(rows: DeltaRows, r: int, **extra: object) -> dict:
        return {
            "sequence_number": int(rows.sequence_number[r]),
            "side_is_bid": bool(rows.side_is_bid[r]),
            "price": float(rows.price[r]),
            "size": float(rows.size[r]),
            **extra,
        }
