import os
import shutil
import tempfile

import pytest

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download cannot work here: drive Debian's Chromium, with the flags that
# keep it from stalling on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still sync.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser_page():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (make install puts it there: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="prefloop-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        # Whatever the Content-Security-Policy blocks shows in the console: a page that needs an inline
        # script or style (or anything from elsewhere) fails the test that opened it.
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        try:
            yield page
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
        assert not blocked, f"blocked by the Content-Security-Policy: {blocked}"
