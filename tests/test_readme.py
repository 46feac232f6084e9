"""The README's commands and tables stay true."""

from __future__ import annotations

import re
from pathlib import Path

from ragpress.config import settings_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = _block_after("Set up and pass the tests")
    assert "pytest" in command and ".venv" in command
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci


def test_settings_table_is_current() -> None:
    table = README.split("<!-- settings-table:start -->\n", 1)[1].split(
        "\n<!-- settings-table:end -->", 1
    )[0]
    assert table.strip() == settings_table().strip(), "run: ragpress config env > table; paste"
