"""Generate, check and lint the protobuf contracts.

    python scripts/protos.py generate   # write protos/python and protos/third_party (checked in)
    python scripts/protos.py check      # fail if either is stale
    python scripts/protos.py lint       # buf lint (STANDARD), offline

Generation uses grpcio-tools (no extra binary) with mypy-protobuf stubs. buf
needs the googleapis protos we import; they ship in googleapis-common-protos,
so lint builds a throwaway workspace from them instead of fetching a buf module.

The Google protos the contracts import, and the google.rpc ones error details are
made of, are shipped next to them in protos/third_party (copied unchanged from
googleapis-common-protos), so a client in any language builds from this folder
alone: ``protoc -I protos -I protos/third_party ...``.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "protos"
OUT = PROTOS / "python"
THIRD_PARTY = PROTOS / "third_party"
SITE = Path(sysconfig.get_paths()["purelib"])
# googleapis-common-protos ships google/longrunning/operations.proto under the
# file name operations_proto.proto, but its compiled module registers the real
# name; we import the real name and stage the file under it.
RENAMED = {"google/longrunning/operations.proto": "google/longrunning/operations_proto.proto"}
GOOGLE_DEPS = [
    "google/rpc/status.proto",
    "google/longrunning/operations.proto",
    "google/api/annotations.proto",
    "google/api/client.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/api/launch_stage.proto",
]
# What non-Python clients need besides our own files: the imports above, and the
# google.rpc messages that errors carry (Status with BadRequest, RetryInfo, ...).
SHIPPED = [*GOOGLE_DEPS, "google/rpc/error_details.proto", "google/rpc/code.proto"]


def _sources() -> list[str]:
    return sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "sagex").rglob("*.proto"))


def _stage(dest: Path, names: list[str]) -> None:
    for name in names:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SITE / RENAMED.get(name, name), dest / name)


def generate(out: Path, third_party: Path = THIRD_PARTY) -> None:
    with tempfile.TemporaryDirectory() as staged:
        _stage(Path(staged), list(RENAMED))
        _generate(out, Path(staged))
    _stage(third_party, SHIPPED)


def _generate(out: Path, staged: Path) -> None:
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{staged}",
        f"-I{SITE}",
        f"-I{Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bin_dir}/protoc-gen-mypy",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir}/protoc-gen-mypy_grpc",
        f"--mypy_out=quiet:{out}",
        f"--mypy_grpc_out=quiet:{out}",
        *_sources(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Regular packages below sagex.api; `sagex` itself stays a namespace shared
    # with the services and the client.
    for d in [out / "sagex" / "api", *(p for p in (out / "sagex" / "api").rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()


# Modules of the contracts package that are written by hand, beside the generated ones.
HANDWRITTEN = {"api/codec.py", "api/credentials.py"}


def check() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh / "python", fresh / "third_party")
        stale = [p for p in _diff(fresh / "python" / "sagex", OUT / "sagex") if p not in HANDWRITTEN] + [
            f"third_party/{p}" for p in _diff(fresh / "third_party", THIRD_PARTY)]
    if stale:
        print("generated protobuf code or shipped protos are stale; run `make proto`:", *stale, sep="\n  ")
        raise SystemExit(1)
    print("protos/python and protos/third_party are up to date")


def _diff(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    changed = [str(p) for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False)]
    return sorted(changed + [str(p) for p in files_a ^ files_b])


def lint() -> None:
    import yaml

    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    if not Path(buf).exists():
        raise SystemExit("buf not found: `make setup` installs buf-bin")
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        shutil.copytree(PROTOS / "sagex", ws / "sagex")
        _stage(ws / "deps", GOOGLE_DEPS)
        config = yaml.safe_load((PROTOS / "buf.yaml").read_text())
        config["modules"] = [{"path": ".", "excludes": ["deps"]}, {"path": "deps"}]
        config["lint"]["ignore"] = ["deps"]
        (ws / "buf.yaml").write_text(yaml.safe_dump(config))
        result = subprocess.run([buf, "lint"], cwd=ws)
    if result.returncode:
        raise SystemExit(result.returncode)
    print("buf lint: clean")


if __name__ == "__main__":
    commands = {"generate": lambda: generate(OUT), "check": check, "lint": lint}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(commands)}}}")
    commands[sys.argv[1]]()
