"""`market-pipeline capture` against a local WebSocket server and a local REST server that replay a
shared capture (USD-M BTCUSDT): the recorded files verify; a dropped connection, a silent one and
one whose server stops reading (pings unanswered) are survived with a new snapshot and a recorded
gap; the encrypted output verifies exactly like its plaintext; and a TLS 1.2-only server is
refused unless PIPELINE_CAPTURE__TLS_MIN_VERSION allows it.

The replay "exchange" keeps the order book the shared capture implies (its REST snapshot plus every
diff sent so far, skipped ones included) so the REST server can answer a consistent snapshot at any
moment, with lastUpdateId = u of the latest diff sent.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import hashlib
import ipaddress
import itertools
import json
import os
import ssl
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from websockets import exceptions as websockets_exceptions

from market_pipeline.cli.main import main
from market_pipeline.core.security import crypto
from market_pipeline.vendors.binance.live.endpoints import snapshot_url, stream_url
from market_pipeline.vendors.binance.live.sync import DiffChain
from market_pipeline.vendors.capture_files import open_capture
from market_pipeline.vendors.live_capture.connection import check_scheme, tls_context
from market_pipeline.vendors.live_capture.manifest import Manifest
from market_pipeline.vendors.live_capture.writer import NS_PER_HOUR, HourlyCaptureWriter
from market_pipeline_tests.support.project import REAL_DATA_DIR
from market_pipeline_tests.support.websocket_server import LoopbackWebSocketServer

REAL = REAL_DATA_DIR
USDM = REAL / "binance_usdm_btcusdt_20240808.gz"
REPLAY_LINES = 6_000  # of the shared capture: about 5,900 stream messages after its snapshot
BURST, PAUSE = 25, 0.01  # about 2,500 messages/s: the replay outlasts a 3 s capture
DROP_AFTER, SKIP_ON_RECONNECT = 1_500, 300
FRAGMENT_EVERY = 97  # every 97th message goes out in three continuation frames
CAPTURE_SECONDS = "3s"
DEAF_SECONDS = 2.0  # how long a server that stopped reading keeps sending before it drops the connection


# --- the replay exchange -------------------------------------------------------------------------


class ReplayExchange:
    """The stream messages of the shared capture in order, and the book they imply."""

    def __init__(self, messages: list[str], snapshot: dict) -> None:
        self.messages = messages
        self.lock = threading.Lock()
        self.book = {
            side: {Decimal(p): (p, q) for p, q in snapshot[key]} for side, key in (("b", "bids"), ("a", "asks"))
        }
        self.last_update_id = snapshot["lastUpdateId"]
        self.times = (snapshot["E"], snapshot["T"])
        self.position = 0
        self.sent: list[str] = []
        self.snapshot_requests = 0

    def advance(self, deliver: bool = True) -> str | None:
        with self.lock:
            if self.position >= len(self.messages):
                return None
            text = self.messages[self.position]
            self.position += 1
            data = json.loads(text)["data"]
            if data.get("e") == "depthUpdate":
                for side in ("b", "a"):
                    for p, q in data[side]:
                        if Decimal(q) == 0:
                            self.book[side].pop(Decimal(p), None)
                        else:
                            self.book[side][Decimal(p)] = (p, q)
                self.last_update_id = data["u"]
                self.times = (data["E"], data["T"])
            if deliver:
                self.sent.append(text)
            return text

    def snapshot(self) -> bytes:
        with self.lock:
            self.snapshot_requests += 1
            bids = [list(self.book["b"][p]) for p in sorted(self.book["b"], reverse=True)[:1000]]
            asks = [list(self.book["a"][p]) for p in sorted(self.book["a"])[:1000]]
            body = {
                "lastUpdateId": self.last_update_id,
                "E": self.times[0],
                "T": self.times[1],
                "bids": bids,
                "asks": asks,
            }
        return json.dumps(body, separators=(",", ":")).encode()


@pytest.fixture(scope="module")
def replay_source() -> tuple[list[str], dict]:
    """(stream messages from the diff that brackets the capture's snapshot, that snapshot)."""
    if not USDM.is_file():
        pytest.skip(f"shared capture {USDM} is absent")
    with gzip.open(USDM, "rt") as fh:
        lines = [line.rstrip("\n").partition(" ")[2] for line in itertools.islice(fh, REPLAY_LINES)]
    snapshot_at = next(i for i, body in enumerate(lines) if body.startswith('{"lastUpdateId"'))
    snapshot = json.loads(lines[snapshot_at])
    stream = [body for body in lines if body.startswith('{"stream"')]
    lid = snapshot["lastUpdateId"]

    def brackets(body: str) -> bool:
        data = json.loads(body)["data"]
        return data.get("e") == "depthUpdate" and data["U"] <= lid <= data["u"]

    start = next(i for i, body in enumerate(stream) if brackets(body))
    return stream[start:], snapshot


class ReplayServers(LoopbackWebSocketServer):
    """A WebSocket server (its own thread and event loop) and an HTTP server on 127.0.0.1."""

    def __init__(
        self,
        exchange: ReplayExchange,
        drop_after: int | None,
        at_drop: str = "abort",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.exchange = exchange
        self.drop_after = drop_after
        # What the first connection does after `drop_after` messages: "abort" (no close frame),
        # "silent" (stops sending, still answers pings) or "deaf" (stops reading: pings go
        # unanswered, messages keep coming).
        self.at_drop = at_drop
        self.connections = 0
        self.pongs = 0
        self.paths: list[str] = []
        super().__init__(ssl_context)
        self.ws_url = f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{self.port}/stream"

        exchange_ = exchange

        class DepthHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                if url.path != "/fapi/v1/depth" or query != {"symbol": ["BTCUSDT"], "limit": ["1000"]}:
                    self.send_error(400, "unexpected request")
                    return
                body = exchange_.snapshot()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), DepthHandler)
        self.http_thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.http_thread.start()
        self.rest_url = f"http://127.0.0.1:{self.http.server_address[1]}/fapi/v1/depth"

    async def _handler(self, ws) -> None:
        try:
            await self._replay(ws)
        except websockets_exceptions.ConnectionClosed:  # the capture ended
            pass

    async def _replay(self, ws) -> None:
        index = self.connections
        self.connections += 1
        self.paths.append(ws.request.path)
        if index > 0:  # messages published while the client was away are missed
            for _ in range(SKIP_ON_RECONNECT):
                self.exchange.advance(deliver=False)
        await asyncio.wait_for(await ws.ping(b"are you there"), 5)  # the client must answer pings
        self.pongs += 1
        sent = 0
        deaf_since: float | None = None
        while True:
            if deaf_since is not None and time.monotonic() - deaf_since > DEAF_SECONDS:
                ws.transport.abort()  # the client should have left long ago; no close handshake to wait for
                return
            text = self.exchange.advance()
            if text is None:  # the replay is over: wait for the client to leave
                await ws.wait_closed()
                return
            if sent % FRAGMENT_EVERY == 0:
                third = len(text) // 3
                await ws.send(iter([text[:third], text[third : 2 * third], text[2 * third :]]))
            else:
                await ws.send(text)
            sent += 1
            if index == 0 and sent == self.drop_after:
                if self.at_drop == "deaf":
                    ws.transport.pause_reading()
                    deaf_since = time.monotonic()
                elif self.at_drop == "silent":  # the feed stops; the connection stays up until the client leaves
                    await ws.wait_closed()
                    return
                else:
                    ws.transport.abort()  # no close frame: the connection just dies
                    return
            if sent % BURST == 0:
                await asyncio.sleep(PAUSE)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        super().close()


