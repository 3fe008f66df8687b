"""Raw Binance WebSocket captures -> Crypto Lake shaped columnar tables.

A capture is text, one message a line: ``<local receive time, ns since epoch> <raw JSON>``. The JSON
is a combined-stream message ``{"stream": "btcusdt@depth@0ms", "data": {...}}`` (depth diff,
``@bookTicker`` or ``@trade``) or a REST depth snapshot ``{"lastUpdateId": ..., "bids": ...,
"asks": ...}``. Files may be gzip-compressed.

Two views of the same lines:

* ``iter_messages`` yields the decoded JSON untouched, so prices and sizes stay exact decimal
  strings (the Decimal reference replay in the tests uses it);
* ``parse_capture`` builds polars tables with the schemas of ``market_pipeline.core.lake.schemas``
  (prices and sizes as float64, times as int64 ns). Every table keeps the capture's line order;
  ``book_delta_v2``, ``depth_snapshot`` and ``book_ticker`` also carry ``line_no`` (the 0-based
  line index in the concatenated input) as their last column, so a replay can interleave them
  exactly as captured: the REST snapshot line arrives a few diffs after the diffs that bracket
  its ``lastUpdateId``, and receive times are not a reliable order key across streams.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import polars as pl

from market_pipeline.core.errors import CaptureError
from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_LEVELS,
    BOOK_SCHEMA,
    BOOK_TICKER_SCHEMA,
    CAPTURE_DELTA_EXTRA_SCHEMA,
    DEPTH_SNAPSHOT_SCHEMA,
    TRADES_SCHEMA,
)

MARKETS = ("spot", "usdm", "coinm")

# Crypto Lake exchange names; coin-margined contracts are cryptofeed's BINANCE_DELIVERY.
LAKE_EXCHANGES = {"spot": "BINANCE", "usdm": "BINANCE_FUTURES", "coinm": "BINANCE_DELIVERY"}

# Binance spells a pair as base+quote with no separator; the quote is recognised by suffix.
# Longest first so that e.g. FDUSD/USDT win over USD.
KNOWN_QUOTES = tuple(
    sorted(
        (
            "USDT",
            "USDC",
            "FDUSD",
            "BUSD",
            "TUSD",
            "USDP",
            "DAI",
            "USD",
            "BTC",
            "ETH",
            "BNB",
            "XRP",
            "TRX",
            "DOGE",
            "EUR",
            "TRY",
            "BRL",
            "GBP",
            "AUD",
            "JPY",
            "RUB",
            "UAH",
            "ZAR",
            "PLN",
            "ARS",
            "MXN",
        ),
        key=len,
        reverse=True,
    )
)

NS_PER_MS = 1_000_000
NS_PER_DAY = 86_400 * 1_000_000_000
_GZIP_MAGIC = b"\x1f\x8b"

# JSON fields each message kind must carry (others are ignored).
_REQUIRED = {
    "diff": frozenset(("E", "U", "u", "b", "a")),
    "ticker": frozenset(("u", "b", "B", "a", "A")),
    "trade": frozenset(("t", "p", "q", "T", "m")),
    "snapshot": frozenset(("lastUpdateId", "bids", "asks")),
}
# Combined-stream channel (the part after the first '@' and before any '@speed') -> kind.
# Partial-depth streams (depth5/10/20) are snapshots of the top, not diffs: they are rejected.
_CHANNEL_KINDS = {"depth": "diff", "bookTicker": "ticker", "trade": "trade"}

DELTA_SCHEMA: dict[str, pl.DataType] = {
    **BOOK_DELTA_SCHEMA,
    **CAPTURE_DELTA_EXTRA_SCHEMA,
    "line_no": pl.Int64(),
}
SNAPSHOT_LEVELS_SCHEMA: dict[str, pl.DataType] = {**DEPTH_SNAPSHOT_SCHEMA, "line_no": pl.Int64()}
TICKER_SCHEMA: dict[str, pl.DataType] = {**BOOK_TICKER_SCHEMA, "line_no": pl.Int64()}


class CaptureFormatError(CaptureError, ValueError):
    """A capture line (or file) that cannot be read; names the file and the 1-based line in it."""

    def __init__(self, path: Path | str, line_number: int | None, reason: str) -> None:
        self.path = Path(path)
        self.line_number = line_number
        self.reason = reason
        where = f"{self.path}:{line_number}" if line_number is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


def open_capture(path: Path) -> IO[bytes]:
    """Open a capture for binary line reading, gunzipping when the file starts with the gzip magic.

    The single place files are opened. Encrypted files (``market_pipeline.core.security.crypto``,
    recognised by their header, whatever the name) are decrypted on the fly with
    PIPELINE_MASTER_KEY; each chunk is authenticated before it is read.
    """
    from market_pipeline.core.security import crypto

    with open(path, "rb") as probe:
        magic = probe.read(len(crypto.MAGIC))
    if crypto.is_encrypted(magic):
        return _open_encrypted_capture(Path(path))
    if magic[: len(_GZIP_MAGIC)] == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115 - the caller closes it


class _GzipClosingSource(gzip.GzipFile):
    """A GzipFile that also closes the stream it reads (GzipFile leaves a passed fileobj open)."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__(fileobj=source, mode="rb")
        self._source = source

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._source.close()


