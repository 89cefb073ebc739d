"""The demo under sustained concurrent load, then flooded past its queue.

    .venv/bin/python benchmarks/load.py [--seconds 15] [--clients 16] [--hostile-clients 2]
                                        [--flood N] [--port N] [--model DIR_OR_REPO]

``python app.py`` runs as a subprocess on 127.0.0.1 (a free port unless --port), with its own
Gradio upload folder and telemetry off; it inherits this environment except GRADIO_* and MODEL_*
(so e.g. ``MALLOC_ARENA_MAX=2 .venv/bin/python benchmarks/load.py`` runs it with that setting). Everything goes through ``gradio_client``, as an API user's
requests do (upload + queue + result). Phases:

1. load: ``--clients`` threads, each with its own Client, call ``/predict`` in a loop for
   ``--seconds``; ``--hostile-clients`` of them send the hostile corpus of tests/hostile.py, the
   rest the 500 committed CIFAR-10 test pictures and the app's examples. Every answer is checked
   against :class:`cifar_model.Classifier` run here once up front on the same file: a valid picture
   must get a Label whose top class is the library's (else a *mismatch*; no answer at all is a
   *loss*), a hostile file the library's own ImageError sentence or its prediction.
2. flood: ``--flood`` submits at once (each from its own thread), more than the queue's
   ``max_size`` plus its workers can hold. The excess must get gradio_client's ``QueueError``
   ("Queue is full"), quickly; the rest must be answered correctly. gradio_client uploads the file
   before it joins the queue, so the time to a refusal includes that upload, made by all the
   flooding threads at once.
3. after: the server must still answer correctly (a few sequential requests).

The server's memory (RSS of the process and its children, psutil) is sampled every 0.25 s from
after warm-up to the end; its growth over the load phase is checked against --max-growth-mb.
Exit status 1 when any check fails. The clients and the server share this machine's CPUs: on a
small machine the numbers are the pair's, not the server's alone (the CPU time each side used is
printed).
"""

from __future__ import annotations

import argparse
import html
import os
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # cifar_model and tests.hostile, when run as a script from benchmarks/
# gradio_client starts a telemetry thread unless this is "False" (its analytics_enabled=False alone
# does not stop it): this benchmark talks to 127.0.0.1 only.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from gradio_client.utils import QueueError  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "cifar10-test-sample"
EXAMPLES = ROOT / "examples"
REQUEST_TIMEOUT_S = 60.0  # a request not answered by then counts as lost (and is cancelled)
FLOOD_TIMEOUT_S = 30.0  # a flood submit neither answered nor refused by then counts as hung
AFTER_REQUESTS = 10
# gradio_client builds a fresh TLS context for each of the three HTTP calls a request makes, even to
# an http:// URL: loading the CA bundle costs about 70 ms of CPU per request, three times what the
# server spends on it, and on a small machine the clients would starve the server they measure.
# One context, loaded once and shared, verifies the same way (--stock-client: the default).
_TLS = ssl.create_default_context()
STOCK_CLIENT = False


def new_client(url: str) -> Client:
    """A quiet Client (sharing one TLS context unless --stock-client)."""
    return Client(url, verbose=False) if STOCK_CLIENT else Client(url, verbose=False, ssl_verify=_TLS)


