"""Model fingerprints change with the weights and are memoised."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sagex.activation.assets.fingerprint import folder_fingerprint


def test_fingerprint_follows_content_and_memoises(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"\x00" * 1000)
    (model / "README.md").write_text("not part of the fingerprint")
    memo = tmp_path / "memo.json"
    first = folder_fingerprint(model, memo)
    assert folder_fingerprint(model, memo) == first
    assert len(json.loads(memo.read_text())) == 2, "one memo entry per weight/config file"
    (model / "README.md").write_text("edited")
    assert folder_fingerprint(model, memo) == first
    (model / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 999)  # same size, new content
    os.utime(model / "model.safetensors", ns=(1, 1))
    assert folder_fingerprint(model, memo) != first
