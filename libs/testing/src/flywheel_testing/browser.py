"""Headless Chromium for tests of pages people look at: the DOM a page shows, and a
screenshot of it. Debian's `chromium`, installed by infra/chromium.sh when missing."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]

# No network, no profile state, nothing in the background: a page renders from its file.
_QUIET = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@functools.cache
def chromium() -> str:
    """The Chromium binary (installed on first use when the tests run as root)."""
    found = subprocess.run(
        [ROOT / "infra" / "chromium.sh"], check=True, stdout=subprocess.PIPE, text=True
    )
    return found.stdout.strip()


def _run(page: Path, *arguments: str) -> str:
    with tempfile.TemporaryDirectory(prefix="flywheel-chromium-") as profile:
        done = subprocess.run(
            [chromium(), *_QUIET, f"--user-data-dir={profile}", *arguments, page.as_uri()],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            timeout=120,
        )
    return done.stdout


def rendered_dom(page: Path) -> str:
    """The page's DOM once Chromium loaded it (and ran its scripts, if any)."""
    return _run(page, "--virtual-time-budget=5000", "--dump-dom")


def screenshot(page: Path, image: Path, width: int = 1280, height: int = 2000) -> Path:
    """A PNG of the top `height` pixels of the page, `width` wide."""
    _run(page, f"--screenshot={image}", f"--window-size={width},{height}")
    return image
