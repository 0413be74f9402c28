#!/usr/bin/env bash
# Reference/memory leak check on the normal (release) build: scripts/refleak_check.py.
#
#   GODEFER_PYTHON=/path/to/venv/bin/python bash scripts/refleak.sh
#
# GODEFER_PYTHON names an interpreter with godefer installed (.ci/run passes its 3.12 test
# venv). Without it, .venv312 in the repo root is used when it has godefer; otherwise a fresh
# CPython 3.12 venv is built at $GODEFER_REFLEAK_VENV (default .venv-refleak).
set -uo pipefail

# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
cd "$GODEFER_ROOT" || exit 1

py=${GODEFER_PYTHON:-}
if [[ -z $py && -x .venv312/bin/python ]] && .venv312/bin/python -c 'import godefer' 2>/dev/null; then
    py=$GODEFER_ROOT/.venv312/bin/python
fi
if [[ -n $py && $py != /* ]]; then
    py=$(command -v "$py" 2>/dev/null || echo "$GODEFER_ROOT/$py")
fi
if [[ -z $py ]]; then
    venv=${GODEFER_REFLEAK_VENV:-$GODEFER_ROOT/.venv-refleak}
    base=$(godefer_find_python 3.12) || godefer_die "CPython 3.12 not found"
    godefer_log "building godefer into $venv"
    godefer_make_venv "$base" "$venv" || godefer_die "cannot create $venv"
    godefer_pip "$venv" . || godefer_die "build failed"
    py=$venv/bin/python
fi

godefer_log "refleak check with $py"
# Run from a scratch directory so the checkout's src/ cannot shadow the installed package.
scratch=$(mktemp -d -t godefer-refleak.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && "$py" "$GODEFER_ROOT/scripts/refleak_check.py")
