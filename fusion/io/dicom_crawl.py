"""A manifest from a PACS export: crawl DICOM headers, pair ROIs with their series.

``fusion manifest DICOM_DIR --out manifest.csv`` reads the header of every file under the
folder (pydicom, no pixel data, in worker processes), groups image files into series
by SeriesInstanceUID (a series split across folders is one series), and pairs every
RTSTRUCT and DICOM-SEG with the image series it references, as med-imagetools' crawler
does: first by the referenced SeriesInstanceUID (RTSTRUCT: Referenced Frame of
Reference > RT Referenced Study > RT Referenced Series; SEG: Referenced Series
Sequence), else by a FrameOfReferenceUID that exactly one image series of the same
study shares. What cannot be paired is listed with the reason.

Privacy: the manifest's case IDs (``case0001``...) and patient keys (``P0001``...) are
not DICOM identifiers. PatientID appears only in the mapping file the user keeps
(``<out>.patients.csv``); the crawl cache that makes a re-run resumable
(``<out>.crawl.jsonl``, one line per file keyed by path, size and modification time)
holds a hash of it, never the ID itself. Structure names are counted across patients
(``<out>.structures.csv``) and spelling variants grouped into suggested
``cohort.structures`` patterns.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusion.atomic import atomic_path
from fusion.errors import FusionError, ManifestError
from fusion.io.dicom_rois import RTSTRUCT_UID, SEG_UID
from fusion.io.spreadsheet import read_table

TAGS = ["SOPClassUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
        "FrameOfReferenceUID", "ReferencedFrameOfReferenceSequence",
        "StructureSetROISequence", "ReferencedSeriesSequence", "SegmentSequence"]  # fmt: skip
IMAGE_MODALITIES = {"CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "OT"}
CHUNK = 256  # files per worker task
CACHE_VERSION = 2  # crawl cache entries of another version are read again


@dataclass
class Header:
    """What the crawl keeps of one file: UIDs and structure names, never a patient's
    name, ID or a date (the crawl cache is written from these)."""

    path: str  # relative to the crawled folder
    kind: str  # "image", "rtstruct", "seg" or "other"
    study: str = ""
    series: str = ""
    frame: str = ""
    references: list[str] = field(default_factory=list)  # series UIDs an ROI file names
    structures: list[str] = field(default_factory=list)


def _dcmread(path: Path, **kwargs):  # noqa: ANN003, ANN202 - a pydicom Dataset or None
    """pydicom.dcmread; files without the 128-byte preamble (which GDCM reads) are tried
    again with ``force`` and kept only if they hold DICOM UIDs."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True, **kwargs)
    except pydicom.errors.InvalidDicomError:
        pass
    except Exception:  # noqa: BLE001 - a broken file: skipped and counted
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, **kwargs)
        return ds if ds.get("SOPInstanceUID") or ds.get("SeriesInstanceUID") else None
    except Exception:  # noqa: BLE001 - not DICOM (a README, a thumbnail)
        return None


def read_header(root: Path, relative: str) -> Header | None:
    """The crawl's view of one file, or None when it is not DICOM."""
    ds = _dcmread(root / relative, specific_tags=TAGS)
    if ds is None:
        return None
    sop = str(ds.get("SOPClassUID", ""))
    if not sop and not ds.get("SeriesInstanceUID"):
        return None
    kind = {RTSTRUCT_UID: "rtstruct", SEG_UID: "seg"}.get(sop)
    if kind is None:
        kind = "image" if str(ds.get("Modality", "")) in IMAGE_MODALITIES else "other"
    header = Header(
        relative, kind, str(ds.get("StudyInstanceUID", "")),
        str(ds.get("SeriesInstanceUID", "")), str(ds.get("FrameOfReferenceUID", "")),
    )  # fmt: skip
    if kind == "rtstruct":
        for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
            header.frame = header.frame or str(ref.get("FrameOfReferenceUID", ""))
            for study in ref.get("RTReferencedStudySequence", []):
                for s in study.get("RTReferencedSeriesSequence", []):
                    header.references.append(str(s.SeriesInstanceUID))
        header.structures = [str(r.ROIName) for r in ds.get("StructureSetROISequence", [])]
    elif kind == "seg":
        header.references = [str(r.SeriesInstanceUID)
                             for r in ds.get("ReferencedSeriesSequence", [])]  # fmt: skip
        header.structures = [str(s.SegmentLabel) for s in ds.get("SegmentSequence", [])]
    return header


