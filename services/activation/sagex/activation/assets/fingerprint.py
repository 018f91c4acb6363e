"""Content hashes of model folders, memoised by (path, size, mtime).

Mined exemplars are cached under a key that includes the model's weights, so
two fine-tunes with the same architecture and folder name never share an index.
Hashing a large checkpoint takes seconds, so the digest of each file is kept in
a small JSON table and recomputed only when the file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json", ".model", ".txt")  # .txt: BPE merges, vocabularies


def _file_digest(path: Path, memo: dict[str, str]) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in memo:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        memo[key] = digest.hexdigest()
    return memo[key]


def folder_fingerprint(folder: Path, memo_file: Path) -> str:
    """sha256 over the names and contents of the folder's weight and config files."""
    try:
        memo: dict[str, str] = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        digest.update(path.name.encode())
        digest.update(_file_digest(path, memo).encode())
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")  # replicas may share the cache
    tmp.write_text(json.dumps(memo, indent=0))
    tmp.replace(memo_file)
    return digest.hexdigest()[:16]
