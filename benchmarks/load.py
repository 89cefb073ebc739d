"""The demo under sustained concurrent load, then flooded past its queue.

    python -m benchmarks.load [--seconds 15] [--clients 16] [--hostile-clients 2]
                              [--flood N] [--port N] [--model DIR_OR_REPO] [--server-env KEY=VALUE]

``python app.py`` runs as a subprocess on 127.0.0.1 (a free port unless --port), with its own
Gradio upload folder, telemetry and the MCP server off; it inherits this environment except
GRADIO_*, MODEL_* and MALLOC_* (``--server-env MALLOC_ARENA_MAX=2`` runs it with that setting).
Everything goes through ``gradio_client``, as an API user's requests do (upload + queue + result).
Phases:

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
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from . import _serve
from ._serve import Client, Expected, QueueError, Sampler, Tally, call, judge, mb, ms

REQUEST_TIMEOUT_S = 60.0  # a request not answered by then counts as lost (and is cancelled)
FLOOD_TIMEOUT_S = 30.0  # a flood submit neither answered nor refused by then counts as hung
AFTER_REQUESTS = 10


# ---------------------------------------------------------------------------------------------
# Phases.


def load_phase(url: str, valid: dict[Path, Expected], hostile: dict[Path, Expected],
               args) -> tuple[Tally, Tally, float]:
    """``args.clients`` clients for ``args.seconds``; returns (valid tally, hostile tally, seconds)."""
    tallies = {"valid": Tally(), "hostile": Tally()}
    clients = [_serve.new_client(url, stock=args.stock_client) for _ in range(args.clients)]
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
            tallies[kind].add(path.name, judge(result, error, ref[path]), seconds)
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
    _serve.close_all(clients)
    return tallies["valid"], tallies["hostile"], elapsed


def flood_phase(url: str, valid: dict[Path, Expected], n: int, stock: bool) -> dict:
    """``n`` submits released at once -> counts and timings of refused / answered / other."""
    files = list(valid)[:n] if n <= len(valid) else [list(valid)[i % len(valid)] for i in range(n)]
    clients = [_serve.new_client(url, stock=stock) for _ in range(max(1, n // 10))]  # 10 submits per client
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
    _serve.close_all(clients)
    return out


def after_phase(url: str, valid: dict[Path, Expected], stock: bool) -> Tally:
    """A few sequential requests once the flood is over: the server must still answer them."""
    tally, client = Tally(), _serve.new_client(url, stock=stock)
    for path in list(valid)[-AFTER_REQUESTS:]:
        result, error, seconds = call(client, path, REQUEST_TIMEOUT_S)
        tally.add(path.name, judge(result, error, valid[path]), seconds)
    _serve.close_all([client])
    return tally


# ---------------------------------------------------------------------------------------------
# Report.


def summary(args, queue: dict, valid: Tally, hostile: Tally, seconds: float, flood: dict | None,
            after: Tally, mem: dict, cpu: dict[str, float]) -> list[str]:
    """The table for the README, and the list of failed checks (empty: all passed)."""
    import gradio

    done = valid.total + hostile.total
    growth = mem["end"] - mem["start"]
    print(f"\ngradio {gradio.__version__}, {os.cpu_count()} CPUs shared by server and clients (and any other work on "
          f"the machine), queue {queue}, MCP server off{', server env ' + str(args.env) if args.env else ''}")
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


def parse_args(queue: dict, argv: list[str] | None = None) -> argparse.Namespace:
    default_flood = 3 * (queue.get("max_size", 32) + queue.get("default_concurrency_limit", 1))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="add a variable to the server's environment (e.g. MALLOC_ARENA_MAX=2)")
    args = parser.parse_args(argv)
    args.env = dict(kv.split("=", 1) for kv in args.server_env)
    if not 0 <= args.hostile_clients < args.clients:
        parser.error("--hostile-clients must be at least 0 and fewer than --clients")
    return args


def run(args, url: str, proc: subprocess.Popen, tmp: Path, t0: float) -> tuple:
    """The three phases against the started server -> what :func:`summary` takes."""
    def progress(what: str) -> None:
        print(f"{what} ({time.perf_counter() - t0:.1f} s)", flush=True)

    valid, hostile = _serve.reference(args.model, _serve.real_pictures(), tmp / "hostile")
    progress(f"references: {len(valid)} valid pictures, {len(hostile)} hostile files")
    _serve.close_all([_serve.wait_until_answering(url, next(iter(valid)), proc, tmp / "server.log",
                                                  stock=args.stock_client)])
    progress(f"app.py answering on {url}")
    sampler = Sampler(proc.pid)
    # Every hostile file and a few pictures once: first-time costs are not growth.
    warm = _serve.new_client(url, stock=args.stock_client)
    for path in list(hostile) + list(valid)[:50]:
        call(warm, path, REQUEST_TIMEOUT_S)
    _serve.close_all([warm])
    progress("warmed up")
    mem: dict = {"start": sampler.mark()}
    sampler.start()
    cpu0, me0 = sampler.cpu_seconds(), sum(psutil.Process().cpu_times()[:2])
    start_t = time.monotonic()
    v_tally, h_tally, seconds = load_phase(url, valid, hostile, args)
    cpu = {"server": sampler.cpu_seconds() - cpu0, "clients": sum(psutil.Process().cpu_times()[:2]) - me0}
    mem |= {"end": sampler.mark(), "peak": sampler.peak(start_t), "trend": sampler.trend(start_t, time.monotonic())}
    progress(f"load phase done: {v_tally.total + h_tally.total} requests")
    flood = flood_phase(url, valid, args.flood, args.stock_client) if args.flood else None
    progress("flood done")
    after = after_phase(url, valid, args.stock_client)
    mem["after"] = sampler.mark()
    sampler.stop()
    return v_tally, h_tally, seconds, flood, after, mem, cpu


def main(argv: list[str] | None = None) -> None:
    import app  # nothing happens at import: its queue settings size the flood

    queue = app.QUEUE_KWARGS
    args = parse_args(queue, argv)
    port = args.port or _serve.free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="load-") as tmp_name:
        tmp, t0 = Path(tmp_name), time.perf_counter()
        env = _serve.server_env(tmp / "uploads", model=args.model, extra=args.env)
        proc = _serve.start_app(port, env, tmp / "server.log")  # starts while the references are computed
        try:
            results = run(args, url, proc, tmp, t0)
        finally:
            _serve.stop(proc)
    failed = summary(args, queue, *results)
    for line in failed:
        print(f"FAILED: {line}")
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
