"""An offline text corpus, reproducible, deduplicated and split by content hash.

Sources that exist without a network:

* ``stdlib``: docstrings of the standard library (every Python has them);
* ``pydoc``: ``pydoc_data.topics`` (every Python has it);
* ``python3.11-doc``, ``fortunes``, ``bible-kjv``: Debian packages fetched with
  ``apt-get download`` and unpacked with ``dpkg-deb -x`` where apt exists;
* a researcher's own texts (``--extra``, repeatable): a ``.txt`` file (paragraphs
  split on blank lines), a ``.jsonl`` file (one ``{"text": ...}`` per line; the
  field is ``text_field``), a folder of such files (``.txt``, ``.md``, ``.jsonl``,
  searched recursively in name order), or a Hugging Face ``datasets`` folder
  written by ``save_to_disk`` (a Dataset or a DatasetDict, every split, the
  ``text_field`` column), read from disk with no hub access.

Split rules. Every text is normalised (runs of spaces and tabs collapsed, CRLF to
LF), cut at paragraph boundaries into documents of at most 4,000 characters,
and documents under 80 characters are dropped; a document seen twice (in any
sources) is kept once. Each document's split is a function of its text alone:
the first 8 hex digits of its SHA-256, mod 100, give train (0-79), exemplar
(80-89) or held-out (90-99). A source's own splits (a DatasetDict's train/test)
are not used. So adding a source never moves an existing document between
splits, and the held-out part reserved for scoring is never mined for exemplars.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

SPLITS = ("train", "exemplar", "heldout")
# Percent of documents per split, by hash bucket.
SPLIT_BOUNDS = (80, 90, 100)
MIN_CHARS = 80
MAX_CHARS = 4000
DEBIAN_PACKAGES = ("python3.11-doc", "fortunes", "fortunes-min", "bible-kjv-text", "bible-kjv")


@dataclass(frozen=True)
class Document:
    id: str
    source: str
    split: str
    text: str


def _normalise(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text.replace("\r\n", "\n")).strip()


def document_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_of(doc_id: str) -> str:
    bucket = int(doc_id[:8], 16) % 100
    return next(name for name, bound in zip(SPLITS, SPLIT_BOUNDS, strict=True) if bucket < bound)


def _chunks(text: str) -> Iterator[str]:
    """Cut long texts at paragraph boundaries so no document exceeds MAX_CHARS."""
    buf = ""
    for para in re.split(r"\n\s*\n", text):
        if buf and len(buf) + len(para) > MAX_CHARS:
            yield buf
            buf = ""
        buf = f"{buf}\n\n{para}" if buf else para
        while len(buf) > MAX_CHARS:
            yield buf[:MAX_CHARS]
            buf = buf[MAX_CHARS:]
    if buf:
        yield buf


# --- sources -----------------------------------------------------------------


def stdlib_docstrings() -> Iterator[str]:
    # In a clean interpreter: imports in this process (transformers patches
    # logging.Logger, for one) would otherwise change which docstrings appear.
    script = Path(__file__).with_name("_stdlib_docs.py")
    out = subprocess.run([sys.executable, "-I", "-S", str(script)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        yield json.loads(line)


def pydoc_topics() -> Iterator[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield from _chunks(topics[key])


def _debian_root(work: Path) -> Path | None:
    """Download and unpack the Debian text packages once; None where apt is absent."""
    root = work / "debian"
    if (root / ".complete").exists():
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        log.warning("corpus_debian_skipped", reason="apt-get or dpkg-deb not found")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        download = ["apt-get", "download", *DEBIAN_PACKAGES]
        result = subprocess.run(download, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0 and os.geteuid() == 0:
            # A fresh machine may have no package lists yet; as root we can fetch them.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            result = subprocess.run(download, cwd=tmp, capture_output=True, text=True)
        if result.returncode != 0:
            log.warning("corpus_debian_skipped", reason=result.stderr.strip()[-500:])
            return None
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for deb in sorted(Path(tmp).glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root / deb.name.split("_")[0])], check=True)
    (root / ".complete").touch()
    return root


def python_docs(root: Path) -> Iterator[str]:
    sources = root / "python3.11-doc" / "usr/share/doc/python3.11/html/_sources"
    for path in sorted(sources.rglob("*.rst.txt")):
        for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            # Keep prose; drop directives, tables and code-only blocks.
            if len(para) > 200 and not para.lstrip().startswith(("..", "+", "=", "|")):
                yield para


def fortunes(root: Path) -> Iterator[str]:
    for pkg in ("fortunes", "fortunes-min"):
        folder = root / pkg / "usr/share/games/fortunes"
        for path in sorted(folder.glob("*")):
            if path.suffix or not path.is_file():
                continue
            yield from path.read_text(errors="replace").split("\n%\n")


def bible(root: Path) -> Iterator[str]:
    tool = root / "bible-kjv" / "usr/bin/bible"
    data = root / "bible-kjv-text" / "usr/lib"
    out = subprocess.run(
        [str(tool), "-p", str(data), "-m", "8192", "gen1:1-rev22:21"], capture_output=True, text=True, check=True
    ).stdout
    verses: list[str] = []
    for line in out.splitlines():
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m:
            verses.append(m.group(2))
        elif line and not line[0].isspace() and verses and not re.match(r"^\S.* \d+$", line):
            verses[-1] += " " + line.strip()  # continuation of a wrapped verse
        elif re.match(r"^\S.* \d+$", line) or not line:
            pass  # chapter heading or blank line
    for i in range(0, len(verses), 6):
        yield " ".join(verses[i : i + 6])


TEXT_SUFFIXES = (".txt", ".md", ".jsonl")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def hf_dataset(path: Path, text_field: str = "text") -> Iterator[tuple[str, str]]:
    """Texts of a ``datasets`` folder written by ``save_to_disk`` (every split, in split-name order)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise ValueError(f"{path} is a Hugging Face datasets folder; install `datasets` to read it") from exc
    loaded = datasets.load_from_disk(str(path))
    parts = sorted(loaded.items()) if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, ds in parts:
        if text_field not in ds.column_names:
            raise ValueError(f"{path}{'/' + split if split else ''}: no {text_field!r} column (columns: "
                             f"{', '.join(ds.column_names)}); name the text column with --text-field")
        source = f"user:{path.name}" + (f"/{split}" if split else "")
        for batch in ds.iter(batch_size=1000):
            for text in batch[text_field]:
                if text:
                    yield source, str(text)


