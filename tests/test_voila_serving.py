"""``make voila`` serves the panel on this machine only and behind a token (issue 19: "a panel served with Voilà
is open to any visitor"). The command is read from the Makefile itself (``make -n``), so the test starts Voilà
exactly the documented way; a request without the token, or with a wrong one, is sent to the login page, one with
the printed token gets the panel's page."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser.harness import free_port, server_env, start_server, stop_server

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 302 itself is what the test reads


_OPEN = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def documented_command() -> list[str]:
    """The command ``make voila`` runs, with this environment's virtualenv."""
    stamp = VENV / ".installed-dev"
    printed = subprocess.run(
        ["make", "-n", "-s", "-o", str(stamp), "voila", f"VENV={VENV}", f"STAMP={stamp}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return shlex.split(printed.replace("\\\n", " "))


def status(url: str) -> tuple[int, str, bytes]:
    """(HTTP status, Location header, first bytes of the body) of a GET, redirects not followed."""
    try:
        with _OPEN.open(url, timeout=120) as response:
            return response.status, "", response.read(4096)
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Location", ""), b""


@pytest.fixture
def served(tmp_path):
    """``make voila``'s command on a free port: (base URL, the token it printed)."""
    command = documented_command()
    assert command[0] == str(VENV / "bin" / "voila"), command
    port = free_port()
    log = tmp_path / "voila.log"
    url = f"http://127.0.0.1:{port}"
    ready = f"{url}/voila/labextensions/@jupyter-widgets/jupyterlab-manager/package.json"  # static: no kernel
    process = start_server(
        [*command, "--no-browser", f"--port={port}", "--Voila.port_retries=0"],
        cwd=ROOT,
        env=server_env(tmp_path / "home"),
        log=log,
        ready_url=ready,
    )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"http://([\d.]+):\d+/\?token=([0-9a-f]+)", log.read_text())):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url, found.group(1), found.group(2)
    finally:
        stop_server(process)


def test_make_voila_listens_on_this_machine_behind_a_token(served):
    url, host, token = served
    assert host == "127.0.0.1" and len(token) >= 32
    for anonymous in (f"{url}/", f"{url}/?token=wrong{token[:8]}", f"{url}/voila/render/explorer.ipynb"):
        code, location, _ = status(anonymous)
        assert code in (401, 403) or (code == 302 and "/login" in location), (anonymous, code, location)
    code, _, body = status(f"{url}/?token={token}")
    assert code == 200 and b"<title>explorer</title>" in body, (code, body[:200])
