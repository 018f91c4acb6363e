#!/bin/sh
# sage-entrypoint: the images' ENTRYPOINT. Runs `sage "$@"` after reading secrets
# from files: for each NAME below, when $NAME is empty and $NAME_FILE names a
# readable, non-empty file, its content (trailing newlines dropped) becomes $NAME.
# Compose mounts secrets under /run/secrets and sets *_FILE; Kubernetes sets the
# variable from a secretKeyRef instead. (The services read $SAGE_TOKEN_FILE and
# auth_tokens_file themselves.)
set -eu
for name in OPENAI_API_KEY; do
    eval "value=\${$name:-}; file=\${${name}_FILE:-}"
    if [ -z "$value" ] && [ -n "$file" ] && [ -s "$file" ] && [ -r "$file" ]; then
        value="$(cat "$file")"
        export "$name=$value"
    fi
done
unset name value file
exec sage "$@"
