"""`make lab` (`dire lab`): the kernel is registered, JupyterLab serves notebooks/ from the repository root, and
a notebook's kernel runs this interpreter in notebooks/ (the folder its ../data, ../runs expect) over IPC. The
server runs headless on a free local port and is stopped."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from importlib.util import find_spec

import pytest

from dire.report.reproduce import REPO, kernel_transport

TOKEN = "dire-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def _wait(condition, timeout: float, what: str, server: subprocess.Popen, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited ({server.returncode}) while waiting for {what}:\n{log.read_text()}")
        try:
            value = condition()
            if value:
                return value
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    pytest.fail(f"no {what} within {timeout} s:\n{log.read_text()}")


def _run_in_kernel(port: int, kernel: str, code: str) -> str:
    """``code``'s stdout, executed in the kernel through the server's websocket (as JupyterLab does)."""
    from tornado.websocket import websocket_connect

    async def run() -> str:
        ws = await websocket_connect(f"ws://127.0.0.1:{port}/api/kernels/{kernel}/channels?token={TOKEN}")
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "msg_type": "execute_request", "username": "", "session": msg_id, "version": "5.3"}
        content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
        await ws.write_message(
            json.dumps({"header": header, "parent_header": {}, "metadata": {}, "channel": "shell", "content": content})
        )
        while True:
            msg = json.loads(await asyncio.wait_for(ws.read_message(), 60))
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] in ("stream", "error"):
                ws.close()
                return msg["content"].get("text") or str(msg["content"])

    return asyncio.run(run())


@pytest.mark.skipif(find_spec("jupyterlab") is None, reason="JupyterLab not installed (pip install -e '.[notebooks]')")
def test_dire_lab_serves_the_notebooks_with_the_registered_kernel(tmp_path):
    port = _free_port()
    # Jupyter's folders in tmp_path: the test registers its kernel there, not in the user's home
    runtime = tempfile.mkdtemp(prefix="dire-jr-")  # short: kernel sockets are files there, within 107 bytes
    env = {
        **os.environ,
        **{f"JUPYTER_{k}_DIR": str(tmp_path / k.lower()) for k in ("DATA", "CONFIG")},
        "JUPYTER_RUNTIME_DIR": runtime,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "dire", "lab", "--no-browser", "--port", str(port), "--token", TOKEN],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        status = _wait(lambda: _api(port, "/api/status"), 90, "answer from /api/status", server, log)
        assert "started" in status
        spec = _api(port, "/api/kernelspecs")["kernelspecs"]["dire"]["spec"]
        assert spec["display_name"] == "Python (dire)" and spec["argv"][0] == sys.executable
        kernel = json.loads((tmp_path / "data" / "kernels" / "dire" / "kernel.json").read_text())
        assert kernel["argv"][0] == sys.executable  # registered in JUPYTER_DATA_DIR, as for a user
        # the server's root is the repository and the notebooks are there
        listed = {item["name"] for item in _api(port, "/api/contents/notebooks")["content"]}
        assert {"00_quickstart.ipynb", "07_explore.ipynb"} <= listed
        # a notebook's session starts the registered kernel in notebooks/, with this checkout's package
        session = _api(
            port,
            "/api/sessions",
            "POST",
            {"path": "notebooks/00_quickstart.ipynb", "type": "notebook", "kernel": {"name": "dire"}},
        )
        code = "import os, dire; print(os.getcwd()); print(dire.__file__)"
        printed = _run_in_kernel(port, session["kernel"]["id"], code)
        assert printed.split() == [str(REPO / "notebooks"), str(REPO / "dire" / "__init__.py")]
        _api(port, f"/api/sessions/{session['id']}", "DELETE")
        _api(port, "/api/shutdown", "POST")
        server.wait(timeout=30)
        assert "Kernel started" in log.read_text() and "without encryption" not in log.read_text()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(runtime, ignore_errors=True)


def test_kernel_sockets_are_files_only_where_their_names_fit():
    assert kernel_transport("/tmp") == "ipc"
    assert kernel_transport("/home/someone/.local/share/jupyter/runtime") == "ipc"
    assert kernel_transport("/tmp/" + "deep/" * 12) == "tcp"  # a Unix socket path may have 107 bytes
