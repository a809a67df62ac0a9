"""The example app (examples/notes_app) as a project of its own (issue 15): quart_auth_app from
its built wheel in a fresh venv, the example's suite written only with the test kit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_example_suite_passes_from_the_wheel() -> None:
    result = subprocess.run(
        [str(ROOT / "examples" / "run-example-tests"), "-q"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "/venv/lib/" in output  # quart_auth_app came from the venv, not this checkout
    assert " passed" in output and "failed" not in output
