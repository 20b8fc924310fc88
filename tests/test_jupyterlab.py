"""The course as a learner sees it: JupyterLab 4 in headless Chromium (playwright driving the
distribution's Chromium; no browser download).

- Notebooks 03 and 08 as committed: every findings output renders as formatted markdown (its
  bold title), none as a JSON tree, and no table output is taller than one screen. A
  screenshot of each notebook's first findings is written to ``runs/browser/``.
- The patch-path explorer, run in a JupyterLab kernel: its dropdowns and sliders appear, and
  moving the score slider to 1 changes the verdict that the kernel sends back.

Run it with ``make browser`` (part of ``make test``); it needs Chromium at ``/usr/bin/chromium``
(Debian: ``apt-get install chromium``) or at ``$HVP_CHROMIUM``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import expect, sync_playwright

from hvp_utils.analysis.findings import RECORD_KEY

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("HVP_CHROMIUM", "/usr/bin/chromium"))
#: Flags for a closed network: without the background-networking ones Chromium keeps trying
#: to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
SHOTS = ROOT / "runs" / "browser"
COMMITTED = ["03_reliability_and_error_bounds.ipynb", "08_which_estimator_when.ipynb"]
EXPLORER_SOURCE = """\
import hvp_utils as hu
from hvp_utils import viz

model = hu.load_model("toy-ioi", dtype="float64")
tasks = {
    p: hu.ioi_dataset(model, n_prompts=2, perturbation=p, seed=0)
    for p in ("name_swap", "random_token")
}
source = hu.PathSource(model, tasks, hu.components(model, "mlp_out")[:2], n_points=3)
viz.explore(source, component="MLP0", tau=0.0)"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of the notebooks (and an explorer notebook): its URL and
    token. Settings, workspaces and runtime files stay in the temporary folder."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install it (Debian: apt-get install chromium) or set "
            "HVP_CHROMIUM to its path"
        )
    home = tmp_path_factory.mktemp("lab")
    notebooks = home / "notebooks"
    notebooks.mkdir()
    for name in COMMITTED:
        shutil.copy(ROOT / "notebooks" / name, notebooks / name)
    explorer = nbformat.v4.new_notebook()
    explorer.cells = [nbformat.v4.new_code_cell(EXPLORER_SOURCE)]
    explorer.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(explorer, notebooks / "explorer.ipynb")
    # Every cell rendered (no windowing), so that every output can be read and measured.
    settings = home / "settings" / "@jupyterlab"
    tracker = settings / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    news = settings / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir()
    news.write_text(json.dumps({"fetchNews": "false"}))  # no news toast over the screenshots
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={notebooks}",
        "--allow-root",  # CI runs as root
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",  # no extension index offline
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    url, log = f"http://127.0.0.1:{port}", home / "server.log"
    with log.open("w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log_file)
        try:
            wait_for_server(url, token, server, log)
            yield url, token
        finally:
            server.terminate()
            server.wait(timeout=30)


def wait_for_server(url: str, token: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer within 90 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


def open_notebook(browser, lab, name: str):
    url, token = lab
    page = browser.new_page(viewport=VIEWPORT)
    workspace = name.removesuffix(".ipynb")  # its own workspace: no other notebook's tab
    page.goto(f"{url}/lab/workspaces/{workspace}/tree/{name}?reset&token={token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    page.wait_for_load_state("networkidle")
    return page


def findings_titles(name: str) -> list[str]:
    """The title of every findings output of the committed notebook, in order."""
    notebook = json.loads((ROOT / "notebooks" / name).read_text())
    return [
        output["metadata"][RECORD_KEY]["title"]
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if RECORD_KEY in output.get("metadata", {})
    ]


@pytest.mark.parametrize("name", COMMITTED)
def test_findings_render_as_markdown_and_tables_fit_a_screen(browser, lab, name):
    page = open_notebook(browser, lab, name)
    titles = findings_titles(name)
    assert titles, f"{name} has no findings"
    rendered = page.locator(".jp-OutputArea-output.jp-RenderedMarkdown")
    page.wait_for_function(
        f"document.querySelectorAll('.jp-OutputArea-output.jp-RenderedMarkdown strong').length"
        f" >= {len(titles)}",
        timeout=60_000,
    )
    bold = [t.strip() for t in rendered.locator("strong").all_text_contents()]
    for title in titles:
        assert title in bold, f"{name}: findings {title!r} not rendered as markdown"
    assert page.locator(".jp-RenderedJSON").count() == 0, f"{name}: an output shows as JSON"
    shown = [t for t in page.locator(".jp-OutputArea-output table").all() if t.is_visible()]
    assert shown, f"{name}: no table output is visible"
    for table in shown:  # a table folded in <details> is not on the screen
        height = table.bounding_box()["height"]
        assert height <= VIEWPORT["height"], f"{name}: a table output is {height:.0f} px tall"
    first = rendered.filter(has_text=titles[0]).first
    first.scroll_into_view_if_needed()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name.replace(".ipynb", ".png")))
    page.close()


def test_the_explorer_runs_live_in_a_jupyterlab_kernel(browser, lab):
    page = open_notebook(browser, lab, "explorer.ipynb")
    expect(page.locator(".jp-StatusBar-Widget", has_text="| Idle").first).to_be_visible(
        timeout=90_000
    )  # the kernel is up
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    expect(page.locator(".jp-InputPrompt").first).to_have_text("[1]:", timeout=120_000)
    output = page.locator(".jp-OutputArea-output")
    assert "Error" not in " ".join(output.all_text_contents())
    sliders = output.locator(".widget-slider")
    expect(sliders).to_have_count(2, timeout=30_000)  # tau, theta share
    expect(output.locator(".widget-dropdown")).to_have_count(3)  # perturbation, kind, component
    expect(output.locator(".widget-output img")).to_have_count(1)  # the panel
    verdict = output.locator(".widget-html-content").first
    expect(verdict).to_contain_text("r>tau")  # tau = 0: any curvature is flagged
    handle = sliders.first.locator(".noUi-handle")
    handle.focus()
    handle.press("End")  # tau = 1: no score exceeds it
    expect(verdict).not_to_contain_text("r>tau", timeout=60_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "explorer.png"))
    page.close()
