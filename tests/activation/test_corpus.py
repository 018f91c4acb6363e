"""The corpus builder: reproducible, deduplicated, split by content hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sagex.activation.assets.corpus import build_corpus, load_documents, split_of


def test_reproducible_deduplicated_and_split_by_hash(tmp_path: Path) -> None:
    import transformers  # noqa: F401 - patches stdlib logging; must not change the corpus

    extra = tmp_path / "mine.jsonl"
    text = "A user-provided paragraph about sparse autoencoders and the features they learn. " * 2
    extra.write_text(json.dumps({"text": text}) + "\n" + json.dumps({"text": text}) + "\n")
    a = json.loads(build_corpus(tmp_path / "a", extra=[extra], use_debian=False).read_text())
    b = json.loads(build_corpus(tmp_path / "b", extra=[extra], use_debian=False).read_text())
    assert a == b, "the same sources give the same corpus"
    assert (tmp_path / "a" / "corpus.jsonl").read_bytes() == (tmp_path / "b" / "corpus.jsonl").read_bytes()
    docs = load_documents(tmp_path / "a")
    assert sum(d.source == "user:mine.jsonl" for d in docs) == 1, "duplicates are dropped"
    assert {d.split for d in docs} == {"train", "exemplar", "heldout"}
    assert all(d.split == split_of(d.id) for d in docs)
    assert a["sources"]["stdlib"] > 1000 and a["sources"]["pydoc"] > 50


def test_bad_user_file_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"txt": "no text field"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON object with a 'text' field"):
        build_corpus(tmp_path / "out", extra=[bad], use_debian=False)
