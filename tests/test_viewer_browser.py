"""A real browser on play.py --viewer: headless Chromium loads the page, the scene renders, play.py
keeps running, and Ctrl-C ends it with its metrics. Skips without Chromium (Debian: apt-get install
chromium). VIEWER_SCREENSHOT=docs/viewer.png also keeps the screenshot (the README's picture)."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

pytest.importorskip("viser", reason='the viewer extra is not installed: pip install -e ".[viewer]"')
PIL = pytest.importorskip("PIL.Image")
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")

WIDTH, HEIGHT = 1280, 1250


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class DevTools:
    """Headless Chromium driven over the DevTools protocol: the page gets real seconds to connect
    and draw before the screenshot (WebGL in software: SwiftShader)."""

    def __init__(self, url, profile):
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--use-gl=swiftshader", "--enable-unsafe-swiftshader",
             f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            active = Path(profile) / "DevToolsActivePort"
            wait_for(lambda: active.exists() and active.read_text().strip(), 60, "Chromium's DevTools port")
            self.port = int(active.read_text().split()[0])
            self.find_page()
        except BaseException:
            self.close()
            raise
        self.id = 0

    def find_page(self):
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list"))
        self.ws_url = next(t for t in pages if t["type"] == "page")["webSocketDebuggerUrl"]

    def call(self, method, **params):
        """One DevTools command; on a loaded machine the connection can drop: ask again (3 tries)."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect
        for attempt in range(3):
            self.id += 1
            try:
                with connect(self.ws_url, max_size=2**27) as ws:
                    ws.send(json.dumps({"id": self.id, "method": method, "params": params}))
                    while True:
                        reply = json.loads(ws.recv())
                        if reply.get("id") == self.id:
                            return reply["result"]
            except (ConnectionClosed, OSError):
                if attempt == 2:
                    raise
                time.sleep(2)
                self.find_page()

    def text(self) -> str:
        return self.call("Runtime.evaluate", expression="document.body.innerText")["result"].get("value", "")

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)


@pytest.mark.slow
def test_page_shows_the_robot_walking(tmp_path):
    port = free_port()
    err = open(tmp_path / "play.err", "w+")
    play = subprocess.Popen([sys.executable, "play.py", "--viewer", "--port", str(port), "-B", "1", "--no-progress"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
    browser = None
    try:
        wait_for(lambda: "viewer: http" in Path(err.name).read_text() or play.poll() is not None, 180,
                 "play.py to serve the page")
        assert play.poll() is None, Path(err.name).read_text()
        browser = DevTools(f"http://127.0.0.1:{port}", tmp_path / "profile")
        # Our page, connected and stepping: its readouts (real-time factor, the commands table) are there.
        wait_for(lambda: "real-time factor" in browser.text(), 120, "the page's readouts")
        time.sleep(3)                                        # a few more frames of the walk
        text = browser.text()
        assert "go2_walk.pt" in text and "backend mujoco" in text and "Push" in text and "v_x (m/s)" in text
        # The notice that WebGL runs in software covers the scene's corner: close it.
        browser.call("Runtime.evaluate", expression="document.querySelectorAll('.mantine-Notification-root')"
                                                    ".forEach(e => e.remove())")
        shot = tmp_path / "viewer.png"
        dark = 0.0
        # The camera follows a walking robot: a frame may catch it mid-turn; and on a loaded machine
        # WebGL in software can take a while to draw the first frame (0 % dark once in CI): up to 90 s.
        end = time.monotonic() + 90
        while time.monotonic() < end:
            time.sleep(2.0)
            png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            shot.write_bytes(png)
            img = np.asarray(PIL.open(shot).convert("RGB"), float)
            # The 3D view left of the control panel: the robot is the dark object in the middle of a
            # light floor (a blank or unrendered page has no dark pixels there).
            h, w = img.shape[:2]
            view = img[h // 4: 3 * h // 4, w // 5: 3 * w // 5]
            dark = (view.max(axis=2) < 120).mean()
            if dark > 0.02:
                break
        if os.environ.get("VIEWER_SCREENSHOT"):
            shutil.copy(shot, os.environ["VIEWER_SCREENSHOT"])
        assert dark > 0.02, f"only {dark:.1%} dark pixels where the robot should be"
        assert img.std() > 20
        assert play.poll() is None                           # play.py still running
    finally:
        if browser is not None:
            browser.close()
        if play.poll() is None:
            play.send_signal(signal.SIGINT)                  # Ctrl-C: stop and print the metrics
        out, _ = play.communicate(timeout=120)
    stderr = Path(err.name).read_text()
    assert play.returncode == 0 and "Traceback" not in stderr, stderr
    lines = out.splitlines()
    assert lines[0].startswith("model ") and "(mujoco), 1 envs," in lines[0]
    # play.py's six metrics, each "name value"; the lines after them depend on the policy (the shipped
    # one has a velocity estimator) and on what settled: not asserted here
    metrics = dict(line.split() for line in lines[1:7])
    assert list(metrics) == ["mean_abs_vx_error", "mean_abs_vy_error", "mean_abs_yaw_rate_error",
                             "mean_abs_height_error", "fall_rate", "mean_episode_length_s"], lines
    # numbers; the ones over finished episodes are nan when Ctrl-C comes before the first one ends
    values = {k: float(v) for k, v in metrics.items()}
    assert np.isfinite(values["mean_abs_vx_error"]) and values["mean_abs_vx_error"] < 0.5, lines
