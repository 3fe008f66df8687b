"""OKX v5: WebSocket order book captures (`books`, `books-l2-tbt`, `books50-l2-tbt`, with `bbo-tbt`
and `books5`) replayed exactly under OKX's sequence rules and checked against its CRC32 checksum
and top-of-book channels (`verify-capture`). The recorder subscribes to its streams
(`live`, `market-pipeline capture --exchange okx`). `PIPELINE_SOURCE`/`PIPELINE_SOURCES`
`okx_capture` serves the captures as lake tables (`source`, `capture_tables`): a primary source,
or the reference a bought OKX day is checked against (`source_agreement`)."""

from market_pipeline.vendors.base import Vendor, directory_problem
from market_pipeline.vendors.binance.config import BinanceCaptureConfig


def verify_capture(paths):
    """`verify.verify_capture`, imported when used."""
    from market_pipeline.vendors.okx.verify import verify_capture as replay

    return replay(paths)


def live_feed(market, symbol, depth=None, url=None):
    """`live.feed`, imported when used (the recorder's WebSocket client is not needed otherwise)."""
    from market_pipeline.vendors.okx.live import feed

    return feed(market, symbol, depth, url)


def _build(settings):
    from market_pipeline.vendors.okx.source import OkxCaptureSource

    return OkxCaptureSource(
        settings.capture_dir,
        settings.data_dir / "sources" / "okx_capture",
        settings.lake_dir,
        fidelity_interval_ms=settings.checks.fidelity_sample_interval_ms,
    )


def _problems(settings) -> list[str]:
    return [] if settings.capture_dir is not None else ["PIPELINE_SOURCE=okx_capture needs PIPELINE_CAPTURE_DIR"]


VENDOR = Vendor(
    name="okx_capture",
    description="OKX v5 WebSocket captures (okx_* files in PIPELINE_CAPTURE_DIR)",
    build=_build,
    config=BinanceCaptureConfig,  # the capture settings (PIPELINE_CAPTURE_DIR) are the recorder's, shared
    problems=_problems,
    environment=lambda settings: directory_problem("PIPELINE_CAPTURE_DIR", settings.capture_dir),
    describe=lambda settings: str(settings.capture_dir.resolve()) if settings.capture_dir else "?",
    update_ids=True,  # sequence_number is OKX's seqId
    ticker_time_ns=lambda instrument: 1_000_000,  # bbo-tbt's ts: ms
)
