"""Observability: OpenTelemetry JSON lines and pipeline_metrics (Prometheus: test_prometheus.py).

One module-scoped Dagster run (one synthetic instrument, two clean days at scale 0.02) feeds
the pipeline_metrics tests; a stand-in `validation_reports` writes known quality figures.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest

from market_pipeline_tests.support.dagster_instance import assets_named, code_location, range_tags
from market_pipeline_tests.support.project import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.slow  # materializations with every exporter: not in `make test-quick`

DAYS = ("2024-03-01", "2024-03-02")
INSTRUMENT = ("BINANCE", "BTC-USDT")
KEY = "BINANCE:BTC-USDT"
TICK, LOT = Decimal("0.01"), Decimal("0.000001")  # config.yaml: BINANCE:BTC-USDT
FAKE_QUALITY = {
    "gaps_detected": 3,
    "gaps_filled": 2,
    "max_mid_dev_bps": 1.5,
    "skew_p99_ms": 12.5,
    "precision_loss_events": 4,
}


def _fake_validation_reports(partitions_def):
    """A stand-in for the quality domain's asset: the contract tables with known values."""
    import dagster as dg

    from market_pipeline.defs.common.resources import DUCKDB_POOL, WAREHOUSE_IO_MANAGER

    @dg.multi_asset(
        outs={
            "validation_reports": dg.AssetOut(io_manager_key=WAREHOUSE_IO_MANAGER, metadata={"partition_expr": "dt"}),
            "validation_reports_hourly": dg.AssetOut(
                io_manager_key=WAREHOUSE_IO_MANAGER, metadata={"partition_expr": "dt"}
            ),
        },
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=DUCKDB_POOL,
    )
    def fake_validation(context):  # not annotated: this module has postponed annotations
        days = [dt.date.fromisoformat(k) for k in context.partition_keys]
        ident = {"dt": days, "exchange": [INSTRUMENT[0]] * len(days), "symbol": [INSTRUMENT[1]] * len(days)}
        daily = pl.DataFrame({**ident, **{k: [v] * len(days) for k, v in FAKE_QUALITY.items()}})
        hourly = pl.DataFrame(
            # `hour` as the hour's start, as the quality domain writes it (an hour of day also works).
            {
                "dt": [d for d in days for _ in range(24)],
                "hour": [dt.datetime.combine(d, dt.time(h)) for d in days for h in range(24)],
                "exchange": INSTRUMENT[0],
                "symbol": INSTRUMENT[1],
                "gaps_detected": [h % 2 for h in range(24)] * len(days),
                "gaps_filled": 0,
                "skew_p99_ms": 3.0,
            }
        )
        yield dg.Output(daily, output_name="validation_reports")
        yield dg.Output(hourly, output_name="validation_reports_hourly")

    return fake_validation


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    import dagster as dg

    root = tmp_path_factory.mktemp("observability")
    data, home = root / "data", root / "dagster_home"
    data.mkdir()
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("PIPELINE_DATA_DIR", str(data))
        mp.setenv("PIPELINE_INSTRUMENTS", KEY)
        mp.setenv("PIPELINE_SYNTHETIC__SCALE", "0.02")
        from market_pipeline.core.telemetry import telemetry
        from market_pipeline.settings import load_settings

        settings = load_settings()
        defs = code_location(settings)
        raw = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "raw_book_ticker", "raw_depth_snapshots")
        days = assets_named(defs, "raw_trades")[0].partitions_def
        assets = [
            *assets_named(defs, *raw, "reconstructed_books", "lake_views"),
            _fake_validation_reports(days),
            *assets_named(defs, "pipeline_metrics"),
        ]
        with dg.DagsterInstance.get() as instance:
            result = dg.materialize(assets, instance=instance, resources=defs.resources, tags=range_tags(*DAYS))
            assert result.success
            records = instance.fetch_materializations(dg.AssetKey("pipeline_metrics"), limit=10).records
            metadata = {
                r.asset_materialization.partition: {k: v.value for k, v in r.asset_materialization.metadata.items()}
                for r in records
            }
            telemetry.shutdown()
            yield {
                "data": data,
                "home": home,
                "settings": settings,
                "instance": instance,
                "metadata": metadata,
                "assets": assets,
                "defs": defs,
            }
        telemetry.shutdown()


