"""JupyterLab in a real browser: the smoke notebook runs, a figure renders and a widget slider redraws.

Starts ``jupyter lab`` from this environment on a free port of 127.0.0.1 with a temporary root (no
token, no browser), drives a Chromium-family browser through Playwright, runs every cell with Run > Run All
Cells, and checks: no error output (in the page and in the saved notebook), a matplotlib figure as an
``<img>`` in an output area, the ``mask_explorer`` rendered as a live widget (not its static fallback),
and that pressing the arrow key on its focused ``p`` slider changes the slider's value and the figure.
The screenshot lands in ``test-artifacts/browser/``. The server (its whole process group) and the
browser are stopped whatever happens.

Which browser: ``$DROPOUT_COURSE_BROWSER`` if set, else the first of ``chromium``, ``chromium-browser``,
``google-chrome``, ``google-chrome-stable`` on ``PATH`` (and their usual install paths), else a
Playwright-managed Chromium under ``~/.cache/ms-playwright`` (or ``$PLAYWRIGHT_BROWSERS_PATH``).
Without one the test SKIPS with a line saying how to enable it, except where it is required: when ``CI``
is set (``.ci/run`` and the GitHub workflow install Debian's Chromium first) or
``DROPOUT_COURSE_REQUIRE_BROWSER=1``, a missing browser FAILS.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "browser" / "widget_smoke.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
BROWSER_ENV = "DROPOUT_COURSE_BROWSER"  # an explicit browser executable
REQUIRE_ENV = "DROPOUT_COURSE_REQUIRE_BROWSER"  # set (like CI) to make a missing browser a failure
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_PATHS = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/snap/bin/chromium",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/opt/google/chrome/chrome",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)
PLAYWRIGHT_GLOBS = (
    "chromium-*/chrome-linux*/chrome",
    "chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/Chromium",
)
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S = 90  # jupyter lab answers after ~10 s on 2 cores, up to ~30 s when they are loaded
RUN_ALL_S = 120  # kernel start + importing torch + the cells


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (server and kernels), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _executable(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def _revision(path: str) -> int:
    """The revision number of a Playwright browser folder (``.../chromium-1200/...`` -> 1200)."""
    digits = re.search(r"chromium-(\d+)", path)
    return int(digits.group(1)) if digits else -1


def find_browser() -> str | None:
    """The Chromium-family browser to drive: $DROPOUT_COURSE_BROWSER, then the usual places, else None."""
    explicit = os.environ.get(BROWSER_ENV)
    if explicit:
        return explicit if _executable(explicit) else None
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    for path in BROWSER_PATHS:
        if _executable(path):
            return path
    cache = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or os.path.expanduser("~/.cache/ms-playwright")
    for pattern in PLAYWRIGHT_GLOBS:
        found = sorted(glob.glob(os.path.join(cache, pattern)), key=_revision, reverse=True)  # newest first
        for path in found:
            if _executable(path):
                return path
    return None


def browser_required() -> bool:
    """True where the test must run: in CI (``CI`` set) or when $DROPOUT_COURSE_REQUIRE_BROWSER is set."""
    return any(
        os.environ.get(var, "").strip().lower() not in ("", "0", "false", "no") for var in ("CI", REQUIRE_ENV)
    )


@pytest.fixture(scope="module")
def chromium() -> str:
    browser = find_browser()
    if browser is not None:
        return browser
    explicit = os.environ.get(BROWSER_ENV)
    where = (
        f"${BROWSER_ENV}={explicit!r} is not an executable file"
        if explicit
        else "no Chromium or Chrome found (chromium, chromium-browser, google-chrome[-stable], ~/.cache/ms-playwright)"
    )
    how = f"install one (Debian/Ubuntu: `sudo apt-get install chromium`) or set {BROWSER_ENV}=/path/to/chrome"
    if browser_required():
        pytest.fail(f"browser test required (CI or {REQUIRE_ENV} is set) but {where}: {how}", pytrace=False)
    pytest.skip(f"browser test skipped: {where}; to run it, {how}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a free port serving a temporary copy of the smoke notebook."""
    root = tmp_path_factory.mktemp("lab")
    home = tmp_path_factory.mktemp("lab-home")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    config = home / "config"
    (config / "labconfig").mkdir(parents=True)
    # No "get Jupyter news?" toast: the announcements plugin is off in this isolated configuration.
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    port = _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    jupyter = Path(sys.executable).with_name("jupyter")
    command = [
        str(jupyter),
        "lab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
        "--IdentityProvider.token=",
        "--ServerApp.password=",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        f"--LabApp.user_settings_dir={home / 'settings'}",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "jupyter-server.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {proc.returncode}; see {log.name}", pytrace=False)
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jupyter lab did not answer within {SERVER_START_S} s; see {log.name}", pytrace=False
                )
            time.sleep(0.5)
        yield {"url": url, "root": root}
    finally:
        _stop_group(proc)
        log.close()


@pytest.fixture(scope="module")
def page(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1500})
            yield context.new_page()
        finally:
            browser.close()


