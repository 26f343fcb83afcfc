"""Checks of a written report: every section present, every embedded image decodes.

`check_static` parses the HTML and decodes each PNG; `check_in_browser` renders the page in headless
Chromium, reads the DOM after load (the page counts images that failed to decode) and takes a
screenshot. Both return a list of problems (empty: fine).
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from neurocnn.report.build import SECTIONS

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, int] = {}
        self.images: list[tuple[str, str]] = []
        self.external: list[str] = []
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self._current = a["id"]
            self.sections[self._current] = 0
        elif self._current is not None:
            self.sections[self._current] += 1
        if tag == "img":
            self.images.append((a.get("alt") or "", a.get("src") or ""))
        for key in ("src", "href"):
            v = a.get(key) or ""
            if re.match(r"^(https?:)?//", v):
                self.external.append(v)


def check_static(text: str) -> list[str]:
    """Problems found by parsing the HTML and decoding its images."""
    from matplotlib import image as mpimg

    parser = _Collect()
    parser.feed(text)
    problems = [f"section '{s}' missing" for s in SECTIONS if s not in parser.sections]
    problems += [f"section '{s}' is empty" for s, n in parser.sections.items() if n == 0]
    problems += [f"external resource {u} (the report must open offline)" for u in parser.external]
    for alt, src in parser.images:
        if not src.startswith("data:image/png;base64,"):
            problems.append(f"image '{alt}' is not an embedded PNG")
            continue
        try:
            pixels = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))
            if pixels.size == 0:
                raise ValueError("no pixels")
        except Exception as exc:
            problems.append(f"image '{alt}' does not decode ({type(exc).__name__})")
    return problems


def find_chromium() -> str | None:
    return next(
        (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None
    )


def check_in_browser(
    report: Path, screenshot: Path, *, chromium: str | None = None, height: int = 6000
) -> list[str]:
    """Render ``report`` in headless Chromium; problems with sections or images, and a screenshot."""
    chromium = chromium or find_chromium()
    if chromium is None:
        return ["chromium not found (Debian: apt-get install chromium)"]
    url = Path(report).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run(
            [chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        shot = subprocess.run(
            [
                chromium,
                *flags,
                f"--screenshot={Path(screenshot).resolve()}",
                f"--window-size=1280,{height}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    problems = []
    if dom.returncode != 0 or "<section" not in dom.stdout:
        problems.append(f"chromium could not render the page: {dom.stderr.strip()[-300:]}")
        return problems
    broken = re.search(r'data-broken-images="(\d+)"', dom.stdout)
    total = re.search(r'data-images="(\d+)"', dom.stdout)
    if broken is None or total is None:
        problems.append("the page's image check did not run in the browser")
    elif int(broken.group(1)):
        problems.append(f"{broken.group(1)} of {total.group(1)} images are broken in the browser")
    ids = set(re.findall(r'<section id="([^"]+)"', dom.stdout))
    problems += [f"section '{s}' not rendered" for s in SECTIONS if s not in ids]
    if shot.returncode != 0 or not Path(screenshot).exists():
        problems.append(f"no screenshot: {shot.stderr.strip()[-300:]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Check a neurocnn report in headless Chromium.")
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=Path("report.png"))
    args = parser.parse_args(argv)
    problems = check_static(args.report.read_text(encoding="utf-8"))
    problems += check_in_browser(args.report, args.screenshot)
    for p in problems:
        print(f"report check: {p}")
    if not problems:
        print(
            f"report check: all {len(SECTIONS)} sections present, images decode; screenshot {args.screenshot}"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
