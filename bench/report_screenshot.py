"""Render a run report in a real headless browser and keep a screenshot.

    python bench/report_screenshot.py [--run /tmp/h_run] [--out bench/report_screenshot.png]

Makes the run when it is missing (synthesize + filter ``pipelines/configs/tiny.yaml``), writes its
report (``stepforge report``), loads ``file://RUN/report.html`` in Debian's chromium
(``apt-get install chromium``; ``chromium-headless-shell`` works too) at 1280x4000, and saves the
PNG, downscaled by half when it is over 1 MB. Ends with ``report_screenshot: PATH (...)``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-headless-shell", "google-chrome", "chrome-headless-shell")
MAX_BYTES = 1_000_000


def stepforge(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, check=True)


def make_run(run: Path) -> None:
    if not (run / "manifest.parquet").exists():
        stepforge("synthesize", str(REPO / "pipelines/configs/tiny.yaml"), "--out", str(run), "--no-progress",
                  "--shard-size", "5")
    stages = json.loads((run / "run.json").read_text()).get("stages", {})
    if (stages.get("filter") or {}).get("status") != "done":  # a rerun would overwrite its throughput
        stepforge("filter", str(run), "--no-progress")


def screenshot(page: Path, png: Path, size: str = "1280,4000") -> str:
    """Load ``page`` in headless chromium and write ``png``; returns the browser used."""
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        sys.exit("report_screenshot: no chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: nothing cached, nothing fetched
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}",
                        page.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    return browser


def shrink(png: Path) -> None:
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").resize((image.width // 2, image.height // 2), Image.LANCZOS)
    small.save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="/tmp/h_run", type=Path)
    parser.add_argument("--out", default=REPO / "bench" / "report_screenshot.png", type=Path)
    args = parser.parse_args()
    make_run(args.run)
    start = time.perf_counter()
    stepforge("report", str(args.run))
    report_s = time.perf_counter() - start
    browser = screenshot(args.run / "report.html", args.out)
    if args.out.stat().st_size > MAX_BYTES:
        shrink(args.out)
    print(f"report_screenshot: {args.out} ({args.out.stat().st_size // 1024} KB, {browser}; "
          f"report written in {report_s:.1f} s)")


if __name__ == "__main__":
    main()