def _table(data: Path, name: str) -> pl.DataFrame:
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT * FROM main.{name} ORDER BY ALL").pl()


# ---------------------------------------------------------------------------------------
# OpenTelemetry JSON lines
# ---------------------------------------------------------------------------------------


def test_jsonl_metrics_after_materialization(run):
    from market_pipeline.core.telemetry.otlp_json import read_points

    points = read_points(run["data"] / "metrics")
    names = {p["name"] for p in points}
    assert {
        "mdp_source_items_total",
        "mdp_book_deltas_applied_total",
        "mdp_sequence_gaps_total",
        "mdp_gaps_filled_total",
        "mdp_precision_loss_total",
        "mdp_clock_skew_seconds",
        "mdp_stage_duration_seconds",
        "mdp_peak_memory_bytes",
        "mdp_sink_commit_seconds",
    } <= names

    def total(name, **attrs):
        return sum(
            p["value"]
            for p in points
            if p["name"] == name and all(p["attributes"].get(k) == v for k, v in attrs.items())
        )

    deltas = pl.read_parquet(run["data"] / "lake/raw/book_delta_v2/*/*/*/*.parquet", hive_partitioning=False)
    trades = pl.read_parquet(run["data"] / "lake/raw/trades/*/*/*/*.parquet", hive_partitioning=False)
    # Delta temporality: the lines of every export sum to the run's totals.
    assert total("mdp_source_items_total", table="book_delta_v2", instrument=KEY) == deltas.height
    assert total("mdp_source_items_total", table="trades", instrument=KEY) == trades.height
    assert total("mdp_book_deltas_applied_total", instrument=KEY) == deltas.height  # clean days: every row applies
    assert total("mdp_sequence_gaps_total", instrument=KEY, kind="sequence_gap") == 0
    stages = {p["attributes"]["stage"] for p in points if p["name"] == "mdp_stage_duration_seconds"}
    assert {"raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books", "pipeline_metrics"} <= stages
    durations = [
        p
        for p in points
        if p["name"] == "mdp_stage_duration_seconds" and p["attributes"]["stage"] == "reconstructed_books"
    ]
    assert sum(p["count"] for p in durations) == len(DAYS)
    skew = [p for p in points if p["name"] == "mdp_clock_skew_seconds"]
    per_day = [pl.read_parquet(f).height for f in sorted((run["data"] / "lake/raw/book_delta_v2").rglob("*.parquet"))]
    assert sum(p["count"] for p in skew) == sum(min(10_000, n) for n in per_day)  # the documented sample
    memory = [p for p in points if p["name"] == "mdp_peak_memory_bytes"]
    assert memory and all(p["value"] > 10 * 2**20 for p in memory)  # a Python process with numba: > 10 MB
    record = json.loads((next((run["data"] / "metrics").glob("mdp-*.jsonl"))).read_text().splitlines()[0])
    resource = {a["key"]: a["value"] for a in record["resourceMetrics"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "market_pipeline"}


def test_short_lived_process_exports_on_exit(tmp_path: Path):
    """A step process that records and exits (no flush) still leaves its metrics on disk."""
    code = (  # a step process: its pipeline resource hands telemetry the environment's settings
        "from market_pipeline.core import context\n"
        "from market_pipeline.core.telemetry import telemetry\n"
        "from market_pipeline.defs.common.resources import core_context\n"
        "from market_pipeline.settings import load_settings\n"
        "with context.using(core_context(load_settings())):  # what the step's pipeline resource does\n"
        "    telemetry.count('mdp_alerts_sent_total', 2, channel='webhook', outcome='sent')\n"
        "    telemetry.gauge('mdp_peak_memory_bytes', 123, stage='x')\n"
    )
    env = subprocess_env(PIPELINE_DATA_DIR=str(tmp_path), PIPELINE_METRICS__EXPORT_INTERVAL_SECONDS="3600")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, timeout=60)
    from market_pipeline.core.telemetry.otlp_json import read_points

    points = read_points(tmp_path / "metrics")
    assert [(p["name"], p["value"], p["attributes"]) for p in points if p["name"] == "mdp_alerts_sent_total"] == [
        ("mdp_alerts_sent_total", 2.0, {"channel": "webhook", "outcome": "sent"})
    ]
    assert any(p["name"] == "mdp_peak_memory_bytes" and p["value"] == 123 for p in points)


