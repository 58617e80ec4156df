"""What every browser test shares: Debian's Chromium (Playwright cannot download one
here), where screenshots go, the two widths pages are looked at, and the script that
records Content-Security-Policy violations from before any page script runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import ViewportSize

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)"
)

# Collects what the browser reports, from before any page script runs.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sample}`);
});
"""
