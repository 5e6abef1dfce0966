"""The published contract holds: schemathesis sends what /openapi.json allows (and what it does not), and checks
every answer against the schema: documented statuses, shapes, headers, no 5xx (`--checks all`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from lanterne.server.app import create_app

sys.path.insert(0, str(Path(__file__).parent))
from test_server_api import LIMITS, NAME, running, tiny_model  # noqa: E402


@pytest.mark.slow
def test_schemathesis_finds_no_failure(tokenizer_for_contract, tmp_path):
    executable = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    if not Path(executable).exists():
        pytest.skip("schemathesis is not installed (pip install schemathesis)")
    # Bodies up to 4 MB: schemathesis writes long ones, and 413 is not among the answers it expects.
    app = create_app(tiny_model(), tokenizer_for_contract, NAME, replace(LIMITS, max_body_bytes=4 * 2**20))
    with running(app) as base_url:
        result = subprocess.run(
            [executable, "run", f"{base_url}/openapi.json", "--checks", "all", "--max-examples", "40", "--seed", "1",
             "--no-color", "--report-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=1800,
        )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary


@pytest.fixture(scope="module")
def tokenizer_for_contract():
    from test_server_api import CHATML, TEXT
    from lanterne.tokenization import train

    tokenizer = train("bpe", TEXT, 300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = CHATML
    return tokenizer
