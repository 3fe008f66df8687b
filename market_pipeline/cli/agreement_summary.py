"""The run summary's source agreement lines: one per instrument-day of `main.source_agreement`."""

from __future__ import annotations

import datetime as dt

from market_pipeline.cli.common import days_between, fmt_int, format_table
from market_pipeline.core.lake import warehouse
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline.core.quality.agreement_status import COMPARED

# The reference's messages and trades the vendor lacks, its messages the vendor received later or
# earlier, and its bookTickers the vendor's book agrees with of those judged (exact counts, not a
# rounded share).
HEADERS = ["dt", "instrument", "status", "msgs", "trades", "delayed", "tickers"]


def agreement_rows(target: WarehouseTarget, start: dt.date, end: dt.date) -> list[str]:
    """Table lines of the run's days in `main.source_agreement`, read-only; none when it is absent."""
    if not target.exists():
        return []
    import duckdb

    query = f"SELECT * FROM main.source_agreement WHERE {days_between(start, end)} ORDER BY dt, instrument"
    try:
        with warehouse.connect(target, read_only=True) as con:
            found = con.execute(query).pl()
    except duckdb.CatalogException:  # no reference source configured: no such table
        return []
    except duckdb.Error as exc:
        return [f"  (cannot read {target.describe()}: {exc})"]
    rows = []
    for row in found.iter_rows(named=True):
        matched, differing = row.get("tickers_matched"), row.get("tickers_differing")
        judged = (matched or 0) + (differing or 0)
        rows.append(
            [
                str(row["dt"]),
                row["instrument"],
                row["status"],
                fmt_int(row.get("messages_missing")),
                fmt_int(row.get("trades_missing")),
                fmt_int(row.get("delayed_messages")),
                f"{fmt_int(matched)}/{fmt_int(judged)}" if judged else "-",
            ]
        )
    if not rows:
        return []
    # Why a compared day was matched otherwise than asked (status no_common_ids), or its messages
    # not counted, under the table.
    notes = [
        f"  {row['dt']} {row['instrument']} {row['status']}: {row['note']}"
        for row in found.iter_rows(named=True)
        if row["status"] in COMPARED and row.get("note")
    ]
    return format_table(HEADERS, rows, right=[False] * 3 + [True] * 4) + notes
