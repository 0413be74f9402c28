"""The import hook: modules that import godefer are prepared when they are imported.

A meta path finder placed just before the standard PathFinder (so pytest's assertion rewriter,
which sits in front, keeps the test modules it rewrites; godefer's pytest plugin prepares those)
hands source files to a loader that compiles as usual and looks at the result: only a module
whose code names `godefer` is prepared. Prepared code is cached in __pycache__ under its own tag,
`<name>.<cache_tag>.godefer-<version>-<fingerprint>.pyc`, validated by the source's mtime and size,
and written only when bytecode writing is allowed (PYTHONDONTWRITEBYTECODE, -B,
sys.dont_write_bytecode). The fingerprint hashes the preparer's own source, so prepared code
cached by another build of godefer with the same version number is not reused.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import marshal
import os
import sys
from collections.abc import Iterable, Sequence
from importlib.abc import MetaPathFinder
from pathlib import Path
from types import CodeType, ModuleType

from godefer import _rt
from godefer._prepare import prepare_source

VERSION = "0.1.0"


def preparation_fingerprint(sources: Iterable[Path]) -> str:
    """A short hash of the files that decide what prepared code looks like."""
    digest = hashlib.sha256(VERSION.encode())
    for path in sources:
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(path.name.encode())  # no source shipped: the version decides
    return digest.hexdigest()[:10]


# The modules whose code decides what preparation generates (and so the cache tag).
PREPARER_FILES = ("_prepare.py", "_prepare_ast.py", "_async_exits.py", "_rt.py")
PREPARER_SOURCES = tuple(Path(__file__).with_name(name) for name in PREPARER_FILES)
PREPARATION_TAG = f"{VERSION}-{preparation_fingerprint(PREPARER_SOURCES)}"
CACHE_SUFFIX = f".godefer-{PREPARATION_TAG}.pyc"
_HEADER = len(importlib.util.MAGIC_NUMBER) + 12


def code_uses_godefer(code: CodeType) -> bool:
    """Whether the module (or any function in it) imports godefer."""
    stack = [code]
    while stack:
        co = stack.pop()
        if "godefer" in co.co_names:
            return True
        stack.extend(c for c in co.co_consts if isinstance(c, CodeType))
    return False


def cache_path(source_path: str) -> str:
    standard = importlib.util.cache_from_source(source_path)
    return standard[: -len(".pyc")] + CACHE_SUFFIX


def _header(st: os.stat_result) -> bytes:
    return (
        importlib.util.MAGIC_NUMBER
        + (0).to_bytes(4, "little")
        + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )


def _read_cache(path: str, header: bytes) -> CodeType | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:_HEADER] != header:
        return None
    try:
        code = marshal.loads(data[_HEADER:])
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def _write_cache(path: str, header: bytes, code: CodeType) -> None:
    if sys.dont_write_bytecode:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(header + marshal.dumps(code))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only tree still imports; it just prepares again next time


def load_prepared(source_path: str, source: bytes | None = None) -> CodeType:
    """Prepared code for a source file, from the cache when it is current."""
    st = os.stat(source_path)
    header = _header(st)
    cached = cache_path(source_path)
    code = _read_cache(cached, header)
    if code is None:
        if source is None:
            with open(source_path, "rb") as f:
                source = f.read()
        code, _ = prepare_source(source, source_path)
        assert isinstance(code, CodeType)
        _write_cache(cached, header, code)
    _rt.mark_prepared(code)
    return code


class GodeferLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname: str) -> CodeType | None:
        code = super().get_code(fullname)
        if code is None or fullname.partition(".")[0] == "godefer" or not code_uses_godefer(code):
            return code
        return load_prepared(self.get_filename(fullname))


class GodeferFinder(MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return None
        spec.loader = GodeferLoader(spec.loader.name, spec.loader.path)
        return spec


def install() -> None:
    if any(isinstance(f, GodeferFinder) for f in sys.meta_path):
        return
    for i, finder in enumerate(sys.meta_path):
        if finder is importlib.machinery.PathFinder:
            sys.meta_path.insert(i, GodeferFinder())
            return
    sys.meta_path.append(GodeferFinder())
