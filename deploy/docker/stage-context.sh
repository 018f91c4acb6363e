#!/usr/bin/env bash
# Stage the Docker build context for deploy/docker/Dockerfile in OUT_DIR:
#   * the files the Dockerfile copies, as git sees the work tree (tracked and
#     untracked-but-not-ignored files, so no .venv, caches or build output);
#   * wheels/: a local CPU build of torch 2.13.0 for the base image's Python when
#     this machine has one (pip's find-links, $PIP_FIND_LINKS, or $TORCH_WHEEL);
#     without one the image build downloads it from TORCH_INDEX_URL.
#
#   deploy/docker/stage-context.sh build/docker-context
set -euo pipefail

OUT="${1:?usage: stage-context.sh OUT_DIR}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PATHS=(pyproject.toml requirements.lock protos/python services clients deploy/docker)
PY_TAG="${TORCH_PY_TAG:-cp311}"   # the base image's Python (Debian bookworm and python:3.11-slim: 3.11)

rm -rf "$OUT"
mkdir -p "$OUT/wheels"
OUT="$(cd "$OUT" && pwd)"

cd "$ROOT"
git ls-files -z --cached --others --exclude-standard -- "${PATHS[@]}" \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - \
    | tar -xf - -C "$OUT"

find_torch_wheel() {
    if [ -n "${TORCH_WHEEL:-}" ]; then echo "$TORCH_WHEEL"; return; fi
    local d w
    for d in ${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true); do
        d="${d#file://}"
        for w in "$d"/torch-2.13.0+cpu-"$PY_TAG"-"$PY_TAG"-*"$(uname -m)".whl; do
            if [ -f "$w" ]; then echo "$w"; return; fi
        done
    done
}
wheel="$(find_torch_wheel)"
if [ -n "$wheel" ] && [ -f "$wheel" ]; then
    # A hard link when the wheel is on the same file system; a copy otherwise.
    ln "$wheel" "$OUT/wheels/" 2>/dev/null || cp "$wheel" "$OUT/wheels/"
    echo "stage-context: torch wheel $(basename "$wheel")"
else
    echo "stage-context: no local torch 2.13.0 CPU wheel; the build downloads it (TORCH_INDEX_URL)"
fi
echo "stage-context: $(find "$OUT" -type f | wc -l) files, $(du -sh "$OUT" | cut -f1) in $OUT"
