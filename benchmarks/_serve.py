"""What the serving benchmarks (app_speed, load, soak) share: a server subprocess started and
waited for, the answer every test file must get and one bounded ``/predict`` call judged against
it, the server's memory read with psutil, and percentiles.

Run from the repository root as ``python -m benchmarks.NAME``: ``app``, ``cifar_model`` and
``tests.hostile`` are then importable without touching ``sys.path``.
"""

from __future__ import annotations

import html
import os
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

# gradio_client starts a telemetry thread unless this is "False" when it is imported (its
# analytics_enabled=False alone does not stop it): these benchmarks talk to 127.0.0.1 only.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError  # noqa: E402,F401 -- re-exported for load.py

from tests.conftest import free_port  # noqa: E402,F401 -- one definition for tests and benchmarks

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "cifar10-test-sample"
EXAMPLES = ROOT / "examples"
# gradio_client builds a fresh TLS context for each of the three HTTP calls a request makes, even to
# an http:// URL: loading the CA bundle costs about 70 ms of CPU per request, three times what the
# server spends on it, and on a small machine the clients would starve the server they measure.
# One context, loaded once and shared, verifies the same way (stock=True: gradio_client's default).
_TLS = ssl.create_default_context()


# ---------------------------------------------------------------------------------------------
# The server.




def server_env(upload_dir: Path, *, model: str | None = None, mcp: bool = False,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without GRADIO_*, MODEL_* and MALLOC_* (the server gets the defaults a
    Space has), plus its own upload folder, telemetry off, the MCP server only if ``mcp``, the
    bundled weights offline unless ``model``, and ``extra`` last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "MODEL_", "MALLOC_"))}
    env |= {"GRADIO_TEMP_DIR": str(upload_dir), "GRADIO_ANALYTICS_ENABLED": "False",
            "GRADIO_MCP_SERVER": str(mcp)}
    if model:
        env["MODEL_REPO"] = model
    else:
        env["HF_HUB_OFFLINE"] = "1"  # the bundled weights need no Hub
    return env | (extra or {})


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python ARGV...`` in the repository root (e.g. ``["app.py", "--port", "7861"]`` or
    ``["-m", "benchmarks.app_speed", ...]``), stderr to ``log``."""
    with open(log, "w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)


def start_app(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python app.py`` on 127.0.0.1:``port``."""
    return start(["app.py", "--host", "127.0.0.1", "--port", str(port)], env, log)


