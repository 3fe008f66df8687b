"""docs/runbook.md stays true: its `bash testable` blocks run, its commands parse, its check table
is complete.

- Every fenced block whose info string is `bash testable [exit=N]` runs with bash, in document
  order, in ONE sandbox (a temporary data dir and Dagster instance, a `.env` in a temporary working
  directory, the synthetic source at a tiny scale on one instrument, a webhook receiver and an S3
  server on 127.0.0.1), and must exit 0 or N. A block calling a `market-pipeline` subcommand another branch
  adds (FROM_OTHER_BRANCHES) skips while this tree lacks it, naming it.
- Every `market-pipeline ...` command in any block, testable or not, parses with the CLI's parser.
- Every check of the code location is named in the runbook as `asset:check`.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.dagster_instance import code_location
from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML, REPO_ROOT, VENV_BIN
from market_pipeline_tests.support.tools import missing_tool
from market_pipeline_tests.support.vendor_lake import VendorLake

RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
DAY = "2024-03-01"
SCALE = "0.005"
# One instrument: every block's command is the same for one or two. Vendor snapshots and book rows
# come at the tests' cadence (TEST_CADENCE, a minute apart): no block depends on it.
INSTRUMENT = ("BINANCE", "BTC-USDT")
# Subcommands the runbook documents that come with branches merged later: their blocks skip (and
# their command lines are not parsed) while this tree lacks them; after the merge they run.
FROM_OTHER_BRANCHES = {"backup": "h/backup", "restore": "h/backup"}
OLD_WEBHOOK_TOKEN = "tok-OLD-runbook-5c1e9a"
NEW_WEBHOOK_TOKEN = "tok-NEW-runbook-7d2f0b"
BLOCK_TIMEOUT_SECONDS = 1800  # a whole-day run on a loaded 2-core box; a hang still ends


# --- the runbook's blocks --------------------------------------------------------------------------

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    heading: str  # the section it is in
    info: str
    code: str

    @property
    def testable(self) -> bool:
        words = self.info.split()
        return len(words) >= 2 and words[0] == "bash" and words[1] == "testable"

    @property
    def expected_exit(self) -> int:
        for word in self.info.split()[2:]:
            if word.startswith("exit="):
                return int(word.removeprefix("exit="))
        return 0

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"L{self.line}-{slug}"


def runbook_blocks(text: str) -> list[Block]:
    """Every fenced block of the markdown `text` (indented ones in list items too)."""
    blocks: list[Block] = []
    heading = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        match = _FENCE.match(line)
        if match:
            indent, fence = match["indent"], match["fence"]
            body: list[str] = []
            j = i + 1
            while j < len(lines) and lines[j].strip() != fence:
                body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
                j += 1
            if j == len(lines):
                raise AssertionError(f"{RUNBOOK}:{i + 1}: the fence is never closed")
            blocks.append(Block(i + 1, heading, match["info"].strip(), "\n".join(body) + "\n"))
            i = j
        i += 1
    return blocks


_SUBSTITUTION = re.compile(r"\$\([^()]*\)")
_REDIRECTION = re.compile(r"\s\d*(?:>>?|<<?)&?\s*[^\s;&|)]*")
_COMMAND = re.compile(r"(?:^|(?<=[\s;&|(]))(?:\S*/)?market-pipeline(?=\s)")
_COMMAND_END = re.compile(r"[;&|)]")


def cli_invocations(code: str) -> list[list[str]]:
    """The argument lists of the `market-pipeline` commands in a shell snippet.

    `$(...)` becomes one placeholder word and redirections go, so `restore "$(ls -d ...)" 2>&1`
    parses as `restore WORD`. `market-pipeline` as an option's value (`sudo -u market-pipeline`)
    or without arguments (a user name) is not a command.
    """
    joined = re.sub(r"\\\n", " ", code)
    found: list[list[str]] = []
    for raw in joined.splitlines():
        line = _REDIRECTION.sub(" ", _SUBSTITUTION.sub("SUBSTITUTION", raw.split(" #")[0]))
        for match in _COMMAND.finditer(line):
            before = line[: match.start()].split()
            if before and before[-1].startswith("-"):
                continue
            rest = line[match.end() :]
            end = _COMMAND_END.search(rest)
            args = shlex.split(rest[: end.start()] if end else rest)
            if args:
                found.append(args)
    return found


def subcommands() -> set[str]:
    import argparse

    from market_pipeline.cli.main import build_parser

    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


BLOCKS = runbook_blocks(RUNBOOK.read_text(encoding="utf-8"))
TESTABLE = [b for b in BLOCKS if b.testable]


# --- fast: the text -------------------------------------------------------------------------------


def test_the_runbook_has_testable_blocks_for_each_task() -> None:
    headings = {b.heading for b in TESTABLE}
    for section in (
        "The daily checklist",
        "Re-run a day",
        "After a crash",
        "Full disk",
        "Damaged warehouse",
        "Rotate the master key",
        "Rotate the webhook token",
        "S3 failover drill",
        "Restore drill",
    ):
        assert section in headings, f"no `bash testable` block under '{section}'"


@pytest.mark.parametrize(
    "block, argv",
    [(b, argv) for b in BLOCKS for argv in cli_invocations(b.code)],
    ids=lambda v: v.name if isinstance(v, Block) else " ".join(v)[:60],
)
def test_every_cli_command_in_the_runbook_parses(block: Block, argv: list[str]) -> None:
    from market_pipeline.cli.main import build_parser

    if argv[0] not in subcommands() and argv[0] in FROM_OTHER_BRANCHES:
        pytest.skip(
            f"market-pipeline {argv[0]} is not a subcommand in this tree (comes with {FROM_OTHER_BRANCHES[argv[0]]})"
        )
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{RUNBOOK}:{block.line}: `market-pipeline {shlex.join(argv)}` does not parse (exit {exc.code})")


def test_the_command_finder_reads_shell_forms() -> None:
    code = (
        "sudo -u market-pipeline env A=1 .venv/bin/market-pipeline health 2>&1 | tee h\n"
        "market-pipeline health > health.json\n"
        'market-pipeline restore "$(ls -d /b/market_pipeline-* | tail -1)" # newest\n'
        "x=$(market-pipeline alert-test); market-pipeline run --start-date D \\\n    --end-date D\n"
        "useradd --system market-pipeline\n"
    )
    assert cli_invocations(code) == [
        ["health"],
        ["health"],
        ["restore", "SUBSTITUTION"],
        ["run", "--start-date", "D", "--end-date", "D"],
    ]


def test_the_runbook_names_every_check_of_the_code_location() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    checks = {
        f"{key.asset_key.to_user_string()}:{key.name}" for key in code_location().resolve_asset_graph().asset_check_keys
    }
    assert len(checks) > 10
    missing = sorted(check for check in checks if f"`{check}`" not in text)
    assert not missing, f"docs/runbook.md does not explain these checks (add them to its check table): {missing}"


# --- slow: the sandbox and the blocks -------------------------------------------------------------


@dataclass
class Sandbox:
    cwd: Path
    env: dict[str, str]
    webhook: object  # support.webhook.Receiver


def _hermetic_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "AWS_"))}
    env.pop("DAGSTER_HOME", None)
    return env


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    pytest.importorskip("moto", reason="the S3 failover drill needs moto's S3 server")
    from market_pipeline.core.security import crypto
    from market_pipeline_tests.support.s3_server import LoopbackS3
    from market_pipeline_tests.support.webhook import Receiver

    for tool in ("jq", "find", "sed"):
        if not any((Path(p) / tool).is_file() for p in os.environ.get("PATH", "").split(os.pathsep)):
            missing_tool(tool, f"the runbook's commands need `{tool}`, which is not installed")
    root = tmp_path_factory.mktemp("runbook")
    home, data, cwd = root / "dagster_home", root / "data", root / "cwd"
    for path in (home, data, cwd):
        path.mkdir(mode=0o700)
    (home / "dagster.yaml").write_bytes(PROJECT_DAGSTER_YAML.read_bytes())

    s3 = LoopbackS3()
    s3.create_bucket("runbook-vendor")
    vendor = VendorLake(root / "vendor")
    import datetime as dt

    vendor(tables=("trades",), instruments=[INSTRUMENT], days=[dt.date.fromisoformat(DAY)])
    s3.upload_tree("runbook-vendor", "market-data", vendor.root)
    master_key = os.urandom(32)
    with Receiver() as webhook:
        # What a production .env holds; the runbook's blocks edit it.
        (cwd / ".env").write_text(
            f"PIPELINE_MASTER_KEY={base64.b64encode(master_key).decode()}\n"
            "PIPELINE_LAKE_ENCRYPTION=on\n"  # the key rotation covers the lake too
            f"PIPELINE_ALERT_WEBHOOK_URL={webhook.url}\n"
            f"PIPELINE_ALERT_WEBHOOK_TOKEN={OLD_WEBHOOK_TOKEN}\n"
            "PIPELINE_ALERTS__WEBHOOK_BACKOFF_SECONDS=0.01\n"
            "PIPELINE_S3__BUCKET=runbook-vendor\n"
            "PIPELINE_S3__PREFIX=market-data\n"
            f"PIPELINE_S3__ENDPOINT_URL={s3.url}\n"
            f"PIPELINE_S3__FALLBACK_ENDPOINT_URL={s3.url}\n"
        )
        env = {
            **_hermetic_environ(),
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO_ROOT),
            "DAGSTER_HOME": str(home),
            "PIPELINE_DATA_DIR": str(data),
            "PIPELINE_SYNTHETIC__SCALE": SCALE,
            "PIPELINE_INSTRUMENTS": ":".join(INSTRUMENT),
            **TEST_CADENCE,
            "PIPELINE_WORKERS": "1",
            "DAY": DAY,
            "NEW_WEBHOOK_TOKEN": NEW_WEBHOOK_TOKEN,
            "BACKUPS": str(root / "backups"),
            "AWS_ACCESS_KEY_ID": "runbook-key-id",
            "AWS_SECRET_ACCESS_KEY": "runbook-secret-key",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        # The box as the runbook finds it: yesterday materialized, one encrypted export.
        first = subprocess.run(
            ["market-pipeline", "run", "--start-date", DAY, "--end-date", DAY, "--no-progress"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_SECONDS,
        )
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        export = data / "exports" / "trades.parquet.enc"
        export.parent.mkdir(mode=0o700)
        plain = root / "trades.parquet"
        plain.write_bytes(b"an export shipped off-site")
        crypto.encrypt_file(plain, export, master_key)
        try:
            yield Sandbox(cwd, env, webhook)
        finally:
            s3.stop()


@pytest.mark.slow
@pytest.mark.parametrize("block", TESTABLE, ids=lambda b: b.name)
@pytest.mark.graph
def test_runbook_block(sandbox: Sandbox, block: Block) -> None:
    missing = sorted({argv[0] for argv in cli_invocations(block.code) if argv[0] not in subcommands()})
    if missing:
        branches = ", ".join(f"{name} ({FROM_OTHER_BRANCHES.get(name, 'unknown')})" for name in missing)
        pytest.skip(f"{RUNBOOK.name}:{block.line}: market-pipeline {branches} is not a subcommand in this tree")
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", block.code],
        cwd=sandbox.cwd,
        env=sandbox.env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_SECONDS,
    )
    assert result.returncode == block.expected_exit, (
        f"{RUNBOOK}:{block.line} ({block.heading}) exited {result.returncode}, not {block.expected_exit}\n"
        f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    )


@pytest.mark.slow
@pytest.mark.graph
def test_after_the_blocks_the_webhook_got_the_test_alert_with_the_new_token(sandbox: Sandbox) -> None:
    requests = sandbox.webhook.requests
    if not requests:
        pytest.skip("the runbook's blocks did not run in this session")
    assert requests[-1]["headers"]["Authorization"] == f"Bearer {NEW_WEBHOOK_TOKEN}"
    assert b'"kind": "test"' in requests[-1]["body"]
