"""Open each report in headless Chromium: screenshot, console errors, network requests.

    python -m fusion.report.check reports/*/index.html

A report must render with no console error and make no network request (only its own
``file://`` URL and inline ``data:`` images). Writes ``<report folder>/screenshot.png``
and exits non-zero when a report fails either check.
"""

from __future__ import annotations

import json
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
    return problems


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
