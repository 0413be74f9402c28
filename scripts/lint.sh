#!/usr/bin/env bash
# Lint: ruff (Python), clang-format (C++ layout) and clang-tidy (C++ static analysis).
#
# The tools come from PyPI into a lint venv ($GODEFER_LINT_VENV, default .venv-lint in the repo
# root, reused when present). clang-tidy reads the compile_commands.json of a CMake configure of
# this checkout against CPython 3.12 (the flags the real build uses); if that configure fails it
# falls back to plain flags.
set -uo pipefail

# shellcheck source=scripts/_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
cd "$GODEFER_ROOT" || exit 1

VENV=${GODEFER_LINT_VENV:-$GODEFER_ROOT/.venv-lint}
BUILD=${GODEFER_LINT_BUILD:-$GODEFER_ROOT/build/lint}
status=0

py312=$(godefer_find_python 3.12) || py312=$(godefer_find_python 3.13) || py312=$(command -v python3) ||
    godefer_die "no Python found for the lint venv"

if [[ ! -x $VENV/bin/clang-tidy || ! -x $VENV/bin/ruff || ! -x $VENV/bin/clang-format || ! -x $VENV/bin/cmake ]]; then
    godefer_log "creating lint venv $VENV ($py312)"
    godefer_make_venv "$py312" "$VENV" || godefer_die "cannot create $VENV"
    godefer_pip "$VENV" ruff clang-format clang-tidy cmake ||
        godefer_die "cannot install the lint tools"
fi
"$VENV/bin/ruff" --version
"$VENV/bin/clang-format" --version
"$VENV/bin/clang-tidy" --version | grep -i version

shopt -s nullglob
cxx_sources=(src/godefer/_core/*.cpp)
cxx_files=(src/godefer/_core/*.cpp src/godefer/_core/*.hpp)
shopt -u nullglob

# --- ruff ------------------------------------------------------------------------------------
godefer_log "ruff check and ruff format --check: src tests bench scripts examples"
py_dirs=()
for d in src tests bench scripts examples; do [[ -d $d ]] && py_dirs+=("$d"); done
if ! "$VENV/bin/ruff" check "${py_dirs[@]}"; then
    echo "LINT FAILED: ruff"
    status=1
fi
if ! "$VENV/bin/ruff" format --check "${py_dirs[@]}"; then
    echo "LINT FAILED: ruff format (fix with: ruff format ${py_dirs[*]})"
    status=1
fi

# --- clang-format ----------------------------------------------------------------------------
if ((${#cxx_files[@]})); then
    godefer_log "clang-format --dry-run --Werror (${#cxx_files[@]} files)"
    if ! "$VENV/bin/clang-format" --dry-run --Werror "${cxx_files[@]}"; then
        echo "LINT FAILED: clang-format (fix with: clang-format -i src/godefer/_core/*.cpp src/godefer/_core/*.hpp)"
        status=1
    fi
else
    godefer_log "no C++ sources yet: clang-format skipped"
fi

# --- clang-tidy ------------------------------------------------------------------------------
if ((${#cxx_sources[@]})); then
    tidy_args=()
    godefer_log "cmake configure for compile_commands.json ($BUILD)"
    rm -rf "$BUILD"
    cmake_log=$(mktemp)
    if "$VENV/bin/cmake" -S . -B "$BUILD" -DPython_EXECUTABLE="$py312" \
        -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_BUILD_TYPE=Release >"$cmake_log" 2>&1 &&
        [[ -f $BUILD/compile_commands.json ]]; then
        tidy_args=(-p "$BUILD")
    else
        tail -n 30 "$cmake_log"
        godefer_log "cmake configure failed: clang-tidy falls back to plain flags"
        inc=$("$py312" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
        tidy_args=(--extra-arg=-std=c++17 --extra-arg=-I"$inc")
        tidy_fallback=(-- -std=c++17 -I"$inc")
    fi
    rm -f "$cmake_log"
    godefer_log "clang-tidy (${#cxx_sources[@]} translation units)"
    tidy_log=$(mktemp)
    tidy_rc=0
    for src in "${cxx_sources[@]}"; do
        if [[ ${tidy_args[0]} == -p ]]; then
            "$VENV/bin/clang-tidy" --quiet "${tidy_args[@]}" --extra-arg=-Wno-unknown-warning-option \
                "$src" >>"$tidy_log" 2>&1 || tidy_rc=1
        else
            "$VENV/bin/clang-tidy" --quiet "$src" "${tidy_fallback[@]}" >>"$tidy_log" 2>&1 || tidy_rc=1
        fi
    done
    grep -v -E '^[0-9]+ warnings? generated\.$|^Suppressed [0-9]+ warnings|^Use -header-filter' "$tidy_log" || true
    nwarn=$(grep -c -E ': warning: ' "$tidy_log" || true)
    nerr=$(grep -c -E ': error: ' "$tidy_log" || true)
    godefer_log "clang-tidy: $nwarn warning(s), $nerr error(s) (.clang-tidy WarningsAsErrors decides what fails)"
    rm -f "$tidy_log"
    if ((tidy_rc)); then
        echo "LINT FAILED: clang-tidy"
        status=1
    fi
else
    godefer_log "no C++ sources yet: clang-tidy skipped"
fi

if ((status)); then
    echo "lint: FAILED"
else
    echo "lint: OK"
fi
exit "$status"
