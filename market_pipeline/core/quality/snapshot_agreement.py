"""The rebuilt book against the vendor's own snapshots: the rebuild writes one agreement row per
vendor snapshot (`lake/book_agreement`); the figures here read it through lazy scans of the
columns a figure needs, for `validation_reports` and the book checks alike."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from market_pipeline.core.day_clock import hour_of, iso
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.schemas import BOOK_LEVELS
from market_pipeline.core.quality.lake_day import WORST_ROWS, DayFiles

DEVIATION_FIGURES = ("max_mid_dev_ticks", "p99_mid_dev_ticks", "max_mid_dev_bps", "p99_mid_dev_bps")


@dataclass
class AgreementFigures:
    summary: dict[str, object]  # the validation_reports columns of the agreement
    worst: list[dict[str, object]]  # the worst disagreements (`worst_disagreements`)
    divergent: pl.DataFrame  # received_time of the divergences: disagreeing with a book in sync
    hourly_max_ticks: pl.DataFrame  # hour, max |mid deviation| in ticks (snapshot hours only)


def _summary(found: dict[str, object]) -> dict[str, object]:
    n, matched = int(found["n"]), int(found["matched"] or 0)  # type: ignore[call-overload]
    return {
        "vendor_snapshots": n,
        "snapshots_mismatched": n - matched,
        "snapshot_exact_match_share": matched / n if n else None,
        "divergences": int(found["divergences"] or 0),  # type: ignore[call-overload]
        **{k: (float(found[k]) if found[k] is not None else None) for k in DEVIATION_FIGURES},  # type: ignore[arg-type]
        "mismatches_by_level": [int(found[f"level_{level}"] or 0) for level in range(BOOK_LEVELS)],  # type: ignore[call-overload]
        "levels_mismatched_mean": float(found["levels_mismatched_mean"] or 0.0),  # type: ignore[arg-type]
    }


def _scan_agreement(files: DayFiles) -> pl.LazyFrame:
    """The agreement rows beside the vendor snapshots' touch prices, checked to line up."""
    agreement = files.require(files.agreement)
    snapshots = files.require(files.snapshots)
    rows, tops = parquet_io.num_rows(agreement), parquet_io.num_rows(snapshots)
    mismatch = f"{files.agreement} ({rows} rows) does not line up with the vendor snapshots in {files.snapshots}"
    if rows != tops:
        mismatch += f" ({tops} rows)"
    joined = pl.concat(
        [
            parquet_io.scan(agreement),
            parquet_io.scan(snapshots).select(
                pl.col("received_time").alias("_snapshot_received_time"),
                pl.col("sequence_number").alias("_snapshot_sequence_number"),
                "bid_0_price",
                "ask_0_price",
            ),
        ],
        how="horizontal",
    )
    same = rows == tops and (
        rows == 0
        or joined.select(
            (
                (pl.col("received_time") == pl.col("_snapshot_received_time"))
                & (pl.col("sequence_number") == pl.col("_snapshot_sequence_number"))
            ).all()
        )
        .collect(engine="streaming")
        .item()
    )
    if not same:
        raise ValueError(
            f"{files.instrument.key} {files.day}: {mismatch}; re-materialize reconstructed_books for this day"
        )
    return joined.drop("_snapshot_received_time", "_snapshot_sequence_number")


def agreement_figures(files: DayFiles) -> AgreementFigures:
    """Agreement with the vendor snapshots, from scans of the agreement table (a day without one,
    the capture path: no snapshot compared)."""
    if not files.has_agreement:
        nothing = {"n": 0, "matched": 0, "divergences": 0, "levels_mismatched_mean": None}
        nothing |= dict.fromkeys(DEVIATION_FIGURES) | {f"level_{level}": 0 for level in range(BOOK_LEVELS)}
        return AgreementFigures(
            _summary(nothing),
            [],
            pl.DataFrame(schema={"received_time": pl.Int64}),
            pl.DataFrame(schema={"hour": pl.Int32, "max": pl.Float64}),
        )
    scan = _scan_agreement(files)
    tick = float(files.instrument.tick_size)
    ticks = pl.col("mid_deviation_half_ticks").abs() / 2
    bps = (
        pl.col("mid_deviation_half_ticks").abs()
        / 2
        * tick
        / ((pl.col("bid_0_price") + pl.col("ask_0_price")) / 2)
        * 1e4
    )
    mask = pl.col("mismatched_level_mask")  # bit L: level L (bid or ask side) disagreed
    found = (
        scan.select(
            pl.len().alias("n"),
            pl.col("matched").sum().alias("matched"),
            (~pl.col("matched") & pl.col("synced_before")).sum().alias("divergences"),
            ticks.max().alias("max_mid_dev_ticks"),
            ticks.quantile(0.99, "linear").alias("p99_mid_dev_ticks"),
            bps.max().alias("max_mid_dev_bps"),
            bps.quantile(0.99, "linear").alias("p99_mid_dev_bps"),
            *[((mask // (1 << level)) % 2).sum().alias(f"level_{level}") for level in range(BOOK_LEVELS)],
            pl.col("levels_mismatched").filter(~pl.col("matched")).mean().alias("levels_mismatched_mean"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    worst = worst_disagreements(
        scan.filter(~pl.col("matched"))
        .sort([pl.col("mid_deviation_half_ticks").abs(), "levels_mismatched"], descending=True, maintain_order=True)
        .head(WORST_ROWS)
        .collect(engine="streaming")
    )
    divergent = (
        scan.filter(~pl.col("matched") & pl.col("synced_before")).select("received_time").collect(engine="streaming")
    )
    hourly_max = (
        scan.group_by(hour_of("received_time", files.day).alias("hour"))
        .agg((pl.col("mid_deviation_half_ticks").abs().max() / 2).alias("max"))
        .sort("hour")
        .collect(engine="streaming")
    )
    return AgreementFigures(_summary(found), worst, divergent, hourly_max)


def worst_disagreements(rows: pl.DataFrame) -> list[dict[str, object]]:
    """Disagreeing snapshots' agreement rows, as check metadata and report rows."""
    return [
        {
            "received_time": iso(r["received_time"]),
            "sequence_number": r["sequence_number"],
            "mid_deviation_ticks": r["mid_deviation_half_ticks"] / 2,
            "levels_mismatched": r["levels_mismatched"],
            "first_mismatched_level": r["first_mismatched_level"],
            "synced_before": r["synced_before"],
        }
        for r in rows.iter_rows(named=True)
    ]
