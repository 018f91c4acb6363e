"""`sage up`: three service processes, wired together, reported healthy, and all
stopped by one Ctrl-C."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time


def free_base(count: int = 3) -> int:
    for base in range(43000, 44000, 7):
        try:
            socks = []
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no three consecutive free ports")


def test_up_starts_three_healthy_services_and_stops_them_together() -> None:
    base = free_base()
    proc = subprocess.Popen([sys.executable, "-m", "sagex.cli.main", "up", "--port-base", str(base)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=dict(os.environ))
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any("all three services are up" in x for x in lines):
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    break
                lines.append(line)
        out = "".join(lines)
        assert "all three services are up" in out, out
        for name, port in (("activation", base), ("agent", base + 1), ("scoring", base + 2)):
            assert f"{name}" in out and f"127.0.0.1:{port}" in out
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=90)
    assert code == 0
    for port in range(base, base + 3):  # every child stopped: nothing listens any more
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