def _open_encrypted_capture(path: Path) -> IO[bytes]:
    from market_pipeline.core.security import crypto

    plain = None
    try:
        plain = crypto.open_decrypted(path)
        head = plain.peek(len(_GZIP_MAGIC))[: len(_GZIP_MAGIC)]  # authenticates the first chunk
    except crypto.MasterKeyError as exc:
        raise CaptureFormatError(path, None, f"encrypted capture: {exc}") from None
    except crypto.DecryptionError as exc:
        if plain is not None:
            plain.close()
        raise CaptureFormatError(path, None, exc.reason) from None
    return _GzipClosingSource(plain) if head == _GZIP_MAGIC else plain  # type: ignore[return-value]


# --- instrument naming -------------------------------------------------------------------------


def binance_market_of(path: Path | str) -> str | None:
    """Market from a capture file name ``binance_{spot,usdm,coinm}_...``; None when not named so."""
    parts = Path(path).name.lower().split("_")
    if len(parts) > 1 and parts[0] == "binance" and parts[1] in MARKETS:
        return parts[1]
    return None


def market_of_diff(diff: dict[str, Any]) -> str:
    """Market from a diff's shape: futures diffs chain with ``pu``; COIN-M pairs end in USD."""
    if "pu" not in diff:
        return "spot"
    pair = str(diff.get("s", "")).upper().split("_")[0]
    return "coinm" if pair.endswith("USD") else "usdm"


def split_pair(pair: str) -> tuple[str, str]:
    """``BTCUSDT`` -> (``BTC``, ``USDT``) by the known quote assets."""
    pair = pair.upper()
    for quote in KNOWN_QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            return pair[: -len(quote)], quote
    raise ValueError(f"cannot split {pair!r} into base and quote asset")


def lake_instrument(market: str, binance_symbol: str) -> tuple[str, str]:
    """Crypto Lake (exchange, symbol) of a Binance symbol.

    spot ``BTCUSDT`` -> (BINANCE, BTC-USDT); usdm ``BTCUSDT`` -> (BINANCE_FUTURES, BTC-USDT-PERP);
    coinm ``BTCUSD_PERP`` -> (BINANCE_DELIVERY, BTC-USD-PERP); dated contracts keep their expiry
    (``BTCUSDT_240927`` -> BTC-USDT-240927).
    """
    if market not in LAKE_EXCHANGES:
        raise ValueError(f"unknown Binance market {market!r}; expected one of {MARKETS}")
    pair, _, contract = binance_symbol.upper().partition("_")
    base, quote = split_pair(pair)
    if market == "spot":
        return LAKE_EXCHANGES[market], f"{base}-{quote}"
    return LAKE_EXCHANGES[market], f"{base}-{quote}-{contract or 'PERP'}"


# --- reading lines -----------------------------------------------------------------------------


def _classify(obj: Any) -> tuple[str, dict[str, Any]]:
    """(kind, payload) of one decoded line; raises ValueError with the reason otherwise."""
    if not isinstance(obj, dict):
        raise ValueError("JSON line is not an object")
    if "stream" in obj:
        stream, payload = obj["stream"], obj.get("data")
        if not isinstance(stream, str) or not isinstance(payload, dict):
            raise ValueError("combined-stream message without a string 'stream' and object 'data'")
        kind = _CHANNEL_KINDS.get(stream.partition("@")[2].partition("@")[0])
        if kind is None:
            raise ValueError(f"unsupported stream {stream!r}")
    elif "lastUpdateId" in obj:
        kind, payload = "snapshot", obj
    else:
        raise ValueError("neither a combined-stream message nor a REST depth snapshot")
    if not payload.keys() >= _REQUIRED[kind]:
        missing = ", ".join(sorted(_REQUIRED[kind] - payload.keys()))
        raise ValueError(f"{kind} message lacks field(s) {missing}")
    return kind, payload


