"""Read a clinician's table (the manifest, an outcome sheet) as text cells, as exported.

Spreadsheet programs export CSV in the encoding, separator and decimal mark of the
user's locale: Excel on Windows writes Windows-1252 (or UTF-8 with a byte-order mark,
or UTF-16 for "Unicode text"), and where the decimal mark is a comma the separator is a
semicolon. This module detects each of these instead of assuming UTF-8 and commas:

- encoding: a UTF-8 or UTF-16 byte-order mark, else UTF-8 if the bytes decode, else
  Windows-1252 (which Excel on Windows writes; it decodes every byte except five, for
  which Latin-1 is used);
- separator: the one of ``,``, ``;``, tab and ``|`` that splits the header and the first
  rows into the same number of more than one column (Python's ``csv`` module parses,
  so quoted cells may hold any separator);
- decimal comma: with a separator other than a comma, a column whose every non-blank
  cell is a number written with a decimal comma (``61,5``) or a placeholder (``-``,
  ``NA``) has its numbers rewritten with a point;
- up to 5 title lines above the header (one non-empty cell each) are skipped;
- Excel's ``sep=;`` first line is obeyed;
- ``.xlsx``, ``.xlsm``, ``.xls`` and ``.ods`` workbooks (also under another suffix) are
  read by python-calamine: the first sheet (the others are named in messages), numbers
  that are whole as ``7``, not ``7.0``, so case IDs keep their form, dates as ISO dates.

Column names are stripped of surrounding spaces; rows and unnamed columns that are
entirely empty (a spreadsheet's trailing cells) are dropped. Every cell stays text, so
IDs like ``007`` keep their zeros; callers convert what they need.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fusion.errors import ManifestError

WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")
SEPARATORS = (",", ";", "\t", "|")
SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "vertical bar"}
DECIMAL_COMMA = re.compile(r"^[+-]?\d+(,\d+)?$")
SNIFF_LINES = 50
TITLE_LINES = 5  # at most this many title lines above a header are skipped
# cells that stand for "no value" in a number column: they do not stop a decimal-comma
# column from being converted (the covariate reader then names them)
PLACEHOLDERS = {"-", "\u2013", "\u2014", ".", "?", "na", "n/a", "nan", "missing", "unknown"}


@dataclass
class Table:
    """The cells (all text, NaN where blank), where they came from, and what was
    detected (encoding, separator, decimal comma, sheet), for messages and provenance."""

    frame: pd.DataFrame
    where: str
    detected: list[str] = field(default_factory=list)


def read_table(path: Path) -> Table:
    """Read a CSV or workbook as text cells; raise :class:`ManifestError` naming the file
    when it cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # an .xlsx/.ods saved under another name
        if path.suffix.lower() in WORKBOOK_SUFFIXES or zipped:
            table = _read_workbook(path)
        else:
            table = _read_text(path)
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the file: {exc}") from exc
    frame = table.frame
    frame.columns = [str(c).strip() for c in frame.columns]
    unnamed = [c for c in frame.columns if c == "" or c.startswith("Unnamed:")]
    empty_unnamed = [c for c in unnamed if frame[c].isna().all()]
    table.frame = frame.drop(columns=empty_unnamed).dropna(how="all").reset_index(drop=True)
    return table


def decode(raw: bytes) -> tuple[str, str]:
    """The text of a CSV file and the name of the encoding it was read with."""
    if raw.startswith(codecs.BOM_UTF8):
        return raw[len(codecs.BOM_UTF8) :].decode("utf-8"), "UTF-8 with byte-order mark"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return raw.decode("utf-16"), "UTF-16"
    try:
        return raw.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "Latin-1"


def separator(text: str) -> str | None:
    """The separator that splits the first lines into equal rows of more than one
    column, the most columns winning; None when none does (a one-column file)."""
    lines = [line for line in text.splitlines()[:SNIFF_LINES] if line.strip()]
    best, width = None, 1
    for sep in SEPARATORS:
        rows = list(csv.reader(lines, delimiter=sep))
        widths = {len(r) for r in rows}
        if len(widths) == 1 and (n := widths.pop()) > width:
            best, width = sep, n
    if best is None:  # ragged rows: the separator that gives the header the most columns
        counts = {sep: len(next(csv.reader(lines[:1], delimiter=sep), [])) for sep in SEPARATORS}
        sep, n = max(counts.items(), key=lambda kv: kv[1])
        best = sep if n > 1 else None
    return best


def _title_lines(lines: list[str]) -> int:
    """How many leading lines are a title above the header (a sheet's A1 note exported
    with it): lines with at most one non-empty cell whatever the separator, followed by
    a line with several."""

    def most_cells(line: str) -> int:
        return max(sum(bool(c.strip()) for c in next(csv.reader([line], delimiter=sep), []))
                   for sep in SEPARATORS)  # fmt: skip

    for n, line in enumerate(lines[: TITLE_LINES + 1]):
        if most_cells(line) > 1:
            return n
    return 0


def _read_text(path: Path) -> Table:
    text, encoding = decode(path.read_bytes())
    if not text.strip():
        raise ManifestError(f"{path}: cannot read the table: the file is empty")
    detected = [f"encoding {encoding}"]
    first, _, rest = text.partition("\n")
    if hint := re.fullmatch(r'"?sep=(.)"?', first.strip()):  # Excel's separator hint line
        text, sep = rest, hint.group(1)
    else:
        lines = text.splitlines(keepends=True)
        if skipped := _title_lines(lines):
            text = "".join(lines[skipped:])
            detected.append(f"{skipped} line(s) above the header skipped")
        sep = separator(text) or ","
    name = SEPARATOR_NAMES.get(sep, repr(sep))
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(
            f"{path}: cannot read the table ({encoding}, {name}-separated): {exc}"
        ) from exc
    detected.insert(1, f"{name}-separated")
    if sep != ",":
        converted = []
        for column in frame.columns:
            cells = frame[column].dropna().str.strip()
            cells = cells[(cells != "") & ~cells.str.lower().isin(PLACEHOLDERS)]
            numeric = len(cells) and cells.str.match(DECIMAL_COMMA).all()
            if numeric and cells.str.contains(",").any():
                values = frame[column].str.strip()
                comma = values.str.match(DECIMAL_COMMA, na=False)
                frame.loc[comma, column] = values[comma].str.replace(",", ".", regex=False)
                converted.append(str(column))
        if converted:
            detected.append(f"decimal comma in {', '.join(converted)}")
    return Table(frame, str(path), detected)


def _cell_text(value: object) -> str | float:
    """A workbook cell as the text a CSV export would hold."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value)
    return text if text.strip() else math.nan


def _read_workbook(path: Path) -> Table:
    try:
        sheets = pd.read_excel(path, sheet_name=None, dtype=object, engine="calamine")
    except Exception as exc:  # noqa: BLE001 - calamine raises its own types
        raise ManifestError(f"{path}: cannot read the workbook: {exc}") from exc
    if not sheets:
        raise ManifestError(f"{path}: the workbook has no sheet")
    name, frame = next(iter(sheets.items()))
    frame = frame.map(_cell_text)
    others = f"; the others: {', '.join(map(repr, list(sheets)[1:]))}" if len(sheets) > 1 else ""
    detected = [f"the first sheet, {name!r}, of {len(sheets)}{others}"]
    return Table(frame, f"{path}, sheet {name!r}", detected)
