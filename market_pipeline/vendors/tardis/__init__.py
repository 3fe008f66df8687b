"""Tardis.dev: downloadable CSV datasets (`incremental_book_L2`, `book_snapshot_25`, `trades`) as
the tardis-dev client writes them, served as the lake's `book_delta_v2`, `book` and `trades`."""

from market_pipeline.vendors.base import Vendor, directory_problem
from market_pipeline.vendors.tardis.config import TardisConfig, tardis_problems


def _build(settings):
    from market_pipeline.vendors.tardis.source import TardisSource

    return TardisSource(
        settings.tardis_dir,
        settings.data_dir / "sources" / "tardis",
        settings.lake_dir,
        settings.tardis_exchanges,
        settings.tardis_symbols,
    )


def _describe(settings) -> str:
    where = str(settings.tardis_dir.resolve()) if settings.tardis_dir else "?"
    exchanges = ", ".join(f"{k}={v}" for k, v in sorted(settings.tardis_exchanges.items()))
    overrides = f"; symbols {settings.tardis_symbols}" if settings.tardis_symbols else ""
    return f"{where}; exchanges {exchanges}{overrides}"


VENDOR = Vendor(
    name="tardis",
    description="Tardis.dev CSV datasets (PIPELINE_TARDIS_DIR)",
    build=_build,
    config=TardisConfig,
    problems=tardis_problems,
    environment=lambda settings: directory_problem("PIPELINE_TARDIS_DIR", settings.tardis_dir),
    describe=_describe,
)
