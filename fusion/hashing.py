"""Content hashes of a case's input files: the basis of every per-case cache key.

A DICOM series folder hashes as the sorted list of its files' names and contents, so
renaming, adding or editing any slice changes the key. Hashing reads every byte, which
costs far less than any stage it lets us skip.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fusion.cohort import Case

_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes); 'missing' if absent."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode() + b"\0")
            h.update(file_digest(child).encode())
        return h.hexdigest()
    if not path.is_file():
        return "missing"
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def case_digests(cases: list[Case], threads: int = 4) -> dict[str, tuple[str, str]]:
    """case_id -> (image hash, ROI hash), hashed in threads (hashlib releases the GIL)."""

    def one(case: Case) -> tuple[str, tuple[str, str]]:
        roi = file_digest(case.roi) if case.roi is not None else "none"
        return case.case_id, (file_digest(case.image), roi)

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, cases))
