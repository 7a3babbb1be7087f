"""Headless Chromium for the tests that check a self-contained HTML page the way a reader sees it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE_PROBE = (
    "<script>window.addEventListener('load', () => {"
    "const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0);"
    "document.body.setAttribute('data-decoded', String(ok.length));});</script></body>"
)
"""Appended before ``</body>`` of a copy: after load it records how many images decoded."""


def chromium() -> str:
    """The Chromium binary; a missing one fails the test (setup.sh installs Debian's)."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is needed for the HTML page tests and was not found: "
        "install it with `apt-get install -y chromium` (test.sh does this)"
    )


def chromium_cmd(profile: Path) -> list[str]:
    """Headless, offline, with its own profile folder and a virtual-time budget for onload."""
    return [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
    ]


def with_image_probe(page: Path, copy: Path) -> Path:
    """A copy of ``page`` with :data:`IMAGE_PROBE` (the page itself stays script-free)."""
    copy.write_text(page.read_text().replace("</body>", IMAGE_PROBE))
    return copy


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM after load, as Chromium renders ``page``."""
    done = subprocess.run(
        [*chromium_cmd(profile), "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and "<body" in done.stdout, done.stderr[-2000:]
    return done.stdout
