"""The smoke workflow's `snakemake --report` HTML, opened in headless Chromium (Chrome DevTools Protocol).

Training is faked (run directories written through the record); aggregation, figures, report.md and
the HTML report run for real. Chromium comes from the distribution (`apt-get install chromium`); the
test skips, saying why, only where it cannot be installed. The screenshot is kept under pytest's
temporary folder (the path is printed) as the test's artifact.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import fake_smoke_results

REPO = Path(__file__).resolve().parents[1]
FIGURE_CHECK = r"""
(async () => {
  const html = document.documentElement.outerHTML;
  const found = [...html.matchAll(/data:image\/png;charset=utf8;filename=([^;]+);base64,[A-Za-z0-9+\/=]+/g)];
  const results = [];
  for (const match of found) {
    const image = new Image();
    const loaded = new Promise(resolve => { image.onload = () => resolve(true); image.onerror = () => resolve(false); });
    image.src = match[0];
    results.push({name: match[1], ok: await loaded, width: image.naturalWidth});
  }
  return JSON.stringify(results);
})()
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                          env=env, timeout=900)
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"apt-get install chromium failed: {done.stderr.strip().splitlines()[-1:]}")
    return shutil.which("chromium")


class DevTools:
    """A minimal Chrome DevTools Protocol client over the page's websocket."""

    def __init__(self, socket):
        self.socket = socket
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for message in self.events:
            if message.get("method") == event:
                return message
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            self.events.append(message)
            if message.get("method") == event:
                return message


def _page_socket(profile: Path, process) -> str:
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.is_file() and port_file.read_text().strip():
            break
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited: {process.stderr.read()[-2000:]}")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
        pages = [t for t in json.loads(answer.read()) if t["type"] == "page"]
    return pages[0]["webSocketDebuggerUrl"]


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(workdir / ".cache")}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
                           str(REPO / "config/smoke.yaml"), *args], cwd=workdir, capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
def test_smoke_html_report_opens_in_chromium(tmp_path_factory):
    chromium = _chromium()
    work = tmp_path_factory.mktemp("browser")
    fake_smoke_results(work)
    for args in (("--cores", "2"), ("--report", str(work / "report.html"))):
        done = _snakemake(work, *args)
        assert done.returncode == 0, done.stderr[-3000:]

    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
    process = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                                f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        from websockets.sync.client import connect

        with connect(_page_socket(profile, process), max_size=None, open_timeout=30) as socket:
            tools = DevTools(socket)
            for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                tools.call(domain)
            tools.call("Page.navigate", url=(work / "report.html").as_uri())
            tools.wait_for("Page.loadEventFired", timeout=120)
            checked = json.loads(tools.call("Runtime.evaluate", expression=FIGURE_CHECK, awaitPromise=True,
                                            returnByValue=True, timeout=120)["result"]["value"])
            time.sleep(1.0)   # let the report's scripts settle before reading the console
            shot = tools.call("Page.captureScreenshot", format="png")["data"]
            tools.call("Runtime.evaluate", expression="1")   # drain pending console events
    finally:
        process.terminate()
        process.wait(timeout=30)
    screenshot = work / "smoke-report.png"
    screenshot.write_bytes(base64.b64decode(shot))
    print(f"screenshot: {screenshot}")

    errors = [e for e in tools.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert not errors, json.dumps(errors[:3])[:2000]
    names = {c["name"] for c in checked}
    expected = {"smoke-faz_qualitative.png", "dice_by_annotation.png", "label_efficiency.png", "cd_diagram.png"}
    expected |= {f"smoke-faz__{a}_{k}.png" for a in ("rotate0", "rotate1") for k in ("per_site_dice", "val_curve",
                                                                                     "fairness")}
    assert expected <= names, sorted(expected - names)
    broken = [c["name"] for c in checked if not c["ok"] or c["width"] < 50]
    assert not broken, broken
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:4] == b"\x89PNG"
