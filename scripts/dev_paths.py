"""Put the project's source roots on the virtual environment's sys.path.

All project code shares the `sagex` namespace but lives in the repository's
fixed folders (protos/, services/*, clients/); a .pth file lists those roots.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = [
    "protos/python",
    "services/common",
    "services/activation",
    "services/agent",
    "services/scoring",
    "clients/python",
]

if __name__ == "__main__":
    pth = Path(sysconfig.get_paths()["purelib"]) / "sagex.pth"
    pth.write_text("".join(f"{ROOT / root}\n" for root in SOURCE_ROOTS))
    print(f"wrote {pth}")