def test_every_jsonl_line_is_valid_otlp(tmp_path: Path):
    """Each line parses with opentelemetry-proto's own JSON mapping into ExportMetricsServiceRequest
    (unknown fields refused), and the parsed message holds what was recorded: proof that any
    OTLP tool can read the files."""
    json_format = pytest.importorskip("google.protobuf.json_format", reason="protobuf (the dev extra)")
    service = pytest.importorskip(
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2", reason="opentelemetry-proto (the dev extra)"
    )
    code = (  # a counter, a histogram and a gauge, exported twice by one process
        "from market_pipeline.core import context\n"
        "from market_pipeline.core.telemetry import telemetry\n"
        "from market_pipeline.defs.common.resources import core_context\n"
        "from market_pipeline.settings import load_settings\n"
        "with context.using(core_context(load_settings())):  # what the step's pipeline resource does\n"
        "    telemetry.count('mdp_alerts_sent_total', 2, channel='webhook', outcome='sent')\n"
        "    telemetry.observe('mdp_stage_duration_seconds', 0.25, stage='raw_trades', instrument='BINANCE:BTC-USDT')\n"
        "    telemetry.observe('mdp_stage_duration_seconds', 3.5, stage='raw_trades', instrument='BINANCE:BTC-USDT')\n"
        "    telemetry.flush()\n"
        "    telemetry.gauge('mdp_peak_memory_bytes', 123, stage='x')\n"
    )
    env = subprocess_env(PIPELINE_DATA_DIR=str(tmp_path), PIPELINE_METRICS__EXPORT_INTERVAL_SECONDS="3600")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, check=True, timeout=60)
    lines = [
        line for path in sorted((tmp_path / "metrics").glob("mdp-*.jsonl")) for line in path.read_text().splitlines()
    ]
    assert len(lines) >= 2
    metrics = {}
    for line in lines:
        request = json_format.Parse(line, service.ExportMetricsServiceRequest())  # ParseError if not OTLP/JSON
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    metrics.setdefault(metric.name, []).append(metric)
    (counter,) = metrics["mdp_alerts_sent_total"]
    assert counter.sum.is_monotonic and counter.sum.aggregation_temporality == 1  # delta
    assert [p.as_double or p.as_int for p in counter.sum.data_points] == [2]
    (histogram,) = metrics["mdp_stage_duration_seconds"]
    (point,) = histogram.histogram.data_points
    assert (point.count, point.sum, histogram.histogram.aggregation_temporality) == (2, 3.75, 1)
    assert len(point.bucket_counts) == len(point.explicit_bounds) + 1 and sum(point.bucket_counts) == 2
    (gauge,) = metrics["mdp_peak_memory_bytes"]
    assert [p.as_double or p.as_int for p in gauge.gauge.data_points] == [123]
    assert {a.key: a.value.string_value for a in gauge.gauge.data_points[0].attributes} == {"stage": "x"}


def test_metric_names_need_prefix_and_kind(monkeypatch, tmp_path: Path):
    from market_pipeline.core.telemetry import telemetry

    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="mdp_"):
        telemetry.count("alerts_sent_total")
    with pytest.raises(ValueError, match="is a histogram"):
        telemetry.count("mdp_clock_skew_seconds")
    with pytest.raises(ValueError, match="must end with '_total'"):  # Prometheus would name it mdp_rows_total
        telemetry.count("mdp_rows")
    telemetry.shutdown()


