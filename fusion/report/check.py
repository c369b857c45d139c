"""Check each report: its structure, then in headless Chromium a screenshot, console
errors and network requests.

    python -m fusion.report.check reports/*/index.html

A report must have no empty section, no unresolved template placeholder or missing
value printed as text, no table that could overflow the page without scrolling, and no
figure without data (:func:`structure_problems`, which needs no browser and which the
tests run on every report they build); and it must render with no console error and
make no network request (only its own ``file://`` URL and inline ``data:`` images).
Writes ``<report folder>/screenshot.png`` and exits non-zero when a report fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
]  # fmt: skip


HEADING = re.compile(r"<h([2-4])[^>]*>(.*?)</h\1>", re.S)
PLACEHOLDER = re.compile(
    r"\{\{.*?\}\}|\{%.*?%\}|>\s*(None|nan|NaN)\s*<|\b(None|nan) (mm|%|cases)\b", re.S
)
CONTENT = re.compile(r"<(table|img|svg|figure|ul|dl|p|div)\b")
SCROLLING_TABLES = re.compile(r"table\s*\{[^}]*overflow-x:\s*auto", re.S)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).strip()


def structure_problems(html: str) -> list[str]:
    """What a reader would find broken in a rendered report, without a browser: a
    section with nothing under it, template syntax or 'None'/'nan' printed as text,
    tables without the horizontal scroll container that keeps a wide one readable, and
    a figure with no image data (an empty SVG or PNG)."""
    problems = []
    body = html.split("<body", 1)[-1]
    headings = list(HEADING.finditer(body))
    for here, after in zip(headings, [*headings[1:], None], strict=True):
        end = after.start() if after else len(body)
        deeper = after is not None and int(after.group(1)) > int(here.group(1))
        segment = body[here.end() : end]
        if not deeper and not CONTENT.search(segment) and not _text(segment):
            problems.append(f"empty section: {_text(here.group(2))!r}")
    for match in PLACEHOLDER.finditer(body):
        context = _text(body[max(0, match.start() - 60) : match.end() + 60])
        problems.append(f"unresolved placeholder or missing value: ...{context}...")
    if "<table" in body and not SCROLLING_TABLES.search(html):
        problems.append("tables have no horizontal scroll container (overflow-x: auto)")
    for figure in re.findall(r"<figure[^>]*>(.*?)</figure>", body, re.S):
        svg_data = re.search(r"<svg.*?<path[^>]* d=\"M", figure, re.S)
        png_data = re.search(r'src="data:image/png;base64,[A-Za-z0-9+/]{100}', figure)
        if not (svg_data or png_data):
            problems.append(f"figure without data: {_text(figure)[:80]!r}")
    return problems


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("chromium not found: install it (Debian package 'chromium')")


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked for, from Chromium's net log, other than file: and data:.

    The browser's own background requests (updates, accounts) have the initiator
    "not an origin"; a request made by the page carries the page's origin.
    """
    if not netlog.is_file():
        return ["no net log written"]
    log = json.loads(netlog.read_text(errors="replace"))
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {
        params["url"]
        for e in log.get("events", [])
        if e.get("type") == start_job
        and "url" in (params := e.get("params", {}))
        and params.get("initiator") != "not an origin"
    }
    return sorted(u for u in urls if not u.startswith(("file://", "data:")))


def check(report: Path) -> list[str]:
    """Problems found with one report (empty: it passed)."""
    report = report.resolve()
    structure = structure_problems(report.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        netlog = Path(tmp) / "netlog.json"
        result = subprocess.run(
            [chromium(), *FLAGS, f"--user-data-dir={tmp}/profile", f"--log-net-log={netlog}",
             f"--screenshot={report.parent / 'screenshot.png'}", "--window-size=1280,9000",
             report.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        # reports have no scripts: any console message at all is a problem
        problems = [line.strip() for line in result.stderr.splitlines() if ":CONSOLE" in line]
        problems += [f"network request: {u}" for u in page_requests(netlog)]
        if result.returncode != 0:
            problems.append(f"chromium exited with {result.returncode}: {result.stderr[-500:]}")
    return structure + problems


def main(argv: list[str] | None = None) -> int:
    reports = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not reports:
        print("no report given", file=sys.stderr)
        return 2
    failed = 0
    for report in reports:
        problems = check(report)
        status = "ok" if not problems else "FAILED"
        print(f"{report}: {status}; screenshot {report.parent / 'screenshot.png'}")
        for problem in problems:
            print(f"  {problem}")
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
