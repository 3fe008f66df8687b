"""docs/research.md: every python block runs, in order and in one namespace, against the shared
synthetic lake (as a notebook would, from a directory holding the data dir as `data`)."""

from __future__ import annotations

import re
import warnings

import pytest

from market_pipeline_tests.support.project import REPO_ROOT

pytestmark = pytest.mark.graph  # the research lake: `market-pipeline run` over three days

GUIDE = REPO_ROOT / "docs" / "research.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_every_snippet_of_the_research_guide_runs(research_lake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(research_lake["data"])
    monkeypatch.setenv("DAGSTER_HOME", str(research_lake["home"]))
    blocks = python_blocks(GUIDE.read_text())
    assert len(blocks) >= 5
    namespace: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the guide's days all passed: no day is left out
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"{GUIDE}:block {number}", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "spread_and_depth.png").stat().st_size > 0
    markout = namespace["markout"]
    assert markout.height > 0 and markout["markout_1s_bps"].null_count() < markout.height
    assert namespace["rows"] >= namespace["books"].height > 0  # replay: every state, synced or not
