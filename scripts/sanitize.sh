#!/usr/bin/env bash
# Build the C++ core with AddressSanitizer + UndefinedBehaviorSanitizer and run the tests on it.
#
#   bash scripts/sanitize.sh [pytest args...]     # default: the whole tests/ directory
#
# The build goes into its own CPython 3.12 venv ($GODEFER_ASAN_VENV, default .venv-asan in the
# repo root) via `GODEFER_SANITIZE=address,undefined pip install .` (CMakeLists.txt adds
# -fsanitize=... for that). The interpreter itself is not instrumented, so the ASan runtime is
# LD_PRELOADed, and PYTHONMALLOC=malloc routes every object allocation through malloc so ASan
# sees use-after-free and overflows on Python objects too. Leak detection is off (the
# interpreter keeps memory at exit by design; scripts/refleak.sh checks leaks). Fails when the
# tests fail or when any sanitizer report appears in the output.
set -uo pipefail

# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
cd "$GODEFER_ROOT" || exit 1

VENV=${GODEFER_ASAN_VENV:-$GODEFER_ROOT/.venv-asan}
SANITIZERS=${GODEFER_SANITIZE:-address,undefined}

py=$(godefer_find_python 3.12) || godefer_die "CPython 3.12 not found (pyenv install 3.12)"
command -v gcc >/dev/null || godefer_die "gcc not found"
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
[[ $libasan == /* && -e $libasan ]] || godefer_die "libasan.so not found (gcc -print-file-name=libasan.so gave '$libasan'; apt-get install libasan8)"

godefer_log "sanitizer build ($SANITIZERS) into $VENV with $py"
export GODEFER_SANITIZE=$SANITIZERS
# A build directory of its own: never share (or overwrite) the CMake cache of the normal build.
build_dir_opt=(--config-settings=build-dir=build/sanitize-{wheel_tag})
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import pytest, coverage' 2>/dev/null; then
    godefer_make_venv "$py" "$VENV" || godefer_die "cannot create $VENV"
    godefer_pip "$VENV" -v --no-cache-dir "${build_dir_opt[@]}" ".[test]" || godefer_die "sanitizer build failed"
else
    godefer_pip "$VENV" -v --no-cache-dir "${build_dir_opt[@]}" --no-deps --force-reinstall . || godefer_die "sanitizer build failed"
fi
unset GODEFER_SANITIZE

# (located without importing it: an ASan-built module only loads with the runtime preloaded)
platlib=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
core=$(ls "$platlib"/godefer/_core*.so 2>/dev/null | head -n 1)
[[ -n $core ]] || godefer_die "godefer/_core*.so not found under $platlib"
# Not `ldd | grep -q`: under pipefail, grep -q leaving early can kill ldd with SIGPIPE, and the
# pipeline then fails although libasan was listed (seen once in CI).
if [[ $(ldd "$core") != *libasan* ]]; then
    tail -n 60 "$VENV/pip.log"
    godefer_die "$core is not linked against libasan: GODEFER_SANITIZE did not reach the build"
fi
godefer_log "instrumented: $core"

preload=$libasan
if [[ $SANITIZERS == *undefined* && $libubsan == /* && -e $libubsan ]]; then
    preload="$libasan $libubsan"
fi

log=$(mktemp -t godefer-asan.XXXXXX)
args=("$@")
((${#args[@]})) || args=(tests)
godefer_log "pytest ${args[*]} under ASan/UBSan"
env LD_PRELOAD="$preload" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    PYTHONMALLOC=malloc \
    PYTHONFAULTHANDLER=1 \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "${args[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

status=0
if grep -q -E 'ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$log"; then
    echo "SANITIZE FAILED: a sanitizer reported an error (see above; full log $log)"
    status=1
fi
if ((rc == 5)); then
    echo "SANITIZE FAILED: pytest collected no tests"
    status=1
elif ((rc != 0)); then
    echo "SANITIZE FAILED: pytest exited $rc"
    status=1
fi
((status)) || { echo "sanitize: OK"; rm -f "$log"; }
exit "$status"
