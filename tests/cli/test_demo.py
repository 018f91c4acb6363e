"""`sage demo` end to end: real server processes on loopback, health, triage,
mining, probing, an agent batch job, and a clean SIGTERM shutdown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sagex.cli.main", "demo", "--mining-tokens", "4000", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "4 of 30 layers loaded" in out
    assert "top exemplars of" in out and "[[" in out
    assert "probing feature" in out
    assert "8/8 features done (0 failed)" in out and "held" in out
    assert "embedding AUROC [95% CI]" in out and "(n=" in out  # every feature scored on held-out windows
    report = (tmp_path / "report.html").read_text()
    assert report.count('<section class="feature"') == 8 and 'class="tok' in report
    assert "servers stopped cleanly (exit codes 0, 0, 0)" in out


def test_cli_reports_bad_flags() -> None:
    agent = subprocess.run([sys.executable, "-m", "sagex.cli.main", "serve", "agent", "--activation", "nowhere"],
                           capture_output=True, text=True)
    assert agent.returncode != 0 and "host:port" in agent.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--sae", "oops"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "ID=SOURCE" in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "sagex.cli.main", "serve", "activation", "--sae", "x=/no/such/folder"],
        capture_output=True, text=True,
    )
    assert missing.returncode != 0 and "is not a folder" in missing.stderr


def test_serve_refuses_an_open_non_loopback_server_in_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    open_wide = subprocess.run([sys.executable, "-m", "sagex.cli.main", "serve", "agent", "--host", "0.0.0.0",
                                "--port", "0", "--database", str(tmp_path / "a.sqlite3")],
                               capture_output=True, text=True, timeout=120)
    assert open_wide.returncode != 0 and "Traceback" not in open_wide.stderr
    assert "refusing to serve 0.0.0.0" in open_wide.stderr and "--tokens-file" not in open_wide.stderr
    short = tmp_path / "tokens"
    short.write_text("short\n")
    weak = subprocess.run([sys.executable, "-m", "sagex.cli.main", "serve", "agent", "--tokens-file", str(short),
                           "--port", "0", "--database", str(tmp_path / "a.sqlite3")],
                          capture_output=True, text=True, timeout=120)
    assert weak.returncode != 0 and "at least 16 characters" in weak.stderr and "Traceback" not in weak.stderr