def _read_chunk(args: tuple[Path, list[tuple[str, int, int]]]) -> list[tuple[tuple, dict | None]]:
    root, files = args
    out = []
    for relative, size, mtime in files:
        header = read_header(root, relative)
        out.append(((relative, size, mtime), None if header is None else header.__dict__))
    return out


def crawl(root: Path, cache: Path, jobs: int = 1) -> tuple[list[Header], int]:
    """Every DICOM file's header under ``root`` (symbolic links followed) and how many
    files were not DICOM; files whose path, size and modification time are in
    ``cache`` (from this version of the crawler) are not read again, so a re-run after an
    interruption resumes."""
    root = Path(root)
    known: dict[tuple, dict | None] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("version") == CACHE_VERSION:
                known[tuple(entry["key"])] = entry["header"]
    listing = []
    for folder, _, names in os.walk(root, followlinks=True):
        for name in sorted(names):
            path = Path(folder) / name
            if path == cache or name.startswith("."):
                continue
            stat = path.stat()
            listing.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    todo = [f for f in sorted(listing) if f not in known]
    chunks = [(root, todo[i : i + CHUNK]) for i in range(0, len(todo), CHUNK)]
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as log, ExitStack() as stack:
        results: Iterable = map(_read_chunk, chunks)
        if jobs > 1 and len(chunks) > 1:  # forkserver, as fusion.engine's pool
            context = multiprocessing.get_context("forkserver")
            pool = stack.enter_context(ProcessPoolExecutor(jobs, mp_context=context))
            results = pool.map(_read_chunk, chunks)
        for batch in results:  # each finished chunk is on disk before the next
            for key, header in batch:
                known[key] = header
                entry = {"version": CACHE_VERSION, "key": list(key), "header": header}
                log.write(json.dumps(entry) + "\n")
            log.flush()
    headers = [Header(**known[f]) for f in sorted(listing) if known.get(f) is not None]
    return headers, len(listing) - len(headers)


def patient_ids(root: Path, paths: Iterable[str]) -> dict[str, str]:
    """PatientID of each file, read again here and kept in memory only: the crawl cache
    never holds it, so a copied cache reveals no patient."""
    out = {}
    for path in paths:
        ds = _dcmread(root / path, specific_tags=["PatientID"])
        out[path] = str(ds.get("PatientID", "")).strip() if ds is not None else ""
    return out


@dataclass
class Pairing:
    """The series paired with ROI files (one row each), the ROI files not paired (with
    why), the structure counts, and the PatientID of each row (in memory only)."""

    rows: list[dict]
    unpaired: list[dict]
    structures: pd.DataFrame
    patient_of_row: list[str]
    files_read: int = 0
    files_skipped: int = 0
    notes: list[str] = field(default_factory=list)


def pair(headers: list[Header], pids: dict[str, str]) -> Pairing:
    """Group image files into series and pair each RTSTRUCT/SEG with its series.
    ``pids`` gives the PatientID of each series' first file and of each ROI file."""
    series: dict[str, list[Header]] = defaultdict(list)
    for h in headers:
        if h.kind == "image" and h.series:
            series[h.series].append(h)
    by_frame: dict[tuple[str, str], set[str]] = defaultdict(set)
    for uid, files in series.items():
        by_frame[(files[0].study, files[0].frame)].add(uid)
    rois: dict[str, list[Header]] = defaultdict(list)
    unpaired = []
    for h in (h for h in headers if h.kind in ("rtstruct", "seg")):
        known = [uid for uid in h.references if uid in series]
        if known:
            rois[known[0]].append(h)
            continue
        candidates = sorted(by_frame.get((h.study, h.frame), set()))
        if len(candidates) == 1:
            rois[candidates[0]].append(h)
            continue
        if h.references:
            why = (f"references series {', '.join(h.references)}, which is not in the "
                   "export (or its files are not readable DICOM)")  # fmt: skip
        elif not h.frame:
            why = "names neither a series nor a Frame of Reference"
        elif candidates:
            why = (
                f"names no series, and {len(candidates)} image series of its study share "
                f"its Frame of Reference ({', '.join(candidates)}): pair it by hand"
            )
        else:
            why = "names no series, and no image series of its study shares its Frame of Reference"
        unpaired.append({"file": h.path, "kind": h.kind.upper(), "reason": why})
    rows, patient_of_row = [], []
    # in the export's folder order, which is what the user sees, and deterministic
    for uid in sorted(rois, key=lambda uid: min(f.path for f in series[uid])):
        files = sorted(series[uid], key=lambda f: f.path)
        folders = {str(Path(f.path).parent) for f in files}
        image = os.path.commonpath(sorted(folders)) if len(folders) > 1 else folders.pop()
        chosen = sorted(rois[uid], key=lambda h: (h.kind != "rtstruct", h.path))
        rows.append({
            "image": image, "series": uid, "roi": chosen[0].path,
            "roi_kind": chosen[0].kind.upper(),
            "other_rois": ";".join(h.path for h in chosen[1:]),
            "structures": ";".join(chosen[0].structures),
        })  # fmt: skip
        patient_of_row.append(pids.get(files[0].path, ""))
    return Pairing(rows, unpaired, structure_table(headers, pids), patient_of_row)


