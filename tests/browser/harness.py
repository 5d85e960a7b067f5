"""The browser harness, shared by the browser tests and the browser benchmark (``benchmarks/browser.py``):
a JupyterLab (or Notebook 7) server on 127.0.0.1 with its own config, data, runtime and settings folders (no first-run pop-ups, no
requests to jupyter.org), and Debian's headless Chromium with the flags that keep it off the network.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent  # the virtualenv's bin: jupyter-lab and voila live beside this python
CHROMIUM = Path(os.environ.get("EXPLORER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_S = 90

# JupyterLab user settings written before the server starts: no news or update checks (they would show a toast
# asking for consent and make requests to jupyter.org, which is unreachable here).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


@dataclass
class Server:
    """A running server: its base URL, token (empty for Voilà) and process."""

    url: str
    token: str
    process: subprocess.Popen
    log: Path
    root: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_DATA_DIR=str(home / "data"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTER_PLATFORM_DIRS="1",
        IPYTHONDIR=str(home / "ipython"),
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    return env


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes through a proxy


def answers(url: str) -> bool:
    try:
        with _LOCAL.open(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def start_server(
    command: list[str], *, cwd: Path, env: dict[str, str], log: Path, ready_url: str
) -> subprocess.Popen:
    """Start a server in its own process group; return once ``ready_url`` answers 200."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{command[0]} exited with {process.returncode}:\n{log.read_text(errors='replace')}"
            )
        if answers(ready_url):
            return process
        time.sleep(0.25)
    stop_server(process)
    raise RuntimeError(
        f"{command[0]} did not answer within {SERVER_START_S} s:\n{log.read_text(errors='replace')}"
    )


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the server's process group, then any kernel it started that outlived it (kernels run in their
    own sessions, so the group signal does not reach them)."""
    import psutil

    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def start_jupyterlab(home: Path, root: Path, app: str = "lab") -> Server:
    """``jupyter-lab`` (or, with ``app="notebook"``, Jupyter Notebook 7's ``jupyter-notebook``) on a free port
    serving ``root``, configured under ``home`` (which must hold the folders config, data, runtime, ipython,
    settings and workspaces). Both are JupyterLab applications: the same settings keep their pop-ups away."""
    for name, settings in LAB_SETTINGS.items():
        path = home / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    port, token = free_port(), secrets.token_hex(16)
    application = {"lab": "LabApp", "notebook": "JupyterNotebookApp"}[app]
    command = [
        str(BIN / f"jupyter-{app}"),
        "--no-browser",
        "--allow-root",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        f"--{application}.user_settings_dir={home / 'settings'}",
        f"--{application}.workspaces_dir={home / 'workspaces'}",
    ]
    if app == "lab":
        command += [
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    log = home / f"jupyter{app}.log"
    url = f"http://127.0.0.1:{port}"
    process = start_server(
        command, cwd=root, env=server_env(home), log=log, ready_url=f"{url}/api/status?token={token}"
    )
    return Server(url=url, token=token, process=process, log=log, root=root)


def launch_chromium(driver, profile: Path, extra_args: Sequence[str] = ()):
    """A headless Chromium context (Playwright) in a fresh profile, with the harness's viewport and flags, and
    ``extra_args`` (:func:`fake_camera`'s, say)."""
    return driver.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=[*CHROMIUM_ARGS, *extra_args],
        headless=True,
        viewport=VIEWPORT,
        accept_downloads=False,
    )


def write_y4m(path: Path, frames: int = 60, width: int = 320, height: int = 240) -> Path:
    """A YUV4MPEG2 (4:2:0) clip at 30 frames/s (above the rates measured, so the fake camera does not cap them) of
    a bright disc moving over a ramp, for ``--use-file-for-fake-video-capture``."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width]
    chunks = [f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode()]
    for index in range(frames):
        cx = 40 + index * (width - 80) / frames
        luma = (x * 200 // width + 20).astype(np.uint8)
        luma[(x - cx) ** 2 + (y - height / 2) ** 2 < 40**2] = 235
        u = np.full((height // 2, width // 2), 90 + index * 90 // frames, np.uint8)
        v = np.full((height // 2, width // 2), 160, np.uint8)
        chunks += [b"FRAME\n", luma.tobytes(), u.tobytes(), v.tobytes()]
    path.write_bytes(b"".join(chunks))
    return path


def fake_camera(clip: Path) -> list[str]:
    """Chromium flags for a camera that plays ``clip`` (:func:`write_y4m`), permission granted."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={clip}",
    ]


# Count the src changes of an element's image (a new picture drawn) from now on, with their times.
WATCH_PICTURES = """
([selector, key]) => {
    const img = document.querySelector(selector);
    window[key] = [];
    new MutationObserver(() => window[key].push(performance.now())).observe(img, {attributes: true,
        attributeFilter: ["src"]});
}
"""


def picture_rate(page, key: str, changes: int, timeout_ms: float) -> float:
    """Wait for ``changes`` new pictures in the image watched as ``key`` (:data:`WATCH_PICTURES`); their rate in
    the browser (pictures a second)."""
    page.wait_for_function(f"() => window['{key}'].length >= {changes}", timeout=timeout_ms)
    times = page.evaluate(f"() => window['{key}']")
    return (len(times) - 1) / ((times[-1] - times[0]) / 1000)