def user_files(paths: Iterable[Path], text_field: str = "text") -> Iterator[tuple[str, str]]:
    for path in paths:
        if path.is_dir():
            if _is_saved_dataset(path):
                yield from hf_dataset(path, text_field)
                continue
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
            if not files:
                raise ValueError(f"{path}: no {', '.join(TEXT_SUFFIXES)} files and not a datasets folder "
                                 "(save_to_disk)")
            yield from user_files(files, text_field)
        elif path.suffix == ".jsonl":
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)[text_field]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValueError(f"{path}:{n}: expected a JSON object with a {text_field!r} field "
                                     f"({exc})") from exc
                yield f"user:{path.name}", str(text)
        elif path.is_file():
            for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
                yield f"user:{path.name}", para
        else:
            raise ValueError(f"{path}: no such file or folder")


# --- building ----------------------------------------------------------------


def _collect(work: Path, extra: Iterable[Path], use_debian: bool, text_field: str = "text",
             use_builtin: bool = True) -> Iterator[tuple[str, str]]:
    builtin: list[tuple[str, Callable[[], Iterable[str]]]] = [
        ("stdlib", stdlib_docstrings),
        ("pydoc", pydoc_topics),
    ] if use_builtin else []
    root = _debian_root(work) if use_debian and use_builtin else None
    if root is not None:
        builtin += [
            ("python3.11-doc", lambda: python_docs(root)),
            ("fortunes", lambda: fortunes(root)),
            ("bible-kjv", lambda: bible(root)),
        ]
    for source, fn in builtin:
        for text in fn():
            yield source, text
    yield from user_files(extra, text_field)


def build_corpus(out_dir: Path, extra: Iterable[Path] = (), use_debian: bool = True, text_field: str = "text",
                 use_builtin: bool = True) -> Path:
    """Build the corpus into ``out_dir/corpus.jsonl`` and return the manifest path.
    ``use_builtin`` False: only the ``extra`` texts (a researcher's own corpus).

    The manifest records the content hash (the cache key of mined exemplars),
    the sources and the size of every split.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    docs: dict[str, Document] = {}
    for source, raw in _collect(out_dir, [Path(p) for p in extra], use_debian, text_field, use_builtin):
        text = _normalise(raw)
        if len(text) < MIN_CHARS:
            continue
        for chunk in _chunks(text):
            if len(chunk) < MIN_CHARS:
                continue
            doc_id = document_id(chunk)
            docs.setdefault(doc_id, Document(doc_id, source, split_of(doc_id), chunk))
    ordered = sorted(docs.values(), key=lambda d: d.id)
    digest = hashlib.sha256()
    (out_dir / "manifest.json").unlink(missing_ok=True)  # no stale hash beside a new corpus
    tmp = out_dir / "corpus.jsonl.partial"
    with tmp.open("w") as f:
        for doc in ordered:
            line = json.dumps({"id": doc.id, "source": doc.source, "split": doc.split, "text": doc.text})
            f.write(line + "\n")
            digest.update(line.encode())
    tmp.rename(out_dir / "corpus.jsonl")
    manifest = {
        "hash": digest.hexdigest()[:16],
        "documents": len(ordered),
        "sources": _counts(d.source for d in ordered),
        "splits": {s: {"documents": sum(d.split == s for d in ordered),
                       "chars": sum(len(d.text) for d in ordered if d.split == s)} for s in SPLITS},
    }
    # The manifest's hash keys cached indexes: write it atomically, after the corpus.
    tmp_manifest = out_dir / "manifest.json.partial"
    tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp_manifest.replace(out_dir / "manifest.json")
    log.info("corpus_built", hash=manifest["hash"], documents=len(ordered), sources=manifest["sources"])
    return out_dir / "manifest.json"


def _counts(items: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return dict(sorted(counts.items()))


def iter_documents(corpus_dir: Path, split: str | None = None) -> Iterator[Document]:
    """Read a built corpus, optionally one split of it, in id order, one line at a time."""
    path = corpus_dir / "corpus.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no corpus at {corpus_dir}; build one with `sage assets prepare`")
    with path.open() as f:
        for line in f:
            if line.strip():
                doc = Document(**json.loads(line))
                if split is None or doc.split == split:
                    yield doc


def load_documents(corpus_dir: Path, split: str | None = None) -> list[Document]:
    """Read a built corpus, optionally one split of it, in id order."""
    return list(iter_documents(corpus_dir, split))


def corpus_hash(corpus_dir: Path) -> str:
    return str(json.loads((corpus_dir / "manifest.json").read_text())["hash"])
