"""Build the documentation site and photograph pages of it in headless Chromium, as a reader sees them.

    python docs/screenshots.py [--out DIR] [--page index.html --page reference.html ...]

Needs the `docs` extra and a Chromium binary (Debian: `apt-get install chromium`). The site is
built into a temporary directory, served on 127.0.0.1 by Python's http.server, and each page is
written to DIR/<page>.png (1280 x 900, the top of the page). Chromium runs with a throw-away
profile and no background networking.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("index.html", "reference.html")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr
        pass


def build_site(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                   cwd=ROOT, check=True)


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    sys.exit(f"no Chromium found (tried {', '.join(BROWSERS)}): apt-get install chromium")


def screenshot(chromium: str, url: str, png: Path, profile: Path) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,900",
                    "--hide-scrollbars", url], check=True, capture_output=True, timeout=120)
    if not png.is_file() or png.stat().st_size < 10_000:
        sys.exit(f"Chromium wrote no usable screenshot of {url}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "site-screenshots", help="where the PNGs go")
    p.add_argument("--page", action="append", help=f"a page of the site (default: {', '.join(PAGES)})")
    args = p.parse_args(argv)
    chromium = browser()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="e5-onnx-docs-") as tmp:
        site = Path(tmp) / "site"
        build_site(site)
        handler = functools.partial(QuietHandler, directory=str(site))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            for page in args.page or PAGES:
                png = args.out / (page.replace("/", "_").removesuffix(".html") + ".png")
                screenshot(chromium, f"http://127.0.0.1:{server.server_port}/{page}", png, Path(tmp) / "profile")
                print(png)
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