def wait_until_answering(url: str, probe: Path, proc: subprocess.Popen, log: Path, timeout: float = 180.0,
                         stock: bool = False) -> Client:
    """Poll until ``/predict`` answers ``probe``; returns the connected Client. Exits the benchmark
    with the server's log if the server dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client = new_client(url, stock=stock)
        except Exception:  # not up yet: connection refused, config not served...
            time.sleep(0.2)
            continue
        client.predict(handle_file(str(probe)), api_name="/predict")
        return client
    stop(proc)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate the server (kill it after 30 s)."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def new_client(url: str, stock: bool = False) -> Client:
    """A quiet Client, sharing one TLS context unless ``stock``."""
    return Client(url, verbose=False) if stock else Client(url, verbose=False, ssl_verify=_TLS)


def close_all(clients: list[Client]) -> None:
    """Close clients in parallel: each close waits up to 1 s for its heartbeat thread."""
    threads = [threading.Thread(target=c.close, daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Test files and what each must get, computed once by the library itself.


def make_photo(path: Path, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """A photo-sized JPEG with photo-like content (gradients, shapes, sensor noise), deterministic."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([120 + 80 * np.sin(x / 90), 110 + 60 * np.cos(y / 70), 100 + 50 * np.sin((x + y) / 120)], -1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 80), rng.integers(0, h - 80)
        draw.ellipse([x0, y0, x0 + rng.integers(30, 200), y0 + rng.integers(30, 200)],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    img.save(path, "JPEG", quality=90)
    return path


def real_pictures() -> list[Path]:
    """The 500 committed CIFAR-10 test pictures and the app's examples."""
    return sorted(SAMPLE.glob("*/*.jpg")) + sorted(EXAMPLES.glob("*.jpg"))


@dataclass(frozen=True)
class Expected:
    """The outcome a file must get from ``/predict``: ``top`` (a class) or ``error`` (a message;
    ``""``: any readable message, when the library fails outside ImageError)."""
    top: str | None = None
    error: str | None = None


def reference(model: str | None, valid: list[Path], hostile_dir: Path | None = None
              ) -> tuple[dict[Path, Expected], dict[Path, Expected]]:
    """What each valid picture must get, and the hostile corpus of tests/hostile.py written under
    ``hostile_dir`` (if given) with what each of its files must get."""
    from cifar_model import Classifier, ImageError
    from tests.hostile import EXPECTED, corpus

    clf = Classifier.from_pretrained(model)

    def expected(path: Path) -> Expected:
        try:
            probs = clf.predict([str(path)])[0]  # one at a time, as the server sees them
        except ImageError as err:
            return Expected(error=html.escape(str(err)))  # app.py escapes the sentence for the page
        except Exception:  # app.py answers its generic UNREADABLE sentence
            return Expected(error="")
        return Expected(top=max(probs, key=probs.get))

    valid_ref = {p: expected(p) for p in valid}
    if any(e.top is None for e in valid_ref.values()):
        raise SystemExit("the library can't read some of the valid pictures")
    hostile_ref: dict[Path, Expected] = {}
    if hostile_dir is not None:
        hostile_dir.mkdir(parents=True, exist_ok=True)
        for name, data in corpus().items():
            (hostile_dir / name).write_bytes(data)
        with warnings.catch_warnings():  # Pillow warns about the bombs and bad EXIF it is fed on purpose
            warnings.simplefilter("ignore")
            hostile_ref = {hostile_dir / name: expected(hostile_dir / name) for name in corpus()}
        bad = [p.name for p, e in hostile_ref.items() if (e.top is None) != (EXPECTED[p.name] == "error")]
        if bad:
            raise SystemExit(f"the library itself disagrees with tests/hostile.py on: {bad}")
    return valid_ref, hostile_ref


def call(client: Client, path: Path, timeout: float) -> tuple[object, BaseException | None, float]:
    """One ``/predict`` request, bounded by ``timeout`` -> (result, error or None, seconds)."""
    t0 = time.perf_counter()
    job = client.submit(handle_file(str(path)), api_name="/predict")
    try:
        return job.result(timeout=timeout), None, time.perf_counter() - t0
    except BaseException as err:  # noqa: BLE001 -- every failure is an outcome to count
        job.cancel()
        return None, err, time.perf_counter() - t0


def judge(result, error: BaseException | None, want: Expected) -> tuple[str, str]:
    """One answer -> (outcome, detail); outcome "ok", "mismatch" (an answer, but not the expected
    class or message) or "lost" (no answer: a timeout, a dropped connection, a refusal)."""
    if isinstance(error, AppError):
        shown = str(error)
        generic = "has not enabled verbose error reporting" in shown  # an unhandled server error
        if want.error is not None and (shown == want.error or (want.error == "" and shown and not generic)):
            return "ok", ""
        return "mismatch", f"error {shown[:80]!r}"
    if error is not None:
        return "lost", f"{type(error).__name__} {str(error)[:80]}"
    label = result[0] if isinstance(result, (list, tuple)) else None
    top = label.get("label") if isinstance(label, dict) else None
    if want.top is not None and top == want.top:
        return "ok", ""
    return "mismatch", f"got {top!r}, expected {want.top or want.error!r}"


@dataclass
class Tally:
    """Outcomes and latencies of one kind of request (thread-safe)."""
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "file: outcome, detail", the first few
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, judged: tuple[str, str], seconds: float) -> None:
        outcome, detail = judged
        with self.lock:
            self.outcomes[outcome] += 1
            self.latencies.append(seconds)
            if outcome != "ok" and len(self.failures) < 20:
                self.failures.append(f"{name}: {outcome}, {detail}")

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def bad(self) -> int:
        return self.total - self.outcomes["ok"]


# ---------------------------------------------------------------------------------------------
# Memory and figures.


class Sampler(threading.Thread):
    """Samples the RSS (process + children), thread count and CPU time of ``pid`` every ``every`` s."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.proc, self.every = psutil.Process(pid), every
        self.samples: list[tuple[float, int, int]] = []  # (monotonic time, RSS bytes, threads)
        self._halt = threading.Event()

    def rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu_seconds(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def mark(self) -> int:
        """One sample now (also returned)."""
        value = self.rss()
        self.samples.append((time.monotonic(), value, self.proc.num_threads()))
        return value

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max(v for t, v, _ in self.samples if since <= t <= until)

    def trend(self, since: float, until: float, points: int = 5) -> list[int]:
        """RSS at ``points`` evenly spaced times from ``since`` to ``until`` (nearest sample)."""
        return [min(self.samples, key=lambda s: abs(s[0] - t))[1] for t in np.linspace(since, until, points)]

    def slope(self, since: float, until: float = float("inf")) -> float | None:
        """Least-squares RSS slope in MB per minute over the samples from ``since`` to ``until``."""
        pts = [(t, v) for t, v, _ in self.samples if since <= t <= until]
        if len(pts) < 3:
            return None
        t, v = np.array(pts, dtype=np.float64).T
        return float(np.polyfit(t / 60, v / 2**20, 1)[0])

    def run(self) -> None:
        while not self._halt.wait(self.every):
            try:
                self.mark()
            except psutil.NoSuchProcess:
                return

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def ms(values: list[float], q: float) -> str:
    """The ``q``-th percentile of ``values`` (seconds) in milliseconds, or "n/a"."""
    return f"{np.percentile(values, q) * 1000:.0f} ms" if values else "n/a"


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"
