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

import hashlib
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
from fusion.io.dicom_rois import RTSTRUCT_UID, SEG_UID

TAGS = ["SOPClassUID", "Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
        "FrameOfReferenceUID", "ReferencedFrameOfReferenceSequence",
        "StructureSetROISequence", "ReferencedSeriesSequence", "SegmentSequence"]  # fmt: skip
IMAGE_MODALITIES = {"CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "OT"}
CHUNK = 256  # files per worker task


@dataclass
class Header:
    """What the crawl keeps of one file: no names, dates or IDs, a hash of PatientID."""

    path: str  # relative to the crawled folder
    kind: str  # "image", "rtstruct", "seg" or "other"
    patient_hash: str = ""
    study: str = ""
    series: str = ""
    frame: str = ""
    references: list[str] = field(default_factory=list)  # series UIDs an ROI file names
    structures: list[str] = field(default_factory=list)


def _patient_hash(patient_id: str) -> str:
    return hashlib.sha256(f"fusion-patient:{patient_id}".encode()).hexdigest()[:20]


def read_header(root: Path, relative: str) -> Header | None:
    """The crawl's view of one file, or None when it is not DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(root / relative, stop_before_pixels=True, specific_tags=TAGS)
    except Exception:  # noqa: BLE001 - not DICOM (a README, a thumbnail): skipped
        return None
    sop = str(ds.get("SOPClassUID", ""))
    if not sop and not ds.get("SeriesInstanceUID"):
        return None
    kind = {RTSTRUCT_UID: "rtstruct", SEG_UID: "seg"}.get(sop)
    if kind is None:
        kind = "image" if str(ds.get("Modality", "")) in IMAGE_MODALITIES else "other"
    header = Header(
        relative, kind, _patient_hash(str(ds.get("PatientID", ""))),
        str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")),
        str(ds.get("FrameOfReferenceUID", "")),
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


def crawl(root: Path, cache: Path, jobs: int = 1) -> list[Header]:
    """Every DICOM file's header under ``root``; files whose path, size and modification
    time are in ``cache`` are not read again (a re-run after an interruption resumes)."""
    root = Path(root)
    known: dict[tuple, dict | None] = {}
    if cache.exists():
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                known[tuple(entry["key"])] = entry["header"]
    listing = []
    for folder, _, names in os.walk(root):
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
                log.write(json.dumps({"key": list(key), "header": header}) + "\n")
            log.flush()
    return [Header(**known[f]) for f in sorted(listing) if known.get(f) is not None]


@dataclass
class Pairing:
    """The manifest rows, the ROI files not paired (with why), the structure counts."""

    rows: list[dict]
    unpaired: list[dict]
    structures: pd.DataFrame
    patients: list[dict]


def pair(headers: list[Header]) -> Pairing:
    """Group image files into series and pair each RTSTRUCT/SEG with its series."""
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
                   "export")  # fmt: skip
        elif not h.frame:
            why = "names neither a series nor a Frame of Reference"
        else:
            why = (f"names no series, and {len(candidates)} image series of its study share "
                   "its Frame of Reference" if candidates else "names no series, and no "
                   "image series of its study shares its Frame of Reference")  # fmt: skip
        unpaired.append({"file": h.path, "kind": h.kind.upper(), "reason": why})
    patient_keys: dict[str, str] = {}
    rows, patients = [], []
    # in the export's folder order, which is what the user sees, and deterministic
    ordered = sorted(rois, key=lambda uid: min(f.path for f in series[uid]))
    for number, uid in enumerate(ordered, start=1):
        files = series[uid]
        first = files[0]
        key = patient_keys.setdefault(first.patient_hash, f"P{len(patient_keys) + 1:04d}")
        folders = {str(Path(f.path).parent) for f in files}
        image = os.path.commonpath(sorted(folders)) if len(folders) > 1 else folders.pop()
        chosen = sorted(rois[uid], key=lambda h: (h.kind != "rtstruct", h.path))
        case_id = f"case{number:04d}"
        rows.append({
            "case_id": case_id, "patient": key, "image": image, "series": uid,
            "roi": chosen[0].path, "roi_kind": chosen[0].kind.upper(),
            "other_rois": ";".join(h.path for h in chosen[1:]),
            "structures": ";".join(chosen[0].structures), "label": "",
        })  # fmt: skip
        patients.append({"case_id": case_id, "patient": key, "file": first.path})
    return Pairing(rows, unpaired, structure_table(headers), patients)


def _stem(name: str) -> str:
    """A structure name without case, separators and a trailing number: the key its
    spelling variants share (GTV, gtv_1, GTV-1 -> gtv)."""
    return re.sub(r"[\W_]*\d*$", "", re.sub(r"\s+", " ", name.strip().lower()))


def structure_table(headers: list[Header]) -> pd.DataFrame:
    """Each structure name found, with the ROI files and patients that have it, grouped
    by spelling variant, with the ``cohort.structures`` pattern suggested for the group."""
    files: Counter = Counter()
    patients: dict[str, set[str]] = defaultdict(set)
    for h in headers:
        for name in set(h.structures):
            files[name] += 1
            patients[name].add(h.patient_hash)
    rows = [{"structure": name, "variant_of": _stem(name) or name, "roi_files": count,
             "patients": len(patients[name])} for name, count in files.items()]  # fmt: skip
    table = pd.DataFrame(rows, columns=["structure", "variant_of", "roi_files", "patients"])
    if table.empty:
        return table.assign(suggested_pattern=[])
    suggestions = {}
    for stem, group in table.groupby("variant_of"):
        names = group.structure.tolist()
        exact = len(names) == 1 and names[0].lower() == stem
        suggestions[stem] = names[0] if exact else f"{stem}*"
    table["suggested_pattern"] = table.variant_of.map(suggestions)
    return table.sort_values(["roi_files", "structure"], ascending=[False, True], ignore_index=True)


def patient_ids(root: Path, patients: list[dict]) -> list[dict]:
    """The PatientID of each case, read again from one of its files: for the mapping
    file only, never for the crawl cache or the manifest."""
    import pydicom

    out = []
    for p in patients:
        ds = pydicom.dcmread(root / p["file"], stop_before_pixels=True, specific_tags=["PatientID"])
        out.append({"case_id": p["case_id"], "patient": p["patient"],
                    "PatientID": str(ds.get("PatientID", ""))})  # fmt: skip
    return out


def write_manifest(root: Path, out: Path, jobs: int = 1,
                   outcomes: pd.DataFrame | None = None) -> Pairing:  # fmt: skip
    """Crawl ``root`` and write ``out`` (the manifest, paths relative to its folder), and
    beside it ``.patients.csv`` (case ID -> PatientID: keep it private),
    ``.structures.csv`` and ``.unpaired.csv``. ``outcomes``, indexed by PatientID, fills
    the label and any other columns it has."""
    root, out = Path(root).resolve(), Path(out).resolve()
    headers = crawl(root, out.with_suffix(".crawl.jsonl"), jobs)
    result = pair(headers)
    manifest = pd.DataFrame(result.rows, columns=["case_id", "patient", "image", "series", "roi",
                                                  "roi_kind", "other_rois", "structures",
                                                  "label"])  # fmt: skip
    base = Path(os.path.relpath(root, out.parent))
    for column in ("image", "roi"):
        manifest[column] = [(base / p).as_posix() for p in manifest[column]]
    mapping = pd.DataFrame(patient_ids(root, result.patients),
                           columns=["case_id", "patient", "PatientID"])  # fmt: skip
    if outcomes is not None and not manifest.empty:
        joined = mapping.set_index("case_id").PatientID.map(
            lambda pid: outcomes.loc[pid] if pid in outcomes.index else None
        )
        extra = pd.DataFrame([row.to_dict() if row is not None else {} for row in joined],
                             index=joined.index)  # fmt: skip
        manifest = manifest.drop(columns="label").join(extra, on="case_id")
    outputs = {
        ".patients": mapping,
        ".structures": result.structures,
        ".unpaired": pd.DataFrame(result.unpaired, columns=["file", "kind", "reason"]),
    }
    for suffix, table in outputs.items():
        with atomic_path(out.with_name(f"{out.stem}{suffix}.csv")) as tmp:
            table.to_csv(tmp, index=False)
    with atomic_path(out) as tmp:  # last: a manifest on disk means a finished crawl
        manifest.to_csv(tmp, index=False)
    return result
