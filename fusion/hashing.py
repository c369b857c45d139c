"""Content hashes of a case's input files: the basis of every per-case cache key.

A DICOM series folder hashes as the sorted list of its files' names and contents, so
renaming, adding or editing any slice changes the key. Hashing reads every byte once:
with a cache folder, each file's digest is kept under a key of its path, size, mtime and
inode, so a warm run on a large DICOM cohort stats its files and reads none of them.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from fusion.engine import Store, cache_key

if TYPE_CHECKING:
    from fusion.cohort import Case

_CHUNK = 1 << 20


def _content_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: Path, cache: Store | None = None) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes); 'missing' if absent.

    With ``cache``, a file whose path, size, mtime and inode are unchanged is not read."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode() + b"\0")
            h.update(file_digest(child, cache).encode())
        return h.hexdigest()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if cache is None:
        return _content_digest(path)
    key = cache_key(os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    digest = cache.get(key)
    if digest is None:
        digest = _content_digest(path)
        cache.put(key, digest)
    return digest


def case_digests(
    cases: list[Case], threads: int = 4, cache: Path | None = None
) -> dict[str, tuple[str, str]]:
    """case_id -> (image hash, ROI hash), hashed in threads (hashlib releases the GIL);
    ``cache`` (the per-case cache folder) keeps file digests between runs."""
    store = Store(cache, "digests") if cache is not None else None

    def one(case: Case) -> tuple[str, tuple[str, str]]:
        roi = file_digest(case.roi, store) if case.roi is not None else "none"
        return case.case_id, (file_digest(case.image, store), roi)

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, cases))
