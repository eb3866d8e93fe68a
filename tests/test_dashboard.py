"""The launcher's live dashboard, in a real browser (headless Chromium through Selenium, Debian's chromium and
chromium-driver: nothing is downloaded at run time), and its HTTP interface: reading is open, every action needs
the token the launcher printed."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterutil import consecutive_free_ports

from zraft.tools import launch

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("ZRAFT_ARTIFACTS", ROOT / "test-artifacts"))
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FIREFOX = shutil.which("firefox-esr") or shutil.which("firefox")


def _why_no_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    if CHROMEDRIVER is None or CHROMIUM is None:
        return "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)"
    return None


class Launcher:
    """``python launcher.py -n N`` with its dashboard on a free port; its printed lines, the dashboard URL."""

    def __init__(self, tmp: Path, n: int) -> None:
        base = consecutive_free_ports(n)
        self.web = launch.free_ports(1)[0]
        self.data = tmp / "d"
        self.p = subprocess.Popen([sys.executable, str(ROOT / "launcher.py"), "--no-resp", "-n", str(n), "--base-port",
                                   str(base), "--data-dir", str(self.data), "--no-metrics", "--web", str(self.web)],
                                  stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(x) for x in self.p.stdout or ()], daemon=True).start()
        self.url = ""
        end = time.monotonic() + 60
        while True:
            line = self.lines.get(timeout=max(0.01, end - time.monotonic()))
            if line.startswith("dashboard: "):
                self.url = line.split()[1]
            if line.startswith("cluster file:"):
                break
        assert self.url.startswith(f"http://127.0.0.1:{self.web}/?token=")

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    def stop(self) -> None:
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        try:
            for n in launch.load(str(self.data)).nodes:
                launch.signal_pid(n.pid, signal.SIGKILL)
        except launch.LaunchError:
            pass


@pytest.fixture
def five(tmp_path: Path) -> Iterator[Launcher]:
    la = Launcher(tmp_path, 5)
    try:
        yield la
    finally:
        la.stop()


def post(la: Launcher, body: dict[str, object], token: str | None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{la.web}/action", data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    if token is not None:
        req.add_header("X-Zraft-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.skipif(_why_no_browser() is not None, reason=_why_no_browser() or "")
def test_dashboard_in_a_browser_shows_the_cluster_and_its_buttons_work(five: Launcher) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    opts = Options()
    opts.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or ""), options=opts)
    try:
        driver.get(five.url)
        wait = WebDriverWait(driver, 20, poll_frequency=0.1)

        def rows() -> list[tuple[str, str]]:
            return [(r.get_attribute("data-node") or "", r.get_attribute("data-role") or "")
                    for r in driver.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")]

        wait.until(lambda d: len(rows()) == 5 and [r for _, r in rows()].count("leader") == 1)
        leader = next(n for n, r in rows() if r == "leader")
        assert driver.find_element(By.ID, "summary").get_attribute("data-leader") == leader
        assert len(driver.find_elements(By.CSS_SELECTOR, "#ring circle.node")) == 5
        wait.until(lambda d: d.find_element(By.ID, "conn").text == "live")  # the event stream is open

        driver.find_element(By.CSS_SELECTOR, f'button[data-action="kill"][data-node="{leader}"]').click()
        wait.until(lambda d: dict(rows()).get(leader) == "killed")
        wait.until(lambda d: d.find_element(By.ID, "summary").get_attribute("data-leader") not in ("", leader))
        new = driver.find_element(By.ID, "summary").get_attribute("data-leader")
        assert dict(rows())[new or ""] == "leader"
        wait.until(lambda d: f"kill node {leader} (from the page)" in d.find_element(By.ID, "events").text)

        op = Select(driver.find_element(By.ID, "kv-op"))
        op.select_by_visible_text("put")
        driver.find_element(By.ID, "kv-key").send_keys("dashboard")
        driver.find_element(By.ID, "kv-value").send_keys("works")
        driver.find_element(By.ID, "kv-send").click()
        wait.until(lambda d: d.find_element(By.ID, "kv-answer").text == "OK")
        op.select_by_visible_text("get")
        driver.find_element(By.ID, "kv-send").click()
        wait.until(lambda d: d.find_element(By.ID, "kv-answer").text == "works")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    finally:
        driver.quit()


def test_reading_is_open_and_every_action_needs_the_token(five: Launcher) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{five.web}/state", timeout=10) as r:
        assert r.headers.get("Access-Control-Allow-Origin") is None  # no other page may read it through CORS
    end = time.monotonic() + 10
    while True:  # the first round of statuses may still be on its way
        with urllib.request.urlopen(f"http://127.0.0.1:{five.web}/state", timeout=10) as r:
            state = json.loads(r.read())
        if len(state["nodes"]) == 5 and all(n["process"] == "up" for n in state["nodes"]):
            break
        assert time.monotonic() < end, state
        time.sleep(0.1)
    for token in (None, "", "wrong", five.token[:-1]):
        status, answer = post(five, {"action": "kill", "node": 1}, token)
        assert status == 403 and answer["ok"] is False
    with urllib.request.urlopen(f"http://127.0.0.1:{five.web}/state", timeout=10) as r:
        assert all(n["process"] == "up" for n in json.loads(r.read())["nodes"])  # nothing was killed
    assert post(five, {"action": "kv", "op": "put", "key": "k", "value": "v"}, five.token) == (200, {"ok": True})
    assert post(five, {"action": "kv", "op": "get", "key": "k"}, five.token) == (200, {"ok": True, "value": "v"})
    status, answer = post(five, {"action": "explode"}, five.token)
    assert status == 200 and answer["ok"] is False and "unknown action" in str(answer["error"])
    status, answer = post(five, {"action": "kill", "node": 99}, five.token)
    assert answer["ok"] is False and "no node" in str(answer["error"])
    req = urllib.request.Request(f"http://127.0.0.1:{five.web}/action", data=b"{not json", method="POST",
                                 headers={"X-Zraft-Token": five.token})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400


def _why_no_firefox() -> str | None:
    try:
        import websockets  # noqa: F401
    except ImportError:
        return "websockets is not installed (pip install -r requirements.txt)"
    if FIREFOX is None:
        return "firefox is not installed (apt-get install -y firefox-esr)"
    return None


@pytest.mark.skipif(_why_no_firefox() is not None, reason=_why_no_firefox() or "")
def test_dashboard_in_firefox_updates_live_and_kills_the_leader(five: Launcher, tmp_path: Path) -> None:
    """The same page in Firefox, driven over WebDriver BiDi (Firefox's built-in remote agent; no geckodriver,
    which Debian does not ship): live updates arrive, the kill button works, the new leader shows."""
    import asyncio
    import base64

    import websockets

    port = launch.free_ports(1)[0]
    profile = tmp_path / "firefox-profile"
    profile.mkdir()
    ff = subprocess.Popen([FIREFOX or "", "--headless", "--remote-debugging-port", str(port), "--profile",
                           str(profile), "--window-size", "1280,800", "about:blank"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "HOME": str(tmp_path), "MOZ_HEADLESS": "1"})

    async def drive() -> None:
        end = time.monotonic() + 60
        while True:
            try:
                ws = await websockets.connect(f"ws://127.0.0.1:{port}/session", max_size=1 << 26)
                break
            except OSError:
                assert time.monotonic() < end, "Firefox's remote agent did not come up"
                await asyncio.sleep(0.2)
        ids = iter(range(1, 1 << 30))

        async def cmd(method: str, params: dict[str, object]) -> dict[str, object]:
            n = next(ids)
            await ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if m.get("id") == n:
                    assert "error" not in m, m
                    result: dict[str, object] = m["result"]
                    return result

        await cmd("session.new", {"capabilities": {}})
        tree = await cmd("browsingContext.getTree", {})
        ctx = tree["contexts"][0]["context"]  # type: ignore[index]
        await cmd("browsingContext.navigate", {"context": ctx, "url": five.url, "wait": "complete"})

        async def js(expr: str) -> object:
            r = await cmd("script.evaluate", {"expression": expr, "target": {"context": ctx}, "awaitPromise": True})
            return r["result"].get("value")  # type: ignore[attr-defined]

        async def until(expr: str, what: str) -> None:
            end = time.monotonic() + 20
            while not await js(expr):
                assert time.monotonic() < end, f"timed out waiting for {what}"
                await asyncio.sleep(0.1)

        rows = "[...document.querySelectorAll('#nodes tbody tr')]"
        await until(f"{rows}.length === 5 && {rows}.filter(r => r.dataset.role === 'leader').length === 1",
                    "five nodes and one leader")
        await until("document.querySelector('#conn').textContent === 'live'", "the event stream")
        leader = await js("document.querySelector('#summary').dataset.leader")
        assert leader
        await js(f"document.querySelector('button[data-action=kill][data-node=\"{leader}\"]').click(); 1")
        await until(f"{rows}.some(r => r.dataset.node === '{leader}' && r.dataset.role === 'killed')",
                    "the killed node")
        await until(f"!['', '{leader}'].includes(document.querySelector('#summary').dataset.leader)",
                    "a new leader")
        shot = await cmd("browsingContext.captureScreenshot", {"context": ctx})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "dashboard-firefox.png").write_bytes(base64.b64decode(str(shot["data"])))
        await ws.close()

    try:
        asyncio.run(drive())
    finally:
        ff.kill()
        ff.wait()


def test_a_flood_of_idle_connections_holds_bounded_threads_and_passes(five: Launcher) -> None:
    import socket

    import psutil

    from zraft.tools.dashboard import MAX_CONNECTIONS

    before = psutil.Process(five.p.pid).num_threads()
    socks = []
    try:
        for _ in range(3 * MAX_CONNECTIONS):
            s = socket.create_connection(("127.0.0.1", five.web), timeout=5)
            socks.append(s)
        end = time.monotonic() + 1.0  # the server accepts them meanwhile: never more threads than the bound
        while time.monotonic() < end:  # (+8: the launcher's own short-lived threads, e.g. a status client's)
            assert psutil.Process(five.p.pid).num_threads() <= before + MAX_CONNECTIONS + 8
    finally:
        for s in socks:
            s.close()
    end = time.monotonic() + 30  # the idle ones time out; the page is served again
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{five.web}/state", timeout=5) as r:
                assert len(json.loads(r.read())["nodes"]) == 5
                break
        except (OSError, urllib.error.URLError):
            assert time.monotonic() < end
            time.sleep(0.2)


def test_a_request_for_another_host_name_is_refused(five: Launcher) -> None:
    """DNS rebinding: a page of evil.example whose name was made to resolve to 127.0.0.1 reaches the port, but its
    requests say ``Host: evil.example``. They are refused (421); requests for the dashboard's own address or a
    loopback name are served."""
    import http.client

    def get(host: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", five.web, timeout=10)
        try:
            conn.putrequest("GET", "/state", skip_host=True)
            conn.putheader("Host", host)
            conn.endheaders()
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    for bad in ("evil.example", f"evil.example:{five.web}", "127.0.0.1.nip.io", f"localhost:{five.web + 1}"):
        status, body = get(bad)
        assert status == 421 and b"Host header" in body, (bad, status)
    for good in (f"127.0.0.1:{five.web}", f"localhost:{five.web}", "127.0.0.1"):
        status, body = get(good)
        assert status == 200 and "nodes" in json.loads(body), (good, status)