def _run_capture(
    replay_source,
    out: Path,
    drop_after: int | None,
    *extra: str,
    at_drop: str = "abort",
    ssl_context: ssl.SSLContext | None = None,
    duration: str = CAPTURE_SECONDS,
) -> tuple[int, ReplayServers, int, int]:
    messages, snapshot = replay_source
    exchange = ReplayExchange(messages, snapshot)
    servers = ReplayServers(exchange, drop_after, at_drop, ssl_context)
    try:
        started = time.time_ns()
        code = main(
            [
                "capture",
                "--market",
                "usdm",
                "--symbol",
                "btcusdt",
                "--duration",
                duration,
                "--out",
                str(out),
                "--ws-url",
                servers.ws_url,
                "--rest-url",
                servers.rest_url,
                "--allow-plaintext",
                *extra,
            ]
        )
        ended = time.time_ns()
    finally:
        servers.close()
    return code, servers, started, ended


def _verify(capsys, files: list[Path]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify-capture", *map(str, files)])
    return code, capsys.readouterr().out.strip()


def _lines(path: Path) -> list[tuple[int, str]]:
    with open_capture(path) as fh:
        return [(int(a), b) for a, _, b in (line.decode().rstrip("\n").partition(" ") for line in fh)]


def _check_manifest(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"], "no file in the manifest"
    for entry in manifest["files"]:
        path = out / entry["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        assert len(_lines(path)) == entry["lines"]
    assert not list(out.rglob("*.partial"))
    return manifest


def _check_lines_are_what_was_sent(
    files: list[Path], sent: list[str], started: int, ended: int
) -> list[tuple[int, str]]:
    """Stream lines are the server's messages, in order, byte for byte; times are wall-clock ns."""
    lines = [line for path in files for line in _lines(path)]
    index = {text: i for i, text in enumerate(sent)}
    positions = [index[body] for _, body in lines if body.startswith('{"stream"')]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert len(positions) > 1_000
    assert all(started <= ns <= ended for ns, _ in lines)  # time.time_ns(), not a monotonic clock
    return lines


# --- the end-to-end runs -----------------------------------------------------------------------


def test_capture_from_local_replay_verifies_with_no_gap(replay_source, tmp_path, capsys):
    out = tmp_path / "golden"
    code, servers, started, ended = _run_capture(replay_source, out, drop_after=None)
    assert code == 0, capsys.readouterr().err
    assert servers.connections == 1 and servers.pongs == 1
    assert servers.paths == ["/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@trade"]
    manifest = _check_manifest(out)
    assert manifest["gaps"] == []
    (run,) = manifest["runs"]
    assert run["connections"] == 1 and run["encrypted"] is False and run["snapshots"] >= 1
    files = [out / f["path"] for f in manifest["files"]]
    assert all(p.name.startswith("binance_usdm_btcusdt_") and p.name.endswith(".gz") for p in files)
    lines = _check_lines_are_what_was_sent(files, servers.exchange.sent, started, ended)
    snapshots = [body for _, body in lines if body.startswith('{"lastUpdateId"')]
    assert len(snapshots) == run["snapshots"]

    code, text = _verify(capsys, files)
    result = json.loads(text)
    assert code == 0, text
    assert result["market"] == "usdm" and result["symbol"] == "BTC-USDT-PERP"
    assert result["gaps"] == 0 and result["ticker_mismatches"] == 0 and result["in_sync_at_end"]
    assert result["applied"] > 100 and result["ticker_checks"] > 10


def test_capture_survives_a_drop_and_encrypted_output_verifies_like_plaintext(
    replay_source, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv(crypto.MASTER_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    out = tmp_path / "golden"
    code, servers, started, ended = _run_capture(replay_source, out, DROP_AFTER, "--encrypt")
    assert code == 0, capsys.readouterr().err
    assert servers.connections == 2 and servers.pongs == 2
    assert servers.exchange.snapshot_requests >= 2  # one per connection

    manifest = _check_manifest(out)
    (gap,) = manifest["gaps"]
    assert gap["kind"] == "disconnect"
    assert gap["from_ns"] < gap["to_ns"]
    assert gap["resumed_update_id"] > gap["last_update_id"]
    assert gap["snapshot_update_id"] >= gap["resumed_update_id"]
    assert manifest["runs"][0]["connections"] == 2 and manifest["runs"][0]["encrypted"] is True

    encrypted = [out / f["path"] for f in manifest["files"]]
    for path in encrypted:
        assert path.name.endswith(".gz.enc")
        head = path.read_bytes()[:64]
        assert crypto.is_encrypted(head) and b"stream" not in head
    _check_lines_are_what_was_sent(encrypted, servers.exchange.sent, started, ended)

    code_enc, text_enc = _verify(capsys, encrypted)  # read transparently
    decrypted = []
    for path in encrypted:
        target = tmp_path / "plain" / path.parent.name / path.name.removesuffix(".enc")
        target.parent.mkdir(parents=True, exist_ok=True)
        assert main(["decrypt", str(path), "-o", str(target)]) == 0
        decrypted.append(target)
    code_plain, text_plain = _verify(capsys, decrypted)
    assert text_enc == text_plain
    result = json.loads(text_plain)
    assert code_enc == code_plain == 0, text_plain
    # The replay sees the missed messages as a broken chain and resyncs on the new snapshot.
    assert result["gaps"] >= 1 and result["resyncs"] >= 1
    assert result["ticker_mismatches"] == 0 and result["in_sync_at_end"]


# A read-idle timeout well above what a loaded 2-core box stalls a loopback feed for: at 0.4 s a busy
# test run tripped it again on the second connection (two gaps, not one). The capture runs long
# enough for the timeout and the second connection after it.
IDLE_TIMEOUT_S = 1.5
TIMEOUT_CAPTURE_SECONDS = "5s"


@pytest.mark.parametrize(
    ("at_drop", "settings", "reason"),
    [
        (
            "silent",
            {"READ_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT_S)},
            f"read-idle timeout: no message for {IDLE_TIMEOUT_S:g} s",
        ),
        # Deaf: the server goes on sending (consuming the replay) until the pong is overdue, so the
        # keepalive stays short enough to leave messages for the second connection.
        ("deaf", {"PING_INTERVAL_SECONDS": "0.4", "PING_TIMEOUT_SECONDS": "0.5"}, "keepalive ping timeout"),
    ],
)
def test_capture_survives_a_silent_feed_and_unanswered_pings(
    replay_source, tmp_path, capsys, monkeypatch, at_drop, settings, reason
):
    """Issue 13 "Done when": a server that stops sending without closing (and still answers pings)
    trips the read-idle timeout, one that stops answering pings (and still sends) the keepalive:
    either way a reconnect, a new snapshot and a recorded gap."""
    for name, value in settings.items():
        monkeypatch.setenv(f"PIPELINE_CAPTURE__{name}", value)
    out = tmp_path / "golden"
    code, servers, started, ended = _run_capture(
        replay_source, out, DROP_AFTER, at_drop=at_drop, duration=TIMEOUT_CAPTURE_SECONDS
    )
    assert code == 0, capsys.readouterr().err
    assert servers.connections == 2 and servers.pongs == 2
    assert servers.exchange.snapshot_requests >= 2

    manifest = _check_manifest(out)
    (gap,) = manifest["gaps"]
    assert gap["kind"] == "disconnect" and reason in gap["reason"]
    if at_drop == "silent":
        assert gap["to_ns"] - gap["from_ns"] >= IDLE_TIMEOUT_S * 1e9  # the idle time passed before the reconnect
    assert gap["resumed_update_id"] > gap["last_update_id"]
    assert gap["snapshot_update_id"] >= gap["resumed_update_id"]
    assert manifest["runs"][0]["connections"] == 2 and manifest["runs"][0]["gaps"] == 1

    files = [out / f["path"] for f in manifest["files"]]
    _check_lines_are_what_was_sent(files, servers.exchange.sent, started, ended)
    code, text = _verify(capsys, files)
    result = json.loads(text)
    assert code == 0, text
    assert result["gaps"] >= 1 and result["resyncs"] >= 1
    assert result["ticker_mismatches"] == 0 and result["in_sync_at_end"]


@pytest.fixture(scope="module")
def tls12_server_context(tmp_path_factory) -> tuple[ssl.SSLContext, Path]:
    """(a server context limited to TLS 1.2, the self-signed certificate for 127.0.0.1 it uses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


@pytest.mark.parametrize("min_version", [None, "1.2"])
def test_tls12_only_server_is_refused_unless_the_setting_allows_it(
    replay_source, tls12_server_context, tmp_path, capsys, caplog, monkeypatch, min_version
):
    server_context, cert_path = tls12_server_context
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_path))  # the system CAs of tls_context(), for this test
    if min_version is not None:
        monkeypatch.setenv("PIPELINE_CAPTURE__TLS_MIN_VERSION", min_version)
    out = tmp_path / "golden"
    code, servers, _, _ = _run_capture(replay_source, out, None, ssl_context=server_context, duration="1s")
    if min_version is None:
        assert code == 1 and servers.connections == 0
        assert "nothing was recorded" in capsys.readouterr().err
        assert any("cannot connect to wss://127.0.0.1" in r.getMessage() for r in caplog.records)
    else:
        assert code == 0, capsys.readouterr().err
        assert servers.connections == 1
        assert _check_manifest(out)["runs"][0]["messages"] > 0


# --- refusals and small parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "url"), [("--ws-url", "ws://127.0.0.1:9/stream"), ("--rest-url", "http://127.0.0.1:9/fapi/v1/depth")]
)
def test_plaintext_endpoints_are_refused_without_the_test_flag(tmp_path, capsys, option, url):
    out = tmp_path / "golden"
    code = main(
        ["capture", "--market", "usdm", "--symbol", "btcusdt", "--duration", "1s", "--out", str(out), option, url]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"{option}: plaintext" in err and "TLS" in err
    assert not out.exists()


def test_encrypting_capture_needs_the_master_key(tmp_path, capsys):
    code = main(
        [
            "capture",
            "--market",
            "spot",
            "--symbol",
            "btcusdt",
            "--duration",
            "1s",
            "--out",
            str(tmp_path / "o"),
            "--encrypt",
        ]
    )
    assert code == 2
    assert "PIPELINE_MASTER_KEY is not set" in capsys.readouterr().err


@pytest.mark.parametrize("duration", ["0s", "1d", "soon", "-5m"])
def test_bad_durations_are_refused(tmp_path, capsys, duration):
    code = main(["capture", "--market", "spot", "--symbol", "btcusdt", "--duration", duration, "--out", str(tmp_path)])
    assert code == 2
    assert "--duration" in capsys.readouterr().err


def test_default_endpoints_and_tls_policy():
    assert stream_url("wss://stream.binance.com:9443/stream", "BTCUSDT") == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker/btcusdt@trade"
    )
    assert snapshot_url("https://dapi.binance.com/dapi/v1/depth", "btcusd_perp") == (
        "https://dapi.binance.com/dapi/v1/depth?symbol=BTCUSD_PERP&limit=1000"
    )
    context = tls_context()
    assert context.minimum_version.name == "TLSv1_3"
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname
    assert tls_context("1.2").minimum_version.name == "TLSv1_2"
    check_scheme("ws://127.0.0.1/x", "--ws-url", "wss", "ws", allow_plaintext=True)
    with pytest.raises(ValueError, match="expected a wss:// URL"):
        check_scheme("https://example.com", "--ws-url", "wss", "ws", allow_plaintext=True)


@pytest.mark.parametrize(
    ("futures", "diffs", "chained"),
    [
        (False, [(10, 12, None), (13, 15, None), (17, 18, None)], [True, True, False]),
        # Futures ids are shared across symbols: U jumps, only pu tells continuity.
        (True, [(10, 12, 9), (20, 25, 12), (30, 31, 26)], [True, True, False]),
    ],
)
def test_diff_chain_detects_breaks_and_stale_snapshots(futures, diffs, chained):
    chain = DiffChain(futures)
    assert not chain.bridges(100)  # nothing buffered yet
    assert [chain.add(*d) for d in diffs] == chained
    first = diffs[-1][0]  # the chain restarted at the diff that broke it
    assert chain.first_update_id == first
    assert chain.bridges(first) and (chain.bridges(first - 1) is (not futures))
    assert not chain.bridges(first - 2)


def test_hourly_rotation_and_manifest(tmp_path):
    out = tmp_path / "golden"
    hour = 1723161600 * 10**9 // NS_PER_HOUR  # 2024-08-09 00:00 UTC
    times = [hour * NS_PER_HOUR - 2, hour * NS_PER_HOUR - 1, hour * NS_PER_HOUR, hour * NS_PER_HOUR + 5]
    writer = HourlyCaptureWriter(out, "spot", "BTCUSDT", Manifest(out), master_key=None)
    opened = [writer.write(ns, json.dumps({"n": i})) for i, ns in enumerate(times)]
    writer.close()
    assert opened == [True, False, True, False]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [f["path"] for f in manifest["files"]] == [
        "20240808T23/binance_spot_btcusdt_20240808.gz",
        "20240809T00/binance_spot_btcusdt_20240809.gz",
    ]
    assert [(f["lines"], f["first_receive_ns"], f["last_receive_ns"]) for f in manifest["files"]] == [
        (2, times[0], times[1]),
        (2, times[2], times[3]),
    ]
    assert _lines(out / manifest["files"][1]["path"]) == [(times[2], '{"n": 2}'), (times[3], '{"n": 3}')]
    assert (out / manifest["files"][0]["path"]).stat().st_mode & 0o777 == 0o600

    # A second run in the same hour never overwrites: it gets its own directory.
    again = HourlyCaptureWriter(out, "spot", "BTCUSDT", Manifest(out), master_key=None)
    again.write(times[0], "{}")
    again.close()
    paths = [f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]]
    assert paths[-1] == "20240808T23-2/binance_spot_btcusdt_20240808.gz" and len(paths) == 3


def test_unreadable_manifest_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "golden"
    out.mkdir()
    (out / "manifest.json").write_text("{not json")
    code = main(
        [
            "capture",
            "--market",
            "spot",
            "--symbol",
            "btcusdt",
            "--duration",
            "1s",
            "--out",
            str(out),
            "--ws-url",
            "ws://127.0.0.1:9/stream",
            "--rest-url",
            "http://127.0.0.1:9/api/v3/depth",
            "--allow-plaintext",
        ]
    )
    assert code == 1
    assert "manifest.json: cannot read the existing manifest" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == "{not json"


def test_broken_diff_chain_on_a_live_connection_is_a_gap(tmp_path):
    """A missed diff on an open connection: gap recorded with the times and ids around it."""
    from market_pipeline.vendors.binance.live.recorder import CaptureOptions, _Recorder

    out = tmp_path / "golden"
    options = CaptureOptions(
        market="usdm",
        symbol="btcusdt",
        duration_seconds=1,
        out_dir=out,
        stream_url="ws://127.0.0.1:9/stream",
        snapshot_url="http://127.0.0.1:9/fapi/v1/depth",
        ssl_context=tls_context(),
    )

    def diff(first: int, last: int, previous: int) -> str:
        data = {
            "e": "depthUpdate",
            "E": 1,
            "T": 1,
            "s": "BTCUSDT",
            "U": first,
            "u": last,
            "pu": previous,
            "b": [],
            "a": [],
        }
        return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})

    async def scenario() -> _Recorder:
        recorder = _Recorder(options, Manifest(out))
        base = 1723161600 * 10**9
        for i, (first, last, previous) in enumerate([(10, 12, 9), (20, 25, 12), (40, 44, 30), (45, 47, 44)]):
            recorder._on_message(base + i, diff(first, last, previous))
        assert recorder.snapshot_task is not None  # a new snapshot is on its way (it cannot succeed here)
        await recorder._stop_snapshot()
        recorder.finish()
        return recorder

    recorder = asyncio.run(scenario())
    base = 1723161600 * 10**9
    (gap,) = json.loads((out / "manifest.json").read_text())["gaps"]
    assert gap == {
        "run": 0,
        "kind": "sequence",
        "reason": "diff U=40 pu=30 does not follow u=25",
        "from_ns": base + 1,
        "to_ns": base + 2,
        "last_update_id": 25,
        "resumed_update_id": 40,
        "snapshot_update_id": None,
    }
    assert recorder.report.messages == 4 and recorder.writer.lines == 4