def _run_all_cells(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def test_notebook_runs_with_figure_and_live_widget(page, lab):  # page first: no browser, skip/fail fast
    started = time.monotonic()

    def step(what: str) -> None:  # timings, shown with -s and in the failure report
        print(f"  {time.monotonic() - started:5.1f} s  {what}")

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{lab['url']}/lab/tree/widget_smoke.ipynb")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        step("notebook open")
        # The kernel must be connected before running: the status bar reads "Python 3 (ipykernel) | Idle"
        # (the execution indicator alone says idle already while it reads "No Kernel | Initializing").
        page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=60_000)
        step("kernel idle")
        _run_all_cells(page)

        # Every code cell gets an execution count ("[*]" while running); wait for all of them.
        page.wait_for_function(
            """() => {
                const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
            }""",
            timeout=RUN_ALL_S * 1000,
        )
        step("all cells ran")
        page.wait_for_selector(".jp-OutputArea .widget-slider", timeout=30_000)

        # No error outputs: no traceback in the page.
        outputs = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        stderr = [outputs.nth(i).inner_text() for i in range(outputs.count())]
        assert not any("Traceback" in s or "Error" in s for s in stderr), (
            f"error output in the page: {stderr}"
        )

        # A matplotlib figure rendered as an image in an ordinary output area.
        figure = (
            page.locator(".jp-CodeCell")
            .nth(1)
            .locator(".jp-OutputArea-output[data-mime-type='image/png'] img")
        )
        figure.wait_for(timeout=10_000)
        assert figure.evaluate("img => img.complete && img.naturalWidth > 100"), "figure image did not load"

        # The explorer rendered as a live widget (not the static PNG fallback of the same bundle).
        # (Had the widget manager failed, the bundle's PNG would show instead and there would be no slider.)
        widget_output = page.locator(".jp-CodeCell").nth(2).locator(".widget-vbox:has(.widget-slider)").first
        readout = widget_output.locator(".widget-readout").first
        picture = widget_output.locator(".widget-output img").first
        picture.wait_for(timeout=30_000)
        before_value, before_src = readout.inner_text(), picture.get_attribute("src")
        assert before_value.strip() == "0.50", f"slider starts at {before_value!r}, expected 0.50"

        # Focus the slider's handle and press the right arrow twice: p goes 0.50 -> 0.60 in the slider, the
        # kernel redraws, and the summary line and the figure follow (the figure is sent before the summary).
        handle = widget_output.locator(".widget-slider .noUi-handle").first
        handle.click()
        handle.press("ArrowRight")
        handle.press("ArrowRight")
        page.wait_for_function(
            """(el) => el.querySelector('.widget-readout').textContent.trim() === '0.60'
                       && el.querySelector('.widget-html').textContent.includes('p = 0.60')""",
            arg=widget_output.element_handle(),
            timeout=30_000,
        )
        step("slider moved, figure redrawn")
        after_src = picture.get_attribute("src")
        assert after_src and after_src != before_src, "the figure did not change when the slider moved"
        assert picture.evaluate("img => img.complete && img.naturalWidth > 100"), (
            "redrawn figure did not load"
        )

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator(".jp-CodeCell").nth(1).scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "jupyterlab_widget.png"))

        # Saved to disk, the notebook holds no error output.
        page.keyboard.press("Control+s")
        page.wait_for_timeout(1500)
        saved = json.loads((lab["root"] / NOTEBOOK.name).read_text())
        kinds = [o["output_type"] for c in saved["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        assert kinds and "error" not in kinds, kinds
        assert not errors, f"JavaScript errors in the page: {errors}"
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jupyterlab_failure.png"))
        raise
    finally:
        print(f"browser test took {time.monotonic() - started:.1f} s after the server was up")


@pytest.mark.timeout(300)
def test_course_website_in_the_browser(page, tmp_path):  # page first: no browser, skip/fail fast
    """The small course website of tests/test_book.py, opened from its files: landing page, a notebook
    page whose figure loads, and a collapsed answer that opens on click. Network requests are refused
    (MathJax comes from a CDN, so the math is checked as marked up, not as typeset)."""
    import test_book  # the small book's builder (tests/test_book.py)

    if missing := test_book.missing_book_extra():
        message = f"book extra not installed (no {', '.join(missing)}): pip install -e '.[book]'"
        if browser_required():
            pytest.fail(f"website browser test required but {message}", pytrace=False)
        pytest.skip(f"website browser test skipped: {message}")
    out = test_book.build_small_book(tmp_path)["out"]
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.route(re.compile(r"^https?://"), lambda route: route.abort())
        tab.goto((out / "index.html").as_uri())  # redirects to the landing page
        tab.wait_for_url("**/book/index.html", timeout=15_000)
        assert tab.locator("article h2", has_text="Course map").count() == 1, (
            "no course map on the landing page"
        )

        tab.locator(f"article a[href$='{test_book.NOTEBOOK.replace('.ipynb', '.html')}']").first.click()
        tab.wait_for_url("**/notebooks/*.html", timeout=15_000)
        figure = tab.locator("article .cell_output img").first
        figure.wait_for(timeout=10_000)
        assert figure.evaluate("img => img.complete && img.naturalWidth > 100"), "figure did not load"
        assert tab.locator("article .math").count() >= 2, "no math on the notebook page"
        assert tab.locator("article .widget-static-note").count() == 1, "no note under the widget's figure"

        answer = tab.locator("article details").first
        assert answer.evaluate("d => !d.open"), "the answer is open before a click"
        assert not answer.get_by_text("So the expected output").is_visible()
        answer.locator("summary").click()
        assert answer.evaluate("d => d.open"), "the answer did not open on click"
        assert answer.get_by_text("So the expected output").is_visible()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / "book_notebook_page.png"), full_page=True)
        assert not errors, f"JavaScript errors on the site: {errors}"
    finally:
        context.close()
