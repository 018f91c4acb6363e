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


def _paragraphs(tag: str, n: int) -> list[str]:
    return [f"{tag} paragraph {i}: a researcher's own text about features, long enough to be kept as a document."
            for i in range(n)]


def test_a_folder_of_text_and_jsonl_files_alone(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.txt").write_text("\n\n".join(_paragraphs("txt", 5)))
    (folder / "nested" / "b.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in _paragraphs("jl", 4)))
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    manifest = json.loads(build_corpus(tmp_path / "out", extra=[folder], use_debian=False, text_field="body",
                                       use_builtin=False).read_text())
    docs = load_documents(tmp_path / "out")
    assert manifest["sources"] == {"user:a.txt": 5, "user:b.jsonl": 4} and len(docs) == 9
    assert sorted(d.text for d in docs) == sorted(_paragraphs("txt", 5) + _paragraphs("jl", 4))
    assert all(d.split == split_of(d.id) for d in docs)
    with pytest.raises(ValueError, match=r"b\.jsonl:1: expected a JSON object with a 'text' field"):
        build_corpus(tmp_path / "bad", extra=[folder], use_debian=False, use_builtin=False)  # default field: text


def test_a_hugging_face_datasets_folder_saved_to_disk(tmp_path: Path) -> None:
    import datasets

    single = tmp_path / "single"
    datasets.Dataset.from_dict({"text": _paragraphs("ds", 6), "label": list(range(6))}).save_to_disk(str(single))
    both = tmp_path / "dict"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": _paragraphs("tr", 3)}),
        "test": datasets.Dataset.from_dict({"text": _paragraphs("te", 2) + _paragraphs("ds", 1)}),  # one duplicate
    }).save_to_disk(str(both))
    manifest = json.loads(build_corpus(tmp_path / "out", extra=[single, both], use_debian=False,
                                       use_builtin=False).read_text())
    docs = load_documents(tmp_path / "out")
    assert len(docs) == 6 + 3 + 2, "the text seen twice is kept once"
    assert manifest["sources"] == {"user:single": 6, "user:dict/train": 3, "user:dict/test": 2}
    # The split is the text's hash bucket, whatever split the dataset had.
    assert all(d.split == split_of(d.id) for d in docs)
    with pytest.raises(ValueError, match="no 'content' column"):
        build_corpus(tmp_path / "bad", extra=[single], use_debian=False, use_builtin=False, text_field="content")
