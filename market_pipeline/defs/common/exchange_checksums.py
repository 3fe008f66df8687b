"""The exchange's own book checksums of an instrument-day (`core/quality/checksums.py`), from the
source that has them: the instrument's primary source, else its `PIPELINE_SOURCES` reference.
`validation_reports` writes them, the `exchange_checksums` check on `reconstructed_books` judges them."""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.checksums import ChecksumFigures
from market_pipeline.defs.common.reference_source import reference_source
from market_pipeline.settings import PipelineSettings
from market_pipeline.vendors.base import VendorSource, exchange_checksums
from market_pipeline.vendors.registry import build_source, source_of


class DayChecksums(NamedTuple):
    figures: ChecksumFigures
    reference: str | None  # the PIPELINE_SOURCES reference that replayed them; None: the primary


def day_checksums(
    settings: PipelineSettings, instrument: Instrument, day: dt.date, source: VendorSource | None = None
) -> DayChecksums | None:
    """The instrument-day's exchange checksums replayed by its primary source (`source`: the
    step's, else built from `settings`), else by its reference source; None when neither has any."""
    primary = source_of(source if source is not None else build_source(settings), instrument)
    figures = exchange_checksums(primary, instrument, day)
    if figures is not None:
        return DayChecksums(figures, None)
    reference = settings.reference_source(instrument.key)
    if reference is not None:
        figures = exchange_checksums(reference_source(settings, reference)[1], instrument, day)
        if figures is not None:
            return DayChecksums(figures, reference)
    return None
