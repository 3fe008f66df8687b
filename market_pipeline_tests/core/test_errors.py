"""One exception hierarchy: every error a user can cause is a PipelineError of one kind, with a
stable exit code; the CLI prints one line for it (the traceback only with --debug)."""

from __future__ import annotations

import importlib

import pytest

from market_pipeline.core import errors
from market_pipeline.core.errors import PipelineError


def _kinds() -> dict[str, int]:
    return {cls.kind: cls.exit_code for cls in errors.KINDS}


def test_every_kind_has_its_own_stable_exit_code():
    # A contract with operators' scripts (docs/operations.md, "Exit codes"): never renumber.
    assert _kinds() == {
        "usage": 2,
        "configuration": 3,
        "source": 4,
        "input data": 5,
        "integrity": 6,
        "crypto": 7,
        "capture": 8,
        "blocked": 9,
    }
    assert len(set(_kinds().values()) | {errors.EXIT_OK, errors.EXIT_RUN_FAILED, errors.EXIT_INTERNAL}) == 11


def test_existing_errors_derive_from_their_kind_and_keep_their_old_base():
    from market_pipeline.cli.common import CliError
    from market_pipeline.core.lake.ingest import FileRejected
    from market_pipeline.core.security.crypto import DecryptionError, MasterKeyError
    from market_pipeline.settings import SettingsError
    from market_pipeline.vendors.base import DayNotCovered, MissingSourceData
    from market_pipeline.vendors.capture_files import CaptureFormatError
    from market_pipeline.vendors.capture_source import CaptureRejected
    from market_pipeline.vendors.live_capture.manifest import ManifestError
    from market_pipeline.vendors.tardis.csv_format import TardisFormatError
    from market_pipeline.vendors.tardis.source import TardisRejected

    expected = {
        SettingsError: ("configuration", Exception),
        MissingSourceData: ("source", Exception),
        DayNotCovered: ("source", MissingSourceData),
        FileRejected: ("input data", Exception),
        TardisFormatError: ("input data", ValueError),
        TardisRejected: ("input data", MissingSourceData),
        MasterKeyError: ("crypto", ValueError),
        DecryptionError: ("crypto", OSError),
        CaptureFormatError: ("capture", ValueError),
        CaptureRejected: ("capture", MissingSourceData),
        ManifestError: ("integrity", ValueError),
        CliError: ("usage", Exception),
    }
    for cls, (kind, old_base) in expected.items():
        assert issubclass(cls, PipelineError), cls
        assert issubclass(cls, old_base), cls
        assert cls.kind == kind, cls
        assert cls.exit_code == _kinds()[kind], cls


def test_a_remote_dependency_or_a_lake_path_a_setting_names_is_a_configuration_error():
    """Issue 36: the lake's bucket, the catalog and the lake's directory are settings pointing at
    something unusable (exit 3); the vendor's store is a source (exit 4)."""
    from market_pipeline.core.lake.storage import RemoteLakeError
    from market_pipeline.core.lake.store_errors import LakeStoreUnavailable
    from market_pipeline.core.lake.warehouse import CatalogUnavailable
    from market_pipeline.core.read.errors import LakeNotFound
    from market_pipeline.vendors.crypto_lake.s3_client import S3SourceError

    for cls, old_base in (
        (LakeStoreUnavailable, Exception),
        (RemoteLakeError, ValueError),
        (CatalogUnavailable, Exception),
        (LakeNotFound, FileNotFoundError),
    ):
        assert issubclass(cls, old_base) and cls.kind == "configuration" and cls.exit_code == 3, cls
        assert PipelineError.by_name[cls.__name__] is cls  # found again by name from a run's event log
    assert S3SourceError.kind == "source" and S3SourceError.exit_code == 4


def test_a_decryption_error_is_still_an_oserror_with_its_message():
    from market_pipeline.core.security.crypto import DecryptionError

    exc = DecryptionError("/x/file.enc", "authentication failed")
    assert isinstance(exc, OSError) and str(exc) == "/x/file.enc: authentication failed"
    assert exc.exit_code == errors.EXIT_CRYPTO


def test_kind_of_finds_an_error_by_class_name_along_its_causes():
    from market_pipeline.vendors.base import MissingSourceData  # noqa: F401  (registers the class)

    found = errors.kind_of(["DagsterExecutionStepExecutionError", "MissingSourceData"])
    assert found is not None and issubclass(found, errors.SourceError) and found.exit_code == errors.EXIT_SOURCE
    assert errors.kind_of(["DagsterExecutionStepExecutionError", "RuntimeError"]) is None


@pytest.mark.nothing_starts("run_command is stubbed: no run starts")
def test_cli_prints_one_line_for_a_pipeline_error_and_the_traceback_only_with_debug(monkeypatch, capsys):
    cli_main = importlib.import_module("market_pipeline.cli.main")
    from market_pipeline.vendors.capture_files import CaptureFormatError

    def broken(*args: object) -> int:
        raise CaptureFormatError("/captures/a.jsonl", 17, "not JSON: re-record the hour or remove the file")

    monkeypatch.setattr(importlib.import_module("market_pipeline.cli.run"), "run_command", broken)
    code = cli_main.main(["run", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_CAPTURE
    assert err.splitlines() == ["error: /captures/a.jsonl:17: not JSON: re-record the hour or remove the file"]

    code = cli_main.main(["run", "--debug", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_CAPTURE
    assert err.startswith("error: /captures/a.jsonl:17") and "Traceback (most recent call last)" in err


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.nothing_starts("run_command is stubbed: no run starts")
def test_cli_turns_an_unexpected_exception_into_one_line_and_exit_70(monkeypatch, capsys, debug):
    cli_main = importlib.import_module("market_pipeline.cli.main")

    def broken(*args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(importlib.import_module("market_pipeline.cli.run"), "run_command", broken)
    argv = ["--debug"] if debug else []
    code = cli_main.main([*argv, "run", "--start-date", "2024-03-01", "--end-date", "2024-03-01"])
    err = capsys.readouterr().err
    assert code == errors.EXIT_INTERNAL
    assert err.splitlines()[0] == "error: internal error: RuntimeError: boom"
    assert ("Traceback (most recent call last)" in err) is debug
