"""Security hygiene: secret scrubbing (logs, Dagster's event log, payloads), file modes, audit trail.

No `from __future__ import annotations`: Dagster inspects the annotations of the test assets.
"""

import io
import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg
import pytest

from market_pipeline.core.security.audit import audit_read, audit_scope
from market_pipeline.core.security.scrub import install_log_scrubbing, scrub, scrub_record_attribute
from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, REPO_ROOT

MASTER_KEY = "bWFzdGVyLWtleS1wbGFudGVkLWluLXRoZS10ZXN0cyE="
WEBHOOK_TOKEN = "whk-planted-token-7f3a9c"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY"
AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
URL_PASSWORD = "url-pa55word-planted"
SIGNATURE = "f00dfeedplantedsignature"
BEARER = "eyJplanted.bearer.tokenvalue"
PLANTED = (MASTER_KEY, WEBHOOK_TOKEN, AWS_SECRET, AWS_KEY_ID, URL_PASSWORD, SIGNATURE, BEARER)
SECRET_LINE = (
    f"key={MASTER_KEY} hook={WEBHOOK_TOKEN} aws={AWS_SECRET} id={AWS_KEY_ID} "
    f"url=https://alice:{URL_PASSWORD}@s3.example.com/b/k?X-Amz-Signature={SIGNATURE}&part=1 "
    f"Authorization: Bearer {BEARER}"
)


def assert_no_secret(text: str, where: str) -> None:
    leaked = [s for s in PLANTED if s in text]
    assert not leaked, f"planted secret(s) {leaked} found in {where}"


