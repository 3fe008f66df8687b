"""The registry entry of an exchange's capture source (`okx_capture`, `bybit_capture`,
`kraken_capture`): the captures under PIPELINE_CAPTURE_DIR (the recorder's setting, shared), a
cache under `$PIPELINE_DATA_DIR/sources/<name>`, the source class imported only when it is used."""

from __future__ import annotations

from collections.abc import Callable

from market_pipeline.vendors.base import Vendor, VendorSource, directory_problem
from market_pipeline.vendors.binance.config import BinanceCaptureConfig


def capture_vendor(
    name: str,
    description: str,
    source_class: Callable[[], type[VendorSource]],
    *,
    update_ids: bool,
    ticker_time_ns: int | None,
    message_ids: bool = True,
    message_time_ns: int | None = None,
) -> Vendor:
    """`PIPELINE_SOURCE=<name>` over `source_class()` (a `CaptureSource` subclass, imported when
    built); `update_ids`, `ticker_time_ns`, `message_ids` and `message_time_ns` as `Vendor`'s (the
    same for every instrument)."""

    def build(settings) -> VendorSource:
        return source_class()(  # type: ignore[call-arg]
            settings.capture_dir,
            settings.data_dir / "sources" / name,
            settings.lake_dir,
            fidelity_interval_ms=settings.checks.fidelity_sample_interval_ms,
        )

    return Vendor(
        name=name,
        description=description,
        build=build,
        config=BinanceCaptureConfig,  # the capture settings (PIPELINE_CAPTURE_DIR) are the recorder's, shared
        problems=lambda settings: (
            [] if settings.capture_dir is not None else [f"PIPELINE_SOURCE={name} needs PIPELINE_CAPTURE_DIR"]
        ),
        environment=lambda settings: directory_problem("PIPELINE_CAPTURE_DIR", settings.capture_dir),
        describe=lambda settings: str(settings.capture_dir.resolve()) if settings.capture_dir else "?",
        update_ids=update_ids,
        message_ids=message_ids,
        message_time_ns=message_time_ns,
        ticker_time_ns=lambda instrument: ticker_time_ns,
    )
