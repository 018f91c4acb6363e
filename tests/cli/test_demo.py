"""`sage demo` end to end: real server processes on loopback, health, triage,
mining, probing, an agent batch job, and a clean SIGTERM shutdown."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sagex.cli.main", "demo", "--mining-tokens", "4000"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "4 of 30 layers loaded" in out
    assert "top exemplars of" in out and "[[" in out
    assert "probing feature" in out
    assert "8/8 features done (0 failed)" in out and "held" in out
    assert "servers stopped cleanly (exit codes 0, 0)" in out


def test_cli_reports_bad_flags() -> None:
    agent = subprocess.run([sys.executable, "-m", "sagex.cli.main", "serve", "agent", "--activation", "nowhere"],
                           capture_output=True, text=True)
    assert agent.returncode != 0 and "host:port" in agent.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--sae", "oops"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "ID=FOLDER" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--sae", "x=/no/such/folder"],
        capture_output=True, text=True,
    )
    assert missing.returncode != 0 and "is not a folder" in missing.stderr
