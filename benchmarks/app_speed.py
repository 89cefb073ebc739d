"""How much the app adds to Gradio's own cost, and how long ``python app.py`` takes to answer.

    .venv/bin/python benchmarks/app_speed.py [--model DIR_OR_REPO] [--requests 40] [--clients 8]

Two servers run side by side, each in its own process: ``python app.py`` and a *floor* app with
the same input and output components, the same event options and the same queue and launch
settings (built from app.py's own helpers), whose handler returns a constant. Both get the same
640x480 JPEG through gradio_client (upload + queue + result, as a real API user does):

* latency: p50 of sequential ``/predict`` calls, alternating between the two servers;
* throughput: ``--clients`` threads, each with its own Client, calling ``/predict`` in a loop;
* startup: from starting ``python app.py`` to its first ``/predict`` answer (imports, model load,
  server start, first request).

Targets: latency <= 1.25x the floor's, throughput >= 0.8x the floor's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # app.py, when run as a script from benchmarks/
LATENCY_TARGET, THROUGHPUT_TARGET = 1.25, 0.8


def make_photo(path: Path, size: tuple[int, int] = (640, 480), seed: int = 0) -> Path:
    """A photo-sized JPEG with photo-like content (gradients, shapes, sensor noise), made once."""
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


def serve_floor(port: int) -> None:
    """Run the floor app: app.py's input and output components and settings, no work."""
    import gradio as gr

    import app

    constant = ({c: 1.0 / len(app.CLASSES) for c in app.CLASSES}, "")
    with gr.Blocks() as floor:
        image = app.upload_image()
        label, notice = app.probability_bars(), gr.Markdown()
        image.change(lambda _: constant, image, [label, notice], api_name="predict", preprocess=False)
    floor.queue(**app.QUEUE_KWARGS).launch(server_name="127.0.0.1", server_port=port, quiet=True, **app.LAUNCH_KWARGS)


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_answer(url: str, photo: Path, proc: subprocess.Popen, timeout: float = 120.0):
    """Poll until ``/predict`` answers; returns the connected Client."""
    from gradio_client import Client, handle_file

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{proc.stderr.read()}")
        try:
            client = Client(url, verbose=False)
            client.predict(handle_file(str(photo)), api_name="/predict")
            return client
        except Exception:  # not up yet: connection refused, config not served...
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {timeout:.0f} s")


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
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(n_clients)]
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
    return n_clients * per_client / (time.perf_counter() - t0)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def report(lat: dict[str, list[float]], tput: dict[str, list[float]], startup: float, args) -> None:
    import gradio
    import torch

    p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    p90 = {k: float(np.percentile(v, 90)) * 1000 for k, v in lat.items()}
    rps = {k: statistics.median(v) for k, v in tput.items()}
    lat_ratio, tput_ratio = p50["app"] / p50["floor"], rps["app"] / rps["floor"]
    print(f"gradio {gradio.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"640x480 JPEG, {args.requests} sequential calls, {args.clients} clients x {args.per_client} calls, "
          f"{args.rounds} throughput rounds (median)")
    print("| measure | floor | app | app / floor | target |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| /predict p50 latency | {p50['floor']:.1f} ms | {p50['app']:.1f} ms | {lat_ratio:.2f}x | <= {LATENCY_TARGET}x "
          f"{'(met)' if lat_ratio <= LATENCY_TARGET else '(MISSED)'} |")
    print(f"| /predict p90 latency | {p90['floor']:.1f} ms | {p90['app']:.1f} ms | {p90['app'] / p90['floor']:.2f}x | |")
    print(f"| throughput, {args.clients} clients | {rps['floor']:.1f} req/s | {rps['app']:.1f} req/s | {tput_ratio:.2f}x | "
          f">= {THROUGHPUT_TARGET}x {'(met)' if tput_ratio >= THROUGHPUT_TARGET else '(MISSED)'} |")
    print(f"startup: `python app.py` to its first /predict answer: {startup:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="weights folder or Hub repo id for app.py (default: bundled)")
    parser.add_argument("--requests", type=int, default=40, help="sequential calls per server for latency")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    parser.add_argument("--per-client", type=int, default=15, help="calls per client per throughput round")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds per server (median reported)")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        return serve_floor(args.serve_floor)

    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
    if args.model:
        env["MODEL_REPO"] = args.model
    ports = {"floor": free_port(), "app": free_port()}
    urls = {k: f"http://127.0.0.1:{p}/" for k, p in ports.items()}
    with tempfile.TemporaryDirectory() as tmp:
        photo = make_photo(Path(tmp) / "photo.jpg")
        t0 = time.perf_counter()
        procs = {"app": start(["app.py", "--port", str(ports["app"])], env)}
        clients = {"app": wait_for_answer(urls["app"], photo, procs["app"])}
        startup = time.perf_counter() - t0
        procs["floor"] = start([__file__, "--serve-floor", str(ports["floor"])], env)
        try:
            clients["floor"] = wait_for_answer(urls["floor"], photo, procs["floor"])
            clients = {"floor": clients["floor"], "app": clients["app"]}
            lat = latencies(clients, photo, args.requests)
            tput: dict[str, list[float]] = {"floor": [], "app": []}
            for _ in range(args.rounds):
                for name in tput:
                    tput[name].append(throughput(urls[name], photo, args.clients, args.per_client))
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(timeout=30)
    report(lat, tput, startup, args)


if __name__ == "__main__":
    main()