def close_all(clients: list[Client]) -> None:
    """Close clients in parallel: each close waits up to 1 s for its heartbeat thread."""
    threads = [threading.Thread(target=c.close, daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# What each file must get, computed once by the library itself.


@dataclass(frozen=True)
class Expected:
    """The outcome a file must get from ``/predict``: ``top`` (a class) or ``error`` (a message;
    ``""``: any readable message, when the library fails outside ImageError)."""
    top: str | None = None
    error: str | None = None


def reference(model: str | None, tmp: Path) -> tuple[dict[Path, Expected], dict[Path, Expected]]:
    """(valid pictures, hostile files written under ``tmp``) -> what each must get."""
    from cifar_model import Classifier, ImageError
    from tests.hostile import EXPECTED, corpus

    clf = Classifier.from_pretrained(model)
    valid = sorted(SAMPLE.glob("*/*.jpg")) + sorted(EXAMPLES.glob("*.jpg"))
    hostile_dir = tmp / "hostile"
    hostile_dir.mkdir()
    hostile = []
    for name, data in corpus().items():
        (hostile_dir / name).write_bytes(data)
        hostile.append(hostile_dir / name)

    def expected(path: Path) -> Expected:
        try:
            probs = clf.predict([str(path)])[0]  # one at a time, as the server sees them
        except ImageError as err:
            return Expected(error=html.escape(str(err)))  # app.py escapes the sentence for the page
        except Exception:  # app.py answers its generic UNREADABLE sentence
            return Expected(error="")
        return Expected(top=max(probs, key=probs.get))

    valid_ref = {p: expected(p) for p in valid}
    with warnings.catch_warnings():  # Pillow warns about the bombs and bad EXIF it is fed on purpose
        warnings.simplefilter("ignore")
        hostile_ref = {p: expected(p) for p in hostile}
    bad = [p.name for p, e in hostile_ref.items() if (e.top is None) != (EXPECTED[p.name] == "error")]
    if bad:
        raise SystemExit(f"the library itself disagrees with tests/hostile.py on: {bad}")
    if any(e.top is None for e in valid_ref.values()):
        raise SystemExit("the library can't read some of the valid pictures")
    return valid_ref, hostile_ref


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


def call(client: Client, path: Path, timeout: float) -> tuple[object, BaseException | None, float]:
    """One ``/predict`` request, bounded by ``timeout`` -> (result, error or None, seconds)."""
    t0 = time.perf_counter()
    job = client.submit(handle_file(str(path)), api_name="/predict")
    try:
        return job.result(timeout=timeout), None, time.perf_counter() - t0
    except BaseException as err:  # noqa: BLE001 -- every failure is an outcome to count
        job.cancel()
        return None, err, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# The server and its memory.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, model: str | None, tmp: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "MODEL_"))}
    env |= {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
            "GRADIO_TEMP_DIR": str(tmp / "uploads"), "GRADIO_ANALYTICS_ENABLED": "False"}
    if model:
        env["MODEL_REPO"] = model
    else:
        env["HF_HUB_OFFLINE"] = "1"  # the bundled weights need no Hub
    with open(tmp / "server.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)


def wait_until_answering(url: str, probe: Path, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client = new_client(url)
        except Exception:  # not up yet
            time.sleep(0.25)
            continue
        client.predict(handle_file(str(probe)), api_name="/predict")
        close_all([client])
        return
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


class Sampler(threading.Thread):
    """Samples the RSS (process + children) and CPU time of ``pid`` every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.proc, self.every = psutil.Process(pid), every
        self.samples: list[tuple[float, int]] = []  # (monotonic time, bytes)
        self._halt = threading.Event()

    def rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        total = 0
        for p in procs:
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
        self.samples.append((time.monotonic(), value))
        return value

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max(v for t, v in self.samples if since <= t <= until)

    def trend(self, since: float, until: float, points: int = 5) -> list[int]:
        """RSS at ``points`` evenly spaced times from ``since`` to ``until`` (nearest sample)."""
        times = np.linspace(since, until, points)
        return [min(self.samples, key=lambda s: abs(s[0] - t))[1] for t in times]

    def run(self) -> None:
        while not self._halt.wait(self.every):
            self.samples.append((time.monotonic(), self.rss()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Phases.


@dataclass
class Tally:
    """Outcomes and latencies of one kind of request."""
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "file: outcome", the first few
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: Path, judged: tuple[str, str], seconds: float) -> None:
        outcome, detail = judged
        with self.lock:
            self.outcomes[outcome] += 1
            self.latencies.append(seconds)
            if outcome != "ok" and len(self.failures) < 20:
                self.failures.append(f"{path.name}: {outcome}, {detail}")

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    def bad(self) -> int:
        return self.total - self.outcomes["ok"]


def load_phase(url: str, valid: dict[Path, Expected], hostile: dict[Path, Expected],
               args) -> tuple[Tally, Tally, float]:
    """``args.clients`` clients for ``args.seconds``; returns (valid tally, hostile tally, seconds)."""
    tallies = {"valid": Tally(), "hostile": Tally()}
    clients = [new_client(url) for _ in range(args.clients)]
    barrier = threading.Barrier(args.clients + 1)
    deadline = [0.0]

    def work(i: int, client: Client) -> None:
        kind = "hostile" if i < args.hostile_clients else "valid"
        ref = hostile if kind == "hostile" else valid
        files = list(ref)
        random.Random(i).shuffle(files)  # each client its own order: every file is in flight somewhere
        barrier.wait()
        n = 0
        while time.monotonic() < deadline[0]:
            path = files[n % len(files)]
            result, error, seconds = call(client, path, REQUEST_TIMEOUT_S)
            tallies[kind].add(path, judge(result, error, ref[path]), seconds)
            n += 1

    threads = [threading.Thread(target=work, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + args.seconds
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(timeout=args.seconds + REQUEST_TIMEOUT_S + 10)
    elapsed = time.perf_counter() - t0
    close_all(clients)
    return tallies["valid"], tallies["hostile"], elapsed


def flood_phase(url: str, valid: dict[Path, Expected], n: int) -> dict:
    """``n`` submits released at once -> counts and timings of refused / answered / other."""
    files = list(valid)[:n] if n <= len(valid) else [list(valid)[i % len(valid)] for i in range(n)]
    clients = [new_client(url) for _ in range(max(1, n // 10))]  # 10 submits per client
    barrier = threading.Barrier(n + 1)
    out: dict = {"refused": [], "answered": [], "wrong": 0, "other": Counter(), "message": ""}
    lock = threading.Lock()

    def work(i: int) -> None:
        path = files[i]
        barrier.wait()
        result, error, seconds = call(clients[i % len(clients)], path, FLOOD_TIMEOUT_S)
        with lock:
            if isinstance(error, QueueError):
                out["refused"].append(seconds)
                out["message"] = str(error)
            elif error is None:
                out["answered"].append(seconds)
                out["wrong"] += judge(result, None, valid[path])[0] != "ok"
            else:
                out["other"][type(error).__name__] += 1

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(timeout=FLOOD_TIMEOUT_S + 30)
    out["seconds"] = time.perf_counter() - t0
    close_all(clients)
    return out


def after_phase(url: str, valid: dict[Path, Expected]) -> Tally:
    """A few sequential requests once the flood is over: the server must still answer them."""
    tally, client = Tally(), new_client(url)
    for path in list(valid)[-AFTER_REQUESTS:]:
        result, error, seconds = call(client, path, REQUEST_TIMEOUT_S)
        tally.add(path, judge(result, error, valid[path]), seconds)
    close_all([client])
    return tally


# ---------------------------------------------------------------------------------------------
# Report.


def queue_settings() -> dict:
    """app.py's QUEUE_KWARGS, read from its source (importing app would load a second model)."""
    import ast

    for node in ast.parse((ROOT / "app.py").read_text()).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", None) == "QUEUE_KWARGS" for t in targets):
                return ast.literal_eval(node.value)
    return {}


def ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.0f} ms" if values else "n/a"


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def summary(args, queue: dict, valid: Tally, hostile: Tally, seconds: float, flood: dict | None,
            after: Tally, mem: dict, cpu: dict[str, float]) -> list[str]:
    """The table for the README, and the list of failed checks (empty: all passed)."""
    import gradio

    done = valid.total + hostile.total
    growth = mem["end"] - mem["start"]
    print(f"\ngradio {gradio.__version__}, {os.cpu_count()} CPUs shared by server and clients, queue {queue}")
    print("| measure | result |")
    print("| --- | --- |")
    print(f"| load | {args.clients} gradio_client clients ({args.hostile_clients} sending hostile files) "
          f"for {seconds:.1f} s |")
    print(f"| requests answered | {done} ({done / seconds:.1f} req/s; valid {valid.total / seconds:.1f} req/s) |")
    print(f"| valid pictures | {valid.total}: {valid.outcomes['ok']} right class, "
          f"{valid.outcomes['mismatch']} mismatches, {valid.outcomes['lost']} lost |")
    print(f"| hostile files | {hostile.total}: {hostile.outcomes['ok']} expected outcome, "
          f"{hostile.outcomes['mismatch']} other answers, {hostile.outcomes['lost']} lost |")
    print(f"| latency, valid | p50 {ms(valid.latencies, 50)}, p99 {ms(valid.latencies, 99)}, "
          f"max {ms(valid.latencies, 100)} |")
    print(f"| latency, hostile | p50 {ms(hostile.latencies, 50)}, p99 {ms(hostile.latencies, 99)}, "
          f"max {ms(hostile.latencies, 100)} |")
    print(f"| server RSS (with children) | start {mb(mem['start'])}, peak {mb(mem['peak'])}, end {mb(mem['end'])} "
          f"(growth {growth / 2**20:+.0f} MB; after flood {mb(mem['after'])}) |")
    print(f"| server RSS through the load | {' -> '.join(mb(v) for v in mem['trend'])} |")
    print(f"| CPU during load | server {cpu['server']:.1f} s, clients {cpu['clients']:.1f} s "
          f"of {seconds:.1f} s x {os.cpu_count()} CPUs |")
    if flood:
        refused, answered = flood["refused"], flood["answered"]
        print(f"| flood | {args.flood} submits at once: {len(refused)} refused with QueueError "
              f"(\"{flood['message']}\") in p50 {ms(refused, 50)} / max {ms(refused, 100)}; "
              f"{len(answered)} answered in p50 {ms(answered, 50)} ({flood['wrong']} wrong); "
              f"{sum(flood['other'].values())} other; "
              f"all settled in {flood['seconds']:.1f} s |")
    print(f"| after the {'flood' if flood else 'load'} | {after.outcomes['ok']}/{after.total} right, "
          f"p50 {ms(after.latencies, 50)} |")

    failed = []
    if valid.bad():
        failed.append(f"valid requests not answered right: {dict(valid.outcomes)} e.g. {valid.failures[:5]}")
    if hostile.bad():
        failed.append(f"hostile files with the wrong outcome: {dict(hostile.outcomes)} e.g. {hostile.failures[:5]}")
    if growth > args.max_growth_mb * 2**20:
        failed.append(f"server memory grew {growth / 2**20:.0f} MB (> {args.max_growth_mb} MB)")
    if flood:
        if not flood["refused"]:
            failed.append("the flood never filled the queue: no QueueError")
        elif max(flood["refused"]) > args.max_refusal_s:
            failed.append(f"slowest queue-full answer {max(flood['refused']):.1f} s (> {args.max_refusal_s} s)")
        if flood["wrong"] or flood["other"]:
            failed.append(f"flood: {flood['wrong']} wrong answers, other outcomes {dict(flood['other'])}")
    if after.bad():
        failed.append(f"after the flood: {dict(after.outcomes)}")
    return failed


def parse_args(queue: dict) -> argparse.Namespace:
    default_flood = 3 * (queue.get("max_size", 32) + queue.get("default_concurrency_limit", 1))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the load phase")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients in the load phase")
    parser.add_argument("--hostile-clients", type=int, default=2, help="how many of them send hostile files")
    parser.add_argument("--flood", type=int, default=default_flood,
                        help=f"submits at once in the flood phase (default 3 x (max_size + workers) = "
                             f"{default_flood}; 0: skip)")
    parser.add_argument("--max-growth-mb", type=float, default=100.0, help="allowed server RSS growth over the load")
    parser.add_argument("--max-refusal-s", type=float, default=5.0, help="allowed time to a queue-full answer")
    parser.add_argument("--stock-client", action="store_true",
                        help="gradio_client's defaults (a TLS context loaded per HTTP call: far more client CPU)")
    parser.add_argument("--port", type=int, default=None, help="port for app.py (default: a free one)")
    parser.add_argument("--model", default=None, help="weights folder or Hub repo id (default: bundled weights/)")
    args = parser.parse_args()
    if not 0 <= args.hostile_clients < args.clients:
        parser.error("--hostile-clients must be at least 0 and fewer than --clients")
    return args


def run(args, url: str, proc: subprocess.Popen, tmp: Path, t0: float) -> tuple:
    """The three phases against the started server -> what :func:`summary` takes."""
    def progress(what: str) -> None:
        print(f"{what} ({time.perf_counter() - t0:.1f} s)", flush=True)

    valid, hostile = reference(args.model, tmp)
    progress(f"references: {len(valid)} valid pictures, {len(hostile)} hostile files")
    wait_until_answering(url, next(iter(valid)), proc, tmp / "server.log")
    progress(f"app.py answering on {url}")
    sampler = Sampler(proc.pid)
    warm = new_client(url)  # every hostile file and a few pictures once: first-time costs are not growth
    for path in list(hostile) + list(valid)[:50]:
        call(warm, path, REQUEST_TIMEOUT_S)
    close_all([warm])
    progress("warmed up")
    mem: dict = {"start": sampler.mark()}
    sampler.start()
    cpu0, me0 = sampler.cpu_seconds(), sum(psutil.Process().cpu_times()[:2])
    start_t = time.monotonic()
    v_tally, h_tally, seconds = load_phase(url, valid, hostile, args)
    cpu = {"server": sampler.cpu_seconds() - cpu0, "clients": sum(psutil.Process().cpu_times()[:2]) - me0}
    mem |= {"end": sampler.mark(), "peak": sampler.peak(start_t), "trend": sampler.trend(start_t, time.monotonic())}
    progress(f"load phase done: {v_tally.total + h_tally.total} requests")
    flood = flood_phase(url, valid, args.flood) if args.flood else None
    progress("flood done")
    after = after_phase(url, valid)
    mem["after"] = sampler.mark()
    sampler.stop()
    return v_tally, h_tally, seconds, flood, after, mem, cpu


def main() -> None:
    global STOCK_CLIENT
    queue = queue_settings()
    args = parse_args(queue)
    STOCK_CLIENT = args.stock_client
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp, t0 = Path(tmp_name), time.perf_counter()
        proc = start_server(port, args.model, tmp)  # starts while the references are computed
        try:
            results = run(args, url, proc, tmp, t0)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = summary(args, queue, *results)
    for line in failed:
        print(f"FAILED: {line}")
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