@pytest.fixture
def planted_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MASTER_KEY", MASTER_KEY)
    monkeypatch.setenv("PIPELINE_ALERT_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)


# ---------------------------------------------------------------------------------------
# scrub() and the logging filter
# ---------------------------------------------------------------------------------------


def test_scrub_cleans_a_nested_payload(planted_env):
    payload = {
        "title": f"alert {SECRET_LINE}",
        "runs": [{"url": f"https://bob:{URL_PASSWORD}@dagster.example.com/runs/1", "n": 3}],
        "headers": ("Authorization: Basic YWxpY2U6c2VjcmV0", f"x-token=ok token={WEBHOOK_TOKEN}"),
        "webhook_token": "any-value-at-all",
        "count": 7,
        "ratio": 0.5,
        "none": None,
    }
    cleaned = scrub(payload)
    assert_no_secret(json.dumps(cleaned), "scrub() output")
    assert cleaned["title"] == (
        "alert key=*** hook=*** aws=*** id=AKIA*** url=https://***@s3.example.com/b/k"
        "?X-Amz-Signature=***&part=1 Authorization: Bearer ***"
    )
    assert cleaned["runs"] == [{"url": "https://***@dagster.example.com/runs/1", "n": 3}]
    assert cleaned["headers"] == ("Authorization: Basic ***", "x-token=ok token=***")
    assert cleaned["webhook_token"] == "***"  # credential-named keys are replaced whole
    assert (cleaned["count"], cleaned["ratio"], cleaned["none"]) == (7, 0.5, None)
    assert payload["webhook_token"] == "any-value-at-all"  # the input is not modified
    # Ordinary text is left alone.
    plain = "bearer token missing; s3://bucket/key=1/x; 42 rows; user@example.com"
    assert scrub(plain) == plain


def test_log_records_are_scrubbed_in_message_args_and_exception(planted_env):
    install_log_scrubbing()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)  # added after installation: still covered
    logger = logging.getLogger("market_pipeline.test_security")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("planted %s and %r", SECRET_LINE, {"token": WEBHOOK_TOKEN})
        try:
            raise ConnectionError(f"cannot reach https://alice:{URL_PASSWORD}@host with {MASTER_KEY}")
        except ConnectionError:
            logger.exception("upload failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert_no_secret(text, "a stdlib handler's output")
    assert "planted key=*** hook=***" in text
    assert "ConnectionError: cannot reach https://***@host with ***" in text


def test_registered_record_attributes_are_scrubbed_even_when_set_through_extra(planted_env):
    """`extra=` values are set on the record after the record factory ran: the registered ones
    are cleaned whenever a handler reads them (this is how Dagster's events are covered)."""
    install_log_scrubbing()
    scrub_record_attribute("market_pipeline_test_payload", scrub)
    seen: list[object] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(
                (
                    hasattr(record, "market_pipeline_test_payload"),
                    getattr(record, "market_pipeline_test_payload", None),
                    dict(record.__dict__),
                )
            )

    logger = logging.getLogger("market_pipeline.test_security.extra")
    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("with payload", extra={"market_pipeline_test_payload": {"url": SECRET_LINE}})
        logger.warning("without payload")
    finally:
        logger.removeHandler(handler)
    (present, payload, raw), (absent, _, _) = seen
    assert present and not absent
    assert payload == {"url": scrub(SECRET_LINE)}
    assert_no_secret(repr(raw), "the record's __dict__ once read")  # the clean value was written back


def test_core_security_imports_no_dagster():
    """core/ is Dagster-free (import-linter enforces it for imports; this checks the process)."""
    code = (
        "import sys\n"
        "from market_pipeline.core.security.scrub import install_log_scrubbing\n"
        "import market_pipeline.core.security.hardening\n"
        "install_log_scrubbing()\n"
        "loaded = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_market_pipeline_uses_no_private_dagster_module():
    """Only public `dagster` APIs: no `dagster._...` module, import or logger name in the package."""
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in sorted((REPO_ROOT / "market_pipeline").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "dagster._" in line
    ]
    assert not offenders, offenders


def test_dagster_still_names_the_record_attributes_we_scrub():
    """Fails loudly on a Dagster upgrade that renames the record attributes carrying its events
    (the end-to-end test below would fail too, with a leaked secret)."""
    from dagster._core import log_manager  # private on purpose: this test watches the internal

    from market_pipeline.defs.common.log_scrubbing import DAGSTER_EVENT_ATTRIBUTE, DAGSTER_META_ATTRIBUTE

    assert log_manager.LOG_RECORD_EVENT_ATTR == DAGSTER_EVENT_ATTRIBUTE
    assert log_manager.LOG_RECORD_METADATA_ATTR == DAGSTER_META_ATTRIBUTE


# ---------------------------------------------------------------------------------------
# Dagster: context.log, exceptions and metadata never reach the event log or stderr
# ---------------------------------------------------------------------------------------


@pytest.fixture
def code_location_loaded(data_dir):
    """Load the code location as every Dagster process does (installs scrubbing, sets the umask)."""
    from market_pipeline.core.security.scrub import ScrubbedLogRecord
    from market_pipeline.definitions import build_definitions
    from market_pipeline.defs.common.log_scrubbing import DAGSTER_EVENT_ATTRIBUTE, DAGSTER_META_ATTRIBUTE
    from market_pipeline.settings import load_settings

    previous = os.umask(0o022)
    try:
        build_definitions(load_settings())
        assert os.umask(0o077) == 0o077
        for name in (DAGSTER_EVENT_ATTRIBUTE, DAGSTER_META_ATTRIBUTE):
            assert name in vars(ScrubbedLogRecord), (
                "loading the code location did not install the scrubbing of Dagster events: "
                "market_pipeline.definitions must call harden_code_location(settings) "
                "(market_pipeline.defs.common.log_scrubbing)"
            )
        yield
    finally:
        os.umask(previous)


def test_dagster_event_log_and_stderr_never_see_a_planted_secret(planted_env, code_location_loaded, instance, capfd):
    assert (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").read_text() == PROJECT_DAGSTER_YAML.read_text()

    @dg.asset
    def chatty(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        context.log.info(f"connecting with {SECRET_LINE}")
        context.log.warning("args: %s", MASTER_KEY)
        try:
            raise PermissionError(f"denied for {AWS_SECRET}")
        except PermissionError:
            context.log.exception("caught")
        dg.get_dagster_logger().info(f"python log {WEBHOOK_TOKEN}")  # a managed Python logger
        return dg.MaterializeResult(metadata={"endpoint": f"https://alice:{URL_PASSWORD}@h/x", "rows": 3})

    @dg.asset(deps=[chatty])
    def failing() -> None:
        try:
            raise OSError(f"cannot open s3://bucket/k?X-Amz-Signature={SIGNATURE} as {AWS_KEY_ID}")
        except OSError as cause:  # the stored error keeps the chained cause and its stack trace
            raise RuntimeError(f"upload refused: Authorization: Bearer {BEARER} key {MASTER_KEY}") from cause

    result = dg.materialize([chatty, failing], instance=instance, raise_on_error=False)
    assert not result.success
    entries = instance.all_logs(result.run_id)
    stored = "\n".join(dg.serialize_value(entry) for entry in entries)
    assert_no_secret(stored, "the stored event log")
    messages = [e.user_message for e in entries]
    assert any("connecting with key=*** hook=***" in m for m in messages)
    assert any("python log ***" in m for m in messages)
    failure = next(e.dagster_event for e in entries if e.dagster_event and e.dagster_event.is_step_failure)
    error = failure.step_failure_data.error
    assert "upload refused: Authorization: Bearer *** key ***" in error.to_string()
    assert error.cause is not None and "X-Amz-Signature=***" in error.cause.to_string()
    assert error.stack and not any(s in "".join(error.stack) for s in PLANTED)
    materialization = next(e.asset_materialization for e in entries if e.asset_materialization)
    assert materialization.metadata["endpoint"].value == "https://***@h/x"
    assert materialization.metadata["rows"].value == 3
    out, err = capfd.readouterr()
    assert "connecting with key=***" in err  # the console logger did print the message
    assert_no_secret(out + err, "stdout/stderr")


# ---------------------------------------------------------------------------------------
# File modes and the audit trail, on a lake materialized through the CLI
# ---------------------------------------------------------------------------------------

DAY = "2024-03-01"
INSTRUMENT = "BINANCE:BTC-USDT"
ASSETS = ("raw_trades", "raw_book_snapshots", "raw_book_deltas", "reconstructed_books")


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One small synthetic day of one instrument, via `market-pipeline run` (the real entry point)."""
    root = tmp_path_factory.mktemp("security_lake")
    home, cwd = root / "dagster_home", root / "cwd"
    home.mkdir()
    cwd.mkdir()
    (home / "dagster.yaml").write_text(PROJECT_DAGSTER_YAML.read_text())
    data = root / "data" / "pipeline"  # does not exist yet: the pipeline creates it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "AWS_"))}
    env.update(
        DAGSTER_HOME=str(home),
        PIPELINE_DATA_DIR=str(data),
        PIPELINE_SOURCE="synthetic",
        PIPELINE_START_DATE=DAY,
        PIPELINE_INSTRUMENTS=INSTRUMENT,
        PIPELINE_SYNTHETIC__SCALE="0.02",
        # The tests' cadence (a vendor snapshot and a sampled book row a minute; the PIPELINE_*
        # filter above dropped the hermetic ones): few rows, the test is about files.
        **TEST_CADENCE,
        PIPELINE_MASTER_KEY=MASTER_KEY,
        PIPELINE_ALERT_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "market_pipeline.cli",
            "run",
            "--start-date",
            DAY,
            "--end-date",
            DAY,
            "--select",
            *ASSETS,
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"data": data, "output": proc.stdout + proc.stderr, "env": env}


def _audit_lines(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "audit" / "audit.jsonl").read_text().splitlines()]


@pytest.mark.slow  # its module fixture materializes a lake
def test_validation_audits_the_skew_quantiles_it_stores(materialized, tmp_path, monkeypatch):
    """validation_reports, run before the clock_skew check (on a copy of the lake whose deltas have
    no skew quantiles yet), stores them beside the day statistics under its own audit component."""
    import datetime as dt
    import shutil

    from market_pipeline.core import context
    from market_pipeline.defs.common.resources import lake_context
    from market_pipeline.defs.quality.assets import validation_task
    from market_pipeline.settings import PipelineSettings
    from market_pipeline.vendors.registry import build_source

    data = tmp_path / "pipeline"
    shutil.copytree(materialized["data"], data)
    (skew,) = (data / "lake" / "stats" / "book_delta_v2").rglob("skew_quantiles.parquet")
    skew.unlink()
    written = len(_audit_lines(data))
    for name, value in materialized["env"].items():
        if name.startswith("PIPELINE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(data))
    settings = PipelineSettings()
    with context.using(lake_context(settings)):
        validation_task(build_source(settings), settings, settings.universe[0], dt.date.fromisoformat(DAY), None)
    assert skew.is_file()
    (line,) = [line for line in _audit_lines(data)[written:] if line["action"] == "write"]
    assert (line["component"], line["path"], line["bytes"]) == ("quality.validation", str(skew), skew.stat().st_size)
    assert line["partition"] == {"dt": DAY, "instrument": INSTRUMENT}


@pytest.mark.slow  # its module fixture materializes a lake
def test_materialized_lake_is_private(materialized):
    data = materialized["data"]
    assert (data / "warehouse.duckdb").is_file() and (data / "lake" / "books").is_dir()
    wrong = []
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o700 if path.is_dir() else 0o600
        if mode != expected:
            wrong.append(f"{oct(mode)} {path.relative_to(data)}")
    assert not wrong, "not owner-only: " + ", ".join(wrong)


@pytest.mark.slow  # its module fixture materializes a lake
def test_audit_trail_records_every_partition_write_and_read(materialized):
    data: Path = materialized["data"]
    lines = _audit_lines(data)
    audit_text = (data / "audit" / "audit.jsonl").read_text()
    assert_no_secret(audit_text + str(materialized["output"]), "the audit trail or the CLI output")
    assert {line["action"] for line in lines} == {"read", "write"}
    for line in lines:
        assert set(line) == {"time", "component", "action", "partition", "path", "bytes"}
        assert line["time"].endswith("+00:00") and line["partition"]["dt"] == DAY
    writes = {line["path"]: line for line in lines if line["action"] == "write"}
    reads = {(line["component"], line["path"]): line for line in lines if line["action"] == "read"}

    partition_files = sorted((data / "lake").rglob("*.parquet"))
    tables = {p.relative_to(data / "lake").parts[0] for p in partition_files}
    assert {"raw", "books", "book_agreement", "checkpoints"} <= tables
    for path in partition_files:
        line = writes.get(str(path))
        assert line is not None, f"no audit write for {path}"
        assert line["bytes"] == path.stat().st_size
        assert "exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/" in str(path)
        assert line["partition"]["instrument"] == INSTRUMENT
        table_root, table = path.relative_to(data / "lake").parts[:2]
        # The raw import writes the raw days and their statistics; the rebuild the books, their
        # shape (stats/books), agreement and checkpoints; the clock_skew check, the first measure
        # that needs them, the deltas' skew quantiles beside their statistics.
        if path.name == "skew_quantiles.parquet":
            assert line["component"] == "quality.check" and table == "book_delta_v2", path
            continue
        by_import = table_root == "raw" or (table_root == "stats" and table != "books")
        assert line["component"] == ("raw.import" if by_import else "book.rebuild"), path
    # The book rebuild reads each raw delta and snapshot partition it was built from.
    for path in partition_files:
        parts = path.relative_to(data / "lake").parts
        if parts[0] == "raw" and parts[1] in ("book_delta_v2", "book"):
            read = reads.get(("book.rebuild", str(path)))
            assert read is not None and read["bytes"] == path.stat().st_size, f"no audit read for {path}"
    # The raw import reads each vendor file the synthetic source wrote into its cache.
    vendor_reads = [line for (component, _), line in reads.items() if component == "raw.import"]
    assert len(vendor_reads) == 3  # one file per table
    for line in vendor_reads:
        assert line["bytes"] == Path(line["path"]).stat().st_size
        assert writes[line["path"]]["component"] == "raw.import"  # generated in the same scope


def test_audit_lines_are_scrubbed_and_whole_under_concurrency(planted_env, tmp_path):
    victim = tmp_path / "lake" / "x.parquet"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"x" * 123)

    def reader(n: int) -> None:
        with audit_scope("quality", tmp_path, dt="2024-03-01", instrument=f"BINANCE:{n}", note=MASTER_KEY):
            for _ in range(50):
                audit_read(victim)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log = tmp_path / "audit" / "audit.jsonl"
    assert_no_secret(log.read_text(), "the audit trail")
    lines = _audit_lines(tmp_path)
    assert len(lines) == 200
    assert {line["partition"]["note"] for line in lines} == {"***"}
    assert {line["bytes"] for line in lines} == {123}
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "audit").stat().st_mode) == 0o700


def test_lake_helpers_write_private_files_whatever_the_umask(tmp_path):
    import datetime as dt

    import polars as pl

    from market_pipeline.core.lake.files import write_parquet_atomic
    from market_pipeline.core.lake.ingest import FileRejected, quarantine_file, record_rejected_rows

    day = dt.date(2024, 3, 1)
    vendor = tmp_path / "vendor.parquet"
    vendor.write_bytes(b"not parquet")
    lake = tmp_path / "data" / "lake"
    previous = os.umask(0o022)  # a permissive umask, as in a process that is no entry point
    try:
        with audit_scope("raw.import", tmp_path / "data", dt=day, instrument="BINANCE:BTC-USDT"):
            quarantined = quarantine_file(
                lake, "trades", "BINANCE", "BTC-USDT", day, FileRejected(vendor, "unreadable"), "run-1"
            )
            bad_rows = pl.DataFrame({"_row": [3], "_reason": ["price is NaN"]})
            rejected = record_rejected_rows(lake, "trades", "BINANCE", "BTC-USDT", day, bad_rows)
            good = write_parquet_atomic(pl.DataFrame({"x": [1, 2]}), lake / "raw" / "t" / "data.parquet")
    finally:
        os.umask(previous)
    reason = quarantined.with_name(quarantined.name + ".reason.json")
    assert quarantined.read_bytes() == b"not parquet"
    assert json.loads(reason.read_text())["reason"] == "unreadable"
    for path in (quarantined, reason, rejected, lake / "raw" / "t" / "data.parquet"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in [tmp_path / "data", *(p for p in (tmp_path / "data").rglob("*") if p.is_dir())]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    lines = _audit_lines(tmp_path / "data")
    writes = {line["path"]: line["bytes"] for line in lines if line["action"] == "write"}
    assert writes == {
        str(quarantined): len(b"not parquet"),
        str(reason): reason.stat().st_size,
        str(rejected): rejected.stat().st_size,
        str(lake / "raw" / "t" / "data.parquet"): good,
    }