def test_every_metric_is_documented():
    from market_pipeline.core.telemetry.telemetry import METRICS

    doc = (REPO_ROOT / "docs" / "metrics.md").read_text()
    missing = [name for name in METRICS if f"`{name}`" not in doc]
    assert not missing, f"not in docs/metrics.md: {missing}"
    dashboard = json.loads((REPO_ROOT / "docs" / "grafana" / "market_pipeline.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for name in (
        "mdp_source_items_total",
        "mdp_sequence_gaps_total",
        "mdp_clock_skew_seconds",
        "mdp_alerts_sent_total",
    ):
        assert name in exprs


# ---------------------------------------------------------------------------------------
# pipeline_metrics
# ---------------------------------------------------------------------------------------


def test_pipeline_metrics_rows(run):
    daily = _table(run["data"], "pipeline_metrics")
    hourly = _table(run["data"], "pipeline_metrics_hourly")
    assert daily.select("dt", "exchange", "symbol").rows() == [(dt.date.fromisoformat(d), *INSTRUMENT) for d in DAYS]
    assert hourly.height == 24 * len(DAYS)
    # Typed explicitly, so a column that is null on a first run cannot fix a wrong table type.
    assert daily.schema["reconstructed_books_seconds"] == pl.Float64 and daily.schema["book_batches"] == pl.Int64
    assert daily.schema["spread_p50_ticks"] == pl.Int64 and daily.schema["p99_mid_dev_ticks"] == pl.Float64
    for row in daily.iter_rows(named=True):
        for stage in ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books"):
            assert row[f"{stage}_seconds"] > 0 and row[f"{stage}_events_per_s"] > 0 and row[f"{stage}_peak_rss_mb"] > 0
        assert row["book_start_mode"] == "first_vendor_snapshot"  # synthetic days never continue
        assert row["book_batches"] >= 1 and row["checkpoint_written"] is True
        for column, value in FAKE_QUALITY.items():  # taken from validation_reports, not recomputed
            assert row[column] == value
        assert row["p99_mid_dev_ticks"] is None  # a contract column the stand-in did not fill
        assert row["trades"] > 0 and row["book_messages"] > row["trades"]
        assert row["trade_to_book_ratio"] == pytest.approx(row["trades"] / row["book_messages"])
        ranked = sum(row[c] for c in daily.columns if c.startswith("updates_per_s_rank_")) * 86_400
        assert ranked + row["book_updates_unranked"] == pytest.approx(
            hourly.filter(pl.col("dt") == row["dt"])["book_delta_rows"].sum()
        )
        assert row["updates_per_s_rank_0"] > 0
    assert hourly["gaps_detected"].to_list() == [h % 2 for h in range(24)] * len(DAYS)
    meta = run["metadata"][DAYS[0]]
    assert meta["rows"] == 1 and meta["validation_reports_found"] is True
    first = daily.row(0, named=True)
    assert meta[f"{KEY} spread_p50_ticks"] == first["spread_p50_ticks"]
    assert meta[f"{KEY} gaps_detected"] == FAKE_QUALITY["gaps_detected"]


def _truth_figures(path: Path) -> tuple[list[int], dict[int, float], pl.DataFrame]:
    """Spread quantiles and depth within N bps, computed independently from the true book."""
    truth = pl.read_parquet(path)
    tick, lot = float(TICK), float(LOT)

    def matrix(side, field, step):
        return np.column_stack(
            [np.rint(truth[f"{side}_{i}_{field}"].to_numpy().astype(float) / step) for i in range(20)]
        )

    bt, bl, at, al = (
        matrix("bid", "price", tick),
        matrix("bid", "size", lot),
        matrix("ask", "price", tick),
        matrix("ask", "size", lot),
    )
    ok = ~np.isnan(bt[:, 0]) & ~np.isnan(at[:, 0])
    bt, bl, at, al = bt[ok], bl[ok], at[ok], al[ok]
    spread = (at[:, 0] - bt[:, 0]).astype(np.int64)
    quantiles = [int(np.quantile(spread, q, method="inverted_cdf")) for q in (0.5, 0.9, 0.99)]
    mid2 = (bt[:, 0] + at[:, 0])[:, None]
    depth = {}
    for bps in (5, 10, 25):
        within = lambda t, s, bps=bps: np.where(~np.isnan(t) & (np.abs(2 * t - mid2) * 10_000 <= bps * mid2), s, 0)  # noqa: E731
        depth[bps] = (within(bt, bl).sum(axis=1) + within(at, al).sum(axis=1)) * lot
    day_start = int(truth["received_time"][0] // (86_400 * 10**9)) * 86_400 * 10**9
    hours = np.clip((truth["received_time"].to_numpy()[ok] - day_start) // (3_600 * 10**9), 0, 23)
    hourly = (
        pl.DataFrame({"hour": hours, **{f"d{b}": depth[b] for b in depth}})
        .group_by("hour")
        .agg(pl.len().alias("snapshots"), *[pl.col(f"d{b}").mean().alias(f"depth_{b}bps_mean") for b in depth])
        .sort("hour")
    )
    return quantiles, {b: float(v.mean()) for b, v in depth.items()}, hourly


def test_microstructure_matches_ground_truth(run):
    daily = _table(run["data"], "pipeline_metrics")
    hourly = _table(run["data"], "pipeline_metrics_hourly")
    for day in DAYS[:1]:  # one day keeps the test quick; both days share the code path
        truth_path = (
            run["data"]
            / "sources/synthetic/_ground_truth/synthetic"
            / f"exchange={INSTRUMENT[0]}"
            / f"symbol={INSTRUMENT[1]}"
            / f"dt={day}"
            / "truth_book.parquet"
        )
        quantiles, depth, truth_hourly = _truth_figures(truth_path)
        row = daily.filter(pl.col("dt") == dt.date.fromisoformat(day)).row(0, named=True)
        assert row["snapshots"] == truth_hourly["snapshots"].sum()
        assert [row["spread_p50_ticks"], row["spread_p90_ticks"], row["spread_p99_ticks"]] == quantiles
        for bps, mean in depth.items():
            assert row[f"depth_{bps}bps_mean"] == pytest.approx(mean, rel=1e-9)
        assert depth[5] <= depth[10] <= depth[25] and depth[25] > 0
        ours = hourly.filter(pl.col("dt") == dt.date.fromisoformat(day)).sort("hour")
        assert ours["snapshots"].to_list() == truth_hourly["snapshots"].to_list()
        for bps in (5, 10, 25):
            np.testing.assert_allclose(
                ours[f"depth_{bps}bps_mean"].to_numpy(), truth_hourly[f"depth_{bps}bps_mean"].to_numpy(), rtol=1e-9
            )


def test_rematerializing_a_range_replaces_its_rows(run):
    import dagster as dg

    warehouse = run["data"] / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:  # mark every row: only re-materialized rows lose the mark
        con.execute("UPDATE main.pipeline_metrics SET trades = -1")
        con.execute("UPDATE main.pipeline_metrics_hourly SET trades = -1")
    before = _table(run["data"], "pipeline_metrics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(run["home"]))
        mp.setenv("PIPELINE_DATA_DIR", str(run["data"]))
        mp.setenv("PIPELINE_INSTRUMENTS", KEY)
        result = dg.materialize(
            run["assets"],
            selection=dg.AssetSelection.assets(*assets_named(run["defs"], "pipeline_metrics")),
            instance=run["instance"],
            resources=run["defs"].resources,
            tags=range_tags(DAYS[1], DAYS[1]),
        )
        from market_pipeline.core.telemetry import telemetry

        telemetry.shutdown()
    assert result.success
    after = _table(run["data"], "pipeline_metrics")
    hourly = _table(run["data"], "pipeline_metrics_hourly")
    assert after.height == before.height == len(DAYS)
    assert after.filter(pl.col("dt") == dt.date.fromisoformat(DAYS[0]))["trades"].to_list() == [-1]
    assert after.filter(pl.col("dt") == dt.date.fromisoformat(DAYS[1]))["trades"].to_list()[0] > 0
    assert hourly.height == 24 * len(DAYS)
    assert set(hourly.filter(pl.col("trades") == -1)["dt"].to_list()) == {dt.date.fromisoformat(DAYS[0])}
