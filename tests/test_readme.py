"""The README's Quickstart is what CI runs: the same install and test commands, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first_block = re.findall(r"```(?:bash|sh)\n(.*?)```", quickstart, flags=re.S)[0]
    return [line.strip() for line in first_block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_opens_with_a_quickstart():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.index("## Quickstart") < readme.index("\n## ", readme.index("## Quickstart") + 1)
    assert len(quickstart_commands()) == 3, "install, main job, tests"


def test_ci_runs_the_readme_install_and_test_commands():
    install, _main_job, tests = quickstart_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines
    assert tests in ci_lines
    assert ci_lines.index(install) < ci_lines.index(tests)