def _iter_located(
    paths: Sequence[Path],
) -> Iterator[tuple[Path, int, int, int, str, dict[str, Any]]]:
    """(path, 1-based line in file, 0-based line in the concatenation, recv ns, kind, payload)."""
    line_no = 0
    for path in paths:
        path = Path(path)
        line_number = 0
        # Decoding text in bulk is faster than handing json.loads bytes line by line.
        with io.TextIOWrapper(open_capture(path), encoding="utf-8") as stream:
            lines = iter(stream)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    break
                except (EOFError, OSError, UnicodeDecodeError) as exc:  # truncated/corrupt file
                    raise CaptureFormatError(path, line_number + 1, f"unreadable: {exc}") from exc
                line_number += 1
                stamp, _, body = line.partition(" ")
                try:
                    recv_ns = int(stamp)
                except ValueError:
                    raise CaptureFormatError(
                        path, line_number, f"receive time {stamp[:40]!r} is not an integer"
                    ) from None
                try:
                    kind, payload = _classify(json.loads(body))
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    raise CaptureFormatError(path, line_number, str(exc)) from None
                yield path, line_number, line_no, recv_ns, kind, payload
                line_no += 1


def iter_messages(paths: Sequence[Path]) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """Yield ``(line_no, recv_ns, kind, payload)`` for every line of the files, in order.

    ``kind`` is ``diff``, ``snapshot``, ``ticker`` or ``trade``; ``payload`` is the stream's
    ``data`` object (or the whole REST snapshot) as decoded by ``json.loads``, so prices and
    quantities are the exchange's decimal strings.
    """
    for _, _, line_no, recv_ns, kind, payload in _iter_located(paths):
        yield line_no, recv_ns, kind, payload


# --- tables ------------------------------------------------------------------------------------


@dataclass
class CaptureTables:
    """One instrument's capture as lake tables, each in capture line order."""

    market: str  # spot | usdm | coinm
    exchange: str  # Crypto Lake exchange, e.g. BINANCE_FUTURES
    symbol: str  # Crypto Lake symbol, e.g. BTC-USDT-PERP
    trades: pl.DataFrame  # TRADES_SCHEMA
    book_delta_v2: pl.DataFrame  # BOOK_DELTA_SCHEMA + CAPTURE_DELTA_EXTRA_SCHEMA + line_no
    depth_snapshot: pl.DataFrame  # DEPTH_SNAPSHOT_SCHEMA + line_no
    book: pl.DataFrame  # BOOK_SCHEMA: top 20 levels of each REST snapshot
    book_ticker: pl.DataFrame  # BOOK_TICKER_SCHEMA + line_no


class _Columns:
    """Column lists filled message by message; polars frames are built once at the end."""

    def __init__(self) -> None:
        # Tickers and trades are one row per message: tuples, transposed by polars at the end.
        self.trades: list[tuple[Any, ...]] = []
        self.delta: dict[str, list[Any]] = {name: [] for name in DELTA_SCHEMA}
        self.levels: dict[str, list[Any]] = {name: [] for name in SNAPSHOT_LEVELS_SCHEMA}
        self.book: dict[str, list[Any]] = {name: [] for name in BOOK_SCHEMA}
        self.ticker: list[tuple[Any, ...]] = []

    def add_diff(self, line_no: int, recv_ns: int, d: dict[str, Any]) -> None:
        bids, asks = d["b"], d["a"]
        prices = [float(p) for p, _ in bids] + [float(p) for p, _ in asks]
        sizes = [float(q) for _, q in bids] + [float(q) for _, q in asks]
        n = len(prices)
        pu = d.get("pu")
        cols = self.delta
        cols["origin_time"].extend([int(d["E"]) * NS_PER_MS] * n)
        cols["received_time"].extend([recv_ns] * n)
        cols["sequence_number"].extend([int(d["u"])] * n)
        cols["side_is_bid"].extend([True] * len(bids) + [False] * len(asks))
        cols["price"].extend(prices)
        cols["size"].extend(sizes)
        cols["first_update_id"].extend([int(d["U"])] * n)
        cols["prev_update_id"].extend([None if pu is None else int(pu)] * n)
        cols["line_no"].extend([line_no] * n)

    def add_snapshot(self, line_no: int, recv_ns: int, s: dict[str, Any]) -> None:
        bids = [(float(p), float(q)) for p, q in s["bids"]]
        asks = [(float(p), float(q)) for p, q in s["asks"]]
        last_update_id = int(s["lastUpdateId"])
        levels = self.levels
        n = len(bids) + len(asks)
        levels["received_time"].extend([recv_ns] * n)
        levels["last_update_id"].extend([last_update_id] * n)
        levels["side_is_bid"].extend([True] * len(bids) + [False] * len(asks))
        levels["price"].extend([p for p, _ in bids] + [p for p, _ in asks])
        levels["size"].extend([q for _, q in bids] + [q for _, q in asks])
        levels["line_no"].extend([line_no] * n)
        # Futures REST snapshots carry the exchange's E (message time) / T (transaction time);
        # spot ones carry neither, so the receive time stands in.
        origin = s.get("E", s.get("T"))
        book = self.book
        book["origin_time"].append(recv_ns if origin is None else int(origin) * NS_PER_MS)
        book["received_time"].append(recv_ns)
        book["sequence_number"].append(last_update_id)
        # The REST API lists each side best first.
        for side, side_levels in (("bid", bids), ("ask", asks)):
            for i in range(BOOK_LEVELS):
                price, size = side_levels[i] if i < len(side_levels) else (None, None)
                book[f"{side}_{i}_price"].append(price)
                book[f"{side}_{i}_size"].append(size)

    def add_ticker(self, line_no: int, recv_ns: int, t: dict[str, Any]) -> None:
        origin = t.get("E", t.get("T"))
        self.ticker.append(
            (
                recv_ns if origin is None else int(origin) * NS_PER_MS,
                recv_ns,
                int(t["u"]),
                float(t["b"]),
                float(t["B"]),
                float(t["a"]),
                float(t["A"]),
                line_no,
            )
        )

    def add_trade(self, recv_ns: int, t: dict[str, Any]) -> None:
        if not isinstance(t["m"], bool):
            raise ValueError(f"trade field m is {t['m']!r}, not a boolean")
        self.trades.append(
            (
                int(t["T"]) * NS_PER_MS,
                recv_ns,
                "sell" if t["m"] else "buy",  # m: the buyer is the maker, so the taker sold
                float(t["p"]),
                float(t["q"]),
                str(t["t"]),
            )
        )


