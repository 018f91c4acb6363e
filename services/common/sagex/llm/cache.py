"""On-disk cache of chat completions, keyed by everything that determines the answer.

Replaying a run from the cache must cost the same tokens as the original run,
so a record keeps the server's token counts, not just the text. Records are
written atomically; an unreadable record is a miss, never an error, and the
next call overwrites it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

# Part of every key: bump it when the request canonicalisation or record layout changes.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StoredReply:
    """What the server answered to one request, as JSON-able fields."""

    text: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    # [(token, logprob, [(alt, logprob), ...]), ...] or None
    logprobs: list[tuple[str, float, list[tuple[str, float]]]] | None

    @classmethod
    def from_json(cls, data: Any) -> StoredReply:
        if not isinstance(data, dict):
            raise ValueError("record is not an object")
        logprobs = data["logprobs"]
        return cls(
            text=str(data["text"]),
            model=str(data["model"]),
            finish_reason=str(data["finish_reason"]),
            prompt_tokens=int(data["prompt_tokens"]),
            completion_tokens=int(data["completion_tokens"]),
            logprobs=None
            if logprobs is None
            else [(str(t), float(lp), [(str(a), float(alp)) for a, alp in top]) for t, lp, top in logprobs],
        )


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request (sorted keys, no whitespace)."""
    canonical = json.dumps(
        {"format": FORMAT_VERSION, "request": request}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Records under ``root/<first 2 hex>/<remaining hex>.json``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key[2:]}.json"

    def get(self, key: str) -> StoredReply | None:
        path = self.path(key)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return StoredReply.from_json(data["reply"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            # A torn or hand-edited record: treat as a miss; the fresh answer replaces it.
            log.warning("llm_cache_record_unreadable", path=str(path), error=str(e))
            return None

    def put(self, key: str, request: dict[str, Any], reply: StoredReply) -> None:
        path = self.path(key)
        # The request is stored too, so a record can be audited without the code that made it.
        body = json.dumps({"key": key, "request": request, "reply": asdict(reply)}, ensure_ascii=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(body)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            # The answer itself is fine; losing a cache entry only costs a repeat call later.
            log.warning("llm_cache_write_failed", path=str(path), error=str(e))
