"""Shared pytest setup: the app served in this process, and the small helpers every test file uses
(a free port, waiting for a condition). ``pythonpath = ["."]`` in pyproject.toml puts the repo root
on the import path, so ``import app`` works from any working directory."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

# No telemetry from gradio or gradio_client (it would try the internet): read when gradio is imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "a condition") -> None:
    """Poll ``condition`` every 20 ms until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def serve(demo, keep_uploads_s: float | None = None, **launch_overrides) -> Iterator[str]:
    """Launch ``demo`` on a free port of 127.0.0.1 with app.py's launch settings; yield its URL."""
    import app

    kwargs = app.launch_kwargs(demo, keep_uploads_s or app.KEEP_UPLOADS_S) | {"mcp_server": False} | launch_overrides
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                            quiet=True, **kwargs)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture(scope="session")
def classifier():
    """The bundled weights, loaded once for the whole run."""
    from cifar_model import Classifier

    return Classifier.from_pretrained()


@pytest.fixture(scope="module")
def served(classifier):
    """(demo, url): app.py's page over the bundled weights, served from this process."""
    import app

    demo = app.build_demo(classifier)
    with serve(demo) as url:
        yield demo, url


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of small computations (two threads contend with the rest)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