def _stem(name: str) -> str:
    """A structure name without case, separators and a trailing number: the key its
    spelling variants share (GTV, gtv_1, GTV-1 -> gtv)."""
    return re.sub(r"[\W_]*\d*$", "", re.sub(r"\s+", " ", name.strip().lower()))


def structure_table(headers: list[Header], pids: dict[str, str] | None = None) -> pd.DataFrame:
    """Each structure name found, with the ROI files and patients that have it, grouped
    by spelling variant, with the ``cohort.structures`` pattern suggested for the group.
    A group with two of its names in one file gets no pattern (``fusion check`` would
    refuse it there) but its commonest name, and a note."""
    pids = pids or {}
    files: Counter = Counter()
    patients: dict[str, set[str]] = defaultdict(set)
    crowded: Counter = Counter()  # stem -> files holding several of its names
    for h in headers:
        for name in set(h.structures):
            files[name] += 1
            patients[name].add(pids.get(h.path, h.path))
        stems = Counter(_stem(n) or n for n in set(h.structures))
        crowded.update(stem for stem, n in stems.items() if n > 1)
    rows = [{"structure": name, "variant_of": _stem(name) or name, "roi_files": count,
             "patients": len(patients[name])} for name, count in files.items()]  # fmt: skip
    columns = ["structure", "variant_of", "roi_files", "patients"]
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table.assign(suggested_pattern=[], note=[])
    suggestions, notes = {}, {}
    for stem, group in table.groupby("variant_of"):
        names = group.sort_values("roi_files", ascending=False).structure.tolist()
        if crowded[stem]:
            suggestions[stem] = names[0]
            notes[stem] = (f"{crowded[stem]} ROI file(s) hold several of these names: a "
                           "pattern would match more than one there, name one exactly")  # fmt: skip
        else:
            exact = len(names) == 1 and names[0].lower() == stem
            suggestions[stem] = names[0] if exact else f"{stem}*"
    table["suggested_pattern"] = table.variant_of.map(suggestions)
    table["note"] = table.variant_of.map(notes).fillna("")
    return table.sort_values(["roi_files", "structure"], ascending=[False, True], ignore_index=True)


MANIFEST_COLUMNS = ["case_id", "patient", "image", "series", "roi", "roi_kind", "other_rois",
                    "structures", "label"]  # fmt: skip


def _number(text: str, prefix: str) -> int:
    match = re.fullmatch(rf"{prefix}(\d+)", str(text))
    return int(match.group(1)) if match else 0


