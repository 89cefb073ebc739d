"""How much the app adds to Gradio's own cost, and how long ``python app.py`` takes to answer.

    python -m benchmarks.app_speed [--model DIR_OR_REPO] [--requests 40] [--clients 8] [--per-client 15] [--rounds 2]

Two servers run side by side, each in its own process, both with the MCP server off
(``GRADIO_MCP_SERVER=False``): ``python app.py``, and a *floor*: ``app.build_demo`` over a
classifier that does no work (every picture is black and every answer the same), so the page, its
events, queue and launch settings are the app's own and only the decoding and the network are
missing. Both get the same 640x480 JPEG through gradio_client (upload + queue + result, as a real API
user does):

* latency: p50 of sequential ``/predict`` calls, alternating between the two servers;
* throughput: ``--clients`` threads, each with its own Client, calling ``/predict`` in a loop;
* startup: from starting ``python app.py`` to its first ``/predict`` answer (imports, model load,
  server start, first request), with the MCP server off and, once more at the end, on (the default).

Targets: latency <= 1.25x the floor's, throughput >= 0.8x the floor's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import _serve
from ._serve import Client

LATENCY_TARGET, THROUGHPUT_TARGET = 1.25, 0.8


class FloorClassifier:
    """A loaded classifier's page (its classes and weights panel) with none of its work."""

    def __init__(self, clf) -> None:
        self.classes, self.info, self.model = clf.classes, clf.info, clf.model
        self._answer = {c: 1.0 / len(self.classes) for c in self.classes}

    def to_uint8(self, source) -> np.ndarray:
        return np.zeros((32, 32, 3), np.uint8)

    def predict_pixels(self, pixels: np.ndarray) -> list[dict[str, float]]:
        return [dict(self._answer) for _ in pixels]


def serve_floor(port: int, model: str | None) -> None:
    """Run the floor app (in its own process: ``--serve-floor PORT``)."""
    import app
    from cifar_model import Classifier

    demo = app.build_demo(FloorClassifier(Classifier.from_pretrained(model)))
    demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, **app.launch_kwargs())


def latencies(clients: dict, photo: Path, n: int) -> dict[str, list[float]]:
    """``n`` sequential /predict calls per server, alternating, after a short warm-up."""
    from gradio_client import handle_file

    out: dict[str, list[float]] = {name: [] for name in clients}
    for i in range(n + 5):
        for name, client in clients.items():
            t0 = time.perf_counter()
            client.predict(handle_file(str(photo)), api_name="/predict")
            if i >= 5:
                out[name].append(time.perf_counter() - t0)
    return out


def throughput(url: str, photo: Path, n_clients: int, per_client: int) -> float:
    """Requests per second with ``n_clients`` concurrent clients, ``per_client`` calls each."""
    from gradio_client import handle_file

    clients = [_serve.new_client(url, stock=True) for _ in range(n_clients)]
    barrier = threading.Barrier(n_clients + 1)

    def work(c) -> None:
        barrier.wait()
        for _ in range(per_client):
            c.predict(handle_file(str(photo)), api_name="/predict")

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    rate = n_clients * per_client / (time.perf_counter() - t0)
    _serve.close_all(clients)
    return rate


def startup(tmp: Path, photo: Path, model: str | None, mcp: bool) -> tuple[float, subprocess.Popen, str, Client]:
    """Start ``python app.py`` and wait for its first answer -> (seconds, process, URL, connected client)."""
    port = _serve.free_port()
    url = f"http://127.0.0.1:{port}/"
    env = _serve.server_env(tmp / f"uploads-{port}", model=model, mcp=mcp)
    log = tmp / f"app-{port}.log"
    t0 = time.perf_counter()
    proc = _serve.start_app(port, env, log)
    client = _serve.wait_until_answering(url, photo, proc, log, stock=True)
    return time.perf_counter() - t0, proc, url, client


def report(lat: dict[str, list[float]], tput: dict[str, list[float]], start_s: dict[str, float], args) -> None:
    import gradio
    import torch

    p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    p90 = {k: float(np.percentile(v, 90)) * 1000 for k, v in lat.items()}
    rps = {k: statistics.median(v) for k, v in tput.items()}
    lat_ratio, tput_ratio = p50["app"] / p50["floor"], rps["app"] / rps["floor"]
    print(f"gradio {gradio.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs (shared with the clients"
          f" and any other work on the machine), 640x480 JPEG, {args.requests} sequential calls, {args.clients} clients"
          f" x {args.per_client} calls, {args.rounds} throughput rounds (median); MCP server off")
    print("| measure | floor | app | app / floor | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| /predict p50 latency | {p50['floor']:.1f} ms | {p50['app']:.1f} ms | {lat_ratio:.2f}x "
          f"| <= {LATENCY_TARGET}x "
          f"{'(met)' if lat_ratio <= LATENCY_TARGET else '(MISSED)'} |")
    print(f"| /predict p90 latency | {p90['floor']:.1f} ms | {p90['app']:.1f} ms "
          f"| {p90['app'] / p90['floor']:.2f}x | |")
    print(f"| throughput, {args.clients} clients | {rps['floor']:.1f} req/s | {rps['app']:.1f} req/s "
          f"| {tput_ratio:.2f}x | "
          f">= {THROUGHPUT_TARGET}x {'(met)' if tput_ratio >= THROUGHPUT_TARGET else '(MISSED)'} |")
    print(f"startup: `python app.py` to its first /predict answer: {start_s['off']:.1f} s with the MCP server off, "
          f"{start_s['on']:.1f} s with it on (the default)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="weights folder or Hub repo id for app.py (default: bundled)")
    parser.add_argument("--requests", type=int, default=40, help="sequential calls per server for latency")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    parser.add_argument("--per-client", type=int, default=15, help="calls per client per throughput round")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per server (median reported)")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        return serve_floor(args.serve_floor, args.model)

    with tempfile.TemporaryDirectory(prefix="app-speed-") as tmp_name:
        tmp = Path(tmp_name)
        photo = _serve.make_photo(tmp / "photo.jpg")
        start_s: dict[str, float] = {}
        start_s["off"], app_proc, app_url, app_client = startup(tmp, photo, args.model, mcp=False)
        procs = [app_proc]
        try:
            port = _serve.free_port()
            floor_argv = ["-m", "benchmarks.app_speed", "--serve-floor", str(port)]
            floor_argv += ["--model", args.model] if args.model else []
            floor_log = tmp / "floor.log"
            procs.append(_serve.start(floor_argv, _serve.server_env(tmp / "uploads-floor", model=args.model),
                                      floor_log))
            urls = {"floor": f"http://127.0.0.1:{port}/", "app": app_url}
            clients = {"floor": _serve.wait_until_answering(urls["floor"], photo, procs[-1], floor_log, stock=True),
                       "app": app_client}
            lat = latencies(clients, photo, args.requests)
            _serve.close_all(list(clients.values()))
            tput: dict[str, list[float]] = {"floor": [], "app": []}
            for _ in range(args.rounds):
                for name in tput:
                    tput[name].append(throughput(urls[name], photo, args.clients, args.per_client))
        finally:
            for p in procs:
                _serve.stop(p)
        start_s["on"], mcp_proc, _, mcp_client = startup(tmp, photo, args.model, mcp=True)
        _serve.close_all([mcp_client])
        _serve.stop(mcp_proc)
    report(lat, tput, start_s, args)


if __name__ == "__main__":
    main()
