"""Real servers on loopback for remote-store tests: an S3-protocol server (moto) and a static HTTP server.

:func:`s3_server` starts ``moto.server`` as a subprocess on a free port and points the standard
AWS variables at it (what users set for any S3-compatible service), so the code under test finds
the endpoint and credentials exactly as it would in production. :func:`http_server` serves a
local folder read-only from a thread. Test modules start one of each per module.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SECRET_ACCESS_KEY = "s3cr3t-never-recorded-0123456789"
"""The secret the tests give through AWS_SECRET_ACCESS_KEY; it must never appear in a store."""
BUCKET = "team-labels"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_up(url: str, server: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the S3 test server exited with {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the S3 test server at {url} did not start within {timeout} s")


def _forget_cached_clients() -> None:
    # fsspec caches filesystems by their options, not by the environment: a client made for another
    # module's server (another port) must not be reused.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Run an S3-protocol server on 127.0.0.1 with the bucket :data:`BUCKET`; yields its endpoint URL.

    The AWS variables point at it while it runs (and are restored afterwards).
    """
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    variables = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "team-a-key",
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in variables.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        try:
            _wait_until_up(f"{endpoint}/", server)
            _forget_cached_clients()
            _create_bucket(endpoint)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=30)
            _forget_cached_clients()


def _create_bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  (the base class's name)
        return


@contextlib.contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 from a thread (GET only); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=os.fspath(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