def write_manifest(root: Path, out: Path, jobs: int = 1, outcomes: pd.DataFrame | None = None,
                   mapping: Path | None = None) -> Pairing:  # fmt: skip
    """Crawl ``root`` and write the manifest ``out`` (paths relative to its folder), and
    beside it ``.structures.csv``, ``.unpaired.csv`` and the crawl cache; the case ID ->
    PatientID mapping goes to ``mapping`` (default ``<out>.patients.csv``).

    A manifest already at ``out`` is updated, never rewritten: its rows stay as they are
    (with the labels and columns the user filled in) and keep their case IDs; only
    series not yet in it are added, with the next free IDs. ``outcomes`` (indexed by
    PatientID) fills the new rows' label and other columns."""
    root, out = Path(root).resolve(), Path(out).resolve()
    if not root.is_dir():
        raise FusionError(f"{root}: not a folder (give the folder of the DICOM export)")
    if out.is_dir():
        raise FusionError(f"{out}: is a folder; give the manifest's file, e.g. {out}/manifest.csv")
    if out.is_relative_to(root):
        raise FusionError(f"{out}: inside the DICOM export; write the manifest elsewhere")
    mapping = Path(mapping).resolve() if mapping else out.with_name(f"{out.stem}.patients.csv")
    headers, skipped = crawl(root, out.with_name(f"{out.stem}.crawl.jsonl"), jobs)
    series_first = {}
    for h in headers:
        if h.kind == "image":
            series_first.setdefault(h.series, h.path)
    rois = [h.path for h in headers if h.kind in ("rtstruct", "seg")]
    result = pair(headers, patient_ids(root, [*series_first.values(), *rois]))
    result.files_read, result.files_skipped = len(headers), skipped

    old = read_table(out).frame if out.exists() else pd.DataFrame(columns=MANIFEST_COLUMNS)
    old_map = (read_table(mapping).frame if mapping.exists()
               else pd.DataFrame(columns=["case_id", "patient", "PatientID"]))  # fmt: skip
    key_of = dict(zip(old_map.get("PatientID", []), old_map.get("patient", []), strict=True))
    next_case = max((_number(c, "case") for c in old.get("case_id", [])), default=0) + 1
    next_key = max((_number(k, "P") for k in key_of.values()), default=0) + 1
    known = set(old.get("series", []))
    base = Path(os.path.relpath(root, out.parent))
    new_rows, new_map = [], []
    for row, pid in zip(result.rows, result.patient_of_row, strict=True):
        if row["series"] in known:
            continue
        if pid not in key_of:
            key_of[pid], next_key = f"P{next_key:04d}", next_key + 1
        case_id, next_case = f"case{next_case:04d}", next_case + 1
        new_rows.append({**row, "case_id": case_id, "patient": key_of[pid], "label": "",
                         "image": (base / row["image"]).as_posix(),
                         "roi": (base / row["roi"]).as_posix()})  # fmt: skip
        new_map.append({"case_id": case_id, "patient": key_of[pid], "PatientID": pid})
    added = pd.DataFrame(new_rows, columns=MANIFEST_COLUMNS)
    if outcomes is not None and not added.empty:
        added = _join_outcomes(added, [m["PatientID"] for m in new_map], outcomes, result)
    if len(known):
        gone = known - {r["series"] for r in result.rows}
        note = f"{len(old)} row(s) of the existing manifest kept as they were, {len(added)} added"
        if gone:
            note += f"; {len(gone)} of its series were not found in this crawl (rows kept)"
        result.notes.append(note)
    result.rows = added.to_dict("records")
    manifest = pd.concat([old, added], ignore_index=True) if len(old) else added
    outputs = {
        mapping: pd.concat([old_map, pd.DataFrame(new_map)], ignore_index=True),
        out.with_name(f"{out.stem}.structures.csv"): result.structures,
        out.with_name(f"{out.stem}.unpaired.csv"): pd.DataFrame(
            result.unpaired, columns=["file", "kind", "reason"]
        ),
        out: manifest,  # last: a manifest on disk means a finished crawl
    }
    for path, table in outputs.items():
        with atomic_path(path) as tmp:
            table.to_csv(tmp, index=False)
    return result


def _join_outcomes(rows: pd.DataFrame, pids: list[str], outcomes: pd.DataFrame,
                   result: Pairing) -> pd.DataFrame:  # fmt: skip
    """The outcome sheet's columns for each row, by PatientID (stripped of spaces);
    the sheet's IDs must be unique and its columns new to the manifest."""
    index = outcomes.index.astype(str).str.strip()
    if repeated := sorted(set(index[index.duplicated()])):
        raise ManifestError(
            f"the outcome sheet lists {len(repeated)} PatientID(s) more than once; one row "
            "per patient is needed (the IDs are in the sheet you gave)"
        )
    clash = [c for c in outcomes.columns if c in MANIFEST_COLUMNS and c != "label"]
    if clash:
        raise ManifestError(
            f"the outcome sheet has column(s) {', '.join(map(repr, clash))}, which the "
            "manifest writes itself; rename them in the sheet"
        )
    sheet = outcomes.set_axis(index)
    found = [pid in sheet.index for pid in pids]
    joined = pd.DataFrame([sheet.loc[pid].to_dict() if ok else {} for pid, ok in
                           zip(pids, found, strict=True)], index=rows.index)  # fmt: skip
    missing = [c for c, ok in zip(rows.case_id, found, strict=True) if not ok]
    result.notes.append(
        f"outcome sheet: {sum(found)} of {len(pids)} new case(s) found by PatientID"
        + (f"; not found (blank label): {', '.join(missing)}" if missing else "")
    )
    result.notes.append(
        f"copied from the outcome sheet: {', '.join(map(str, sheet.columns))}; remove any "
        "column that identifies a patient (name, birth date) before sharing the manifest"
    )
    rows = rows.drop(columns=[c for c in sheet.columns if c in rows.columns])
    return rows.join(joined.reindex(columns=sheet.columns))
