"""What every browser test shares: Debian's Chromium (Playwright cannot download one
here), where screenshots go, the two widths pages are looked at, the script that records
Content-Security-Policy violations from before any page script runs, and ``Browser``: one
page on the real server that signs a reseller in, visits, and checks a page (no violation,
photographed at both widths, nothing scrolling sideways on a phone)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from playwright.sync_api import BrowserContext, Page, ViewportSize, sync_playwright

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

# How wide the page is (the document or its body, whichever scrolls further).
SCROLL_WIDTH = "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"

# What sticks out past the viewport's right edge (to say why a page scrolls sideways).
WIDEST = """
Array.from(document.querySelectorAll("body *"))
  .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .filter((el) => !el.closest(".table-wrap"))
  .slice(0, 5)
  .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)
"""

# Resolves once the page has been laid out and painted twice at its new size: what resizes
# itself (a chart, on its ResizeObserver) has done so by then.
TWO_FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"


@dataclass
class Browser:
    """One page in a browser context of its own, on the server at ``base_url``.

    Screenshots are named ``<tag>-<name>-<width>.png``. Playwright's sync API runs an event
    loop in this thread while the browser is open, where Django refuses database calls:
    make the rows before, read the database after (or through the server's API).
    """

    page: Page
    base_url: str
    tag: str
    javascript: bool
    console: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("console", lambda message: self.console.append(message.text))

    @property
    def context(self) -> BrowserContext:
        return self.page.context

    def violations(self) -> list[str]:
        # Without JavaScript nothing records them (and no script could cause one); the
        # console still reports what the browser blocked.
        found: list[str] = []
        if self.javascript:
            recorded = self.page.evaluate("window.__violations")
            assert recorded is not None, f"nothing records violations on {self.page.url}"
            found = list(recorded)
        return found + [text for text in self.console if "Content Security Policy" in text]

    def assert_clean(self) -> None:
        assert self.violations() == [], self.violations()

    def visit(self, path: str) -> None:
        response = self.page.goto(f"{self.base_url}{path}")
        assert response is not None and response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]

    def check(self, name: str) -> None:
        """One of our pages: no CSP violation; photographed at 1280 px and at 390 px, and at
        neither may it scroll sideways."""
        page = self.page
        assert page.url.startswith(self.base_url), page.url
        self.assert_clean()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)
            if self.javascript:
                page.evaluate(TWO_FRAMES)  # charts resize on the next frame
            shot = SCREENSHOTS / f"{self.tag}-{name}-{size['width']}.png"
            page.screenshot(path=str(shot), full_page=True)
            width = page.evaluate(SCROLL_WIDTH)
            assert width <= size["width"], (name, size["width"], width, page.evaluate(WIDEST))
        page.set_viewport_size(DESKTOP)
        self.assert_clean()

    def sign_in(self, email: str, password: str) -> None:
        """A reseller signs in: /dashboard/ sends a visitor to the form, and back after."""
        self.visit("/dashboard/")
        assert self.page.url.startswith(f"{self.base_url}/dashboard/sign-in/"), self.page.url
        self.page.fill("input[type=email]", email)
        self.page.fill("input[type=password]", password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{self.base_url}/dashboard/")
        self.assert_clean()

    def nav(self, name: str, path: str) -> None:
        """Follow a link of the dashboard's navigation, to ``path``."""
        self.page.get_by_role("navigation").get_by_role("link", name=name, exact=True).click()
        self.page.wait_for_url(f"{self.base_url}{path}")


class OpenBrowser(Protocol):
    def __call__(self, *, javascript: bool, tag: str | None = None) -> Browser: ...


@contextmanager
def browsers(base_url: str, *, tag: str, permissions: Sequence[str] = ()) -> Iterator[OpenBrowser]:
    """Debian's Chromium (headless), which opens a ``Browser`` on ``base_url`` at 1280 px, with
    JavaScript or without; tagged ``tag`` (``<tag>-nojs`` without JavaScript) unless told."""
    default_tag = tag
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)

        def open_browser(*, javascript: bool, tag: str | None = None) -> Browser:
            context = chromium.new_context(viewport=DESKTOP, java_script_enabled=javascript)
            context.add_init_script(RECORD_VIOLATIONS)
            if javascript and permissions:
                context.grant_permissions(list(permissions))
            return Browser(
                page=context.new_page(),
                base_url=base_url,
                tag=tag or (default_tag if javascript else f"{default_tag}-nojs"),
                javascript=javascript,
            )

        try:
            yield open_browser
        finally:
            chromium.close()
