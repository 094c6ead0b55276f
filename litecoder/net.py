"""Can this machine reach a host? Asked before work that needs it, so that offline runs fail
at once with the reason instead of deep inside a tool."""

from __future__ import annotations

import os
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> str | None:
    """Why `host` cannot be reached (None: it can). Through a proxy, the proxy is tried."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        u = urllib.parse.urlsplit(proxy)
        host, port = u.hostname or host, u.port or 443

    def connect() -> None:
        with socket.create_connection((host, port), timeout=timeout):
            pass

    # Name resolution is not bounded by the socket timeout: the whole probe runs in a thread.
    pool = ThreadPoolExecutor(1)
    try:
        pool.submit(connect).result(timeout=timeout + 1)
        return None
    except FutureTimeout:
        return f"{host}:{port} unreachable (no answer in {timeout + 1:g}s)"
    except OSError as e:
        return f"{host}:{port} unreachable ({e.strerror or type(e).__name__})"
    finally:
        pool.shutdown(wait=False)