def parse_capture(paths: Sequence[Path]) -> CaptureTables:
    """Parse the capture files of ONE instrument, given in time order, into lake tables.

    Raises CaptureFormatError naming the file and line of the first malformed line, or the
    file when the files mix instruments or markets.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("parse_capture needs at least one capture file")
    named = {binance_market_of(p) for p in paths} - {None}
    if len(named) > 1:
        raise CaptureFormatError(paths[0], None, f"files name different markets {sorted(named)}")
    market = named.pop() if named else None
    binance_symbol: str | None = None
    cols = _Columns()
    for path, line_number, line_no, recv_ns, kind, payload in _iter_located(paths):
        try:
            symbol = payload.get("s")
            if symbol is not None:
                if binance_symbol is None:
                    binance_symbol = symbol
                elif symbol != binance_symbol:
                    raise ValueError(f"symbol {symbol!r} differs from {binance_symbol!r} before it")
            if kind == "ticker":
                cols.add_ticker(line_no, recv_ns, payload)
            elif kind == "trade":
                cols.add_trade(recv_ns, payload)
            elif kind == "diff":
                shape = market_of_diff(payload)
                if market is None:
                    market = shape
                elif shape != market:
                    raise ValueError(f"a {shape} depth diff in a {market} capture")
                cols.add_diff(line_no, recv_ns, payload)
            else:
                cols.add_snapshot(line_no, recv_ns, payload)
        except (ValueError, TypeError) as exc:  # non-numeric strings, levels not [price, qty]
            raise CaptureFormatError(path, line_number, f"bad {kind} message: {exc}") from None
    if binance_symbol is None:
        raise CaptureFormatError(paths[0], None, "no message names the symbol (field 's')")
    if market is None:
        raise CaptureFormatError(paths[0], None, "market unknown: no binance_{spot,usdm,coinm}_ file name and no diffs")
    try:
        exchange, symbol = lake_instrument(market, binance_symbol)
    except ValueError as exc:
        raise CaptureFormatError(paths[0], None, str(exc)) from None
    return CaptureTables(
        market=market,
        exchange=exchange,
        symbol=symbol,
        trades=pl.DataFrame(cols.trades, schema=TRADES_SCHEMA, orient="row"),
        book_delta_v2=pl.DataFrame(cols.delta, schema=DELTA_SCHEMA),
        depth_snapshot=pl.DataFrame(cols.levels, schema=SNAPSHOT_LEVELS_SCHEMA),
        book=pl.DataFrame(cols.book, schema=BOOK_SCHEMA),
        book_ticker=pl.DataFrame(cols.ticker, schema=TICKER_SCHEMA, orient="row"),
    )


_TABLES = ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker")


def split_by_day(tables: CaptureTables) -> dict[dt.date, CaptureTables]:
    """Split every table by the UTC day of its received_time (line order and line_no kept)."""
    epoch = dt.date(1970, 1, 1)
    day = pl.col("received_time") // NS_PER_DAY
    days: set[int] = set()
    for name in _TABLES:
        days.update(getattr(tables, name).select(day.unique()).to_series())
    return {
        epoch + dt.timedelta(days=d): CaptureTables(
            market=tables.market,
            exchange=tables.exchange,
            symbol=tables.symbol,
            **{name: getattr(tables, name).filter(day == d) for name in _TABLES},
        )
        for d in sorted(days)
    }
