"""The served app, measured: ``python -m benchmarks.server speed|attacks|soak|live [options]``.

* ``speed``: ``/predict`` through gradio_client against a Gradio app with the same page and guard that
  does no work (the floor), alternating, same run: latency p50/p90 and throughput of 8 clients.
* ``attacks``: a visitor (upload a photo, then /predict, about once a second) measures its latency,
  alone first (its baseline), then while one client runs each attack for ``--seconds``: per attack the
  visitor's p50/p95 as a ratio to the baseline, its requests lost, the server's RSS and cache growth.
* ``soak``: visitors, hostile files, raw-path attacks and live frames for ``--minutes``; the server's RSS
  every 5 s, its slope over the last 15 minutes, every lost request with why.
* ``live``: the Live tab in headless Chromium with its fake camera: the browser path (ms a frame, frames
  a second, bytes to the server) against the server path (capture to bars), what a first Live visit
  downloads, and the browser path's answers against the library's on the 500 test pictures enlarged 8x.

The server is ``python app.py`` in its own process, as on a Space: ``SPACE_ID`` set, so clients are
told apart by ``X-Forwarded-For`` (each client here sends an address of its own).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio_client is imported

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from tests.support import CHROMIUM, CHROMIUM_ARGS, FAKE_UI, call, fn_index, hostile_files, upload  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VISITOR, ATTACKER = {"x-forwarded-for": "8.8.8.8"}, {"x-forwarded-for": "9.9.9.9"}


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A photo-like JPEG, different bytes for each seed (the app answers a file it has seen from memory)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float32)
    base = np.stack([xx / size[0], yy / size[1], 1 - xx / size[0]], axis=-1) * 200
    buf = io.BytesIO()
    Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@contextmanager
def server(tmp: Path, *extra: str, mcp: bool = False):
    """``python -m benchmarks.server serve ...`` on a free port -> (URL, psutil process, upload folder)."""
    from tests.conftest import free_port

    port, uploads = free_port(), tmp / f"uploads-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADIO_", "MODEL_", "MALLOC_"))}
    env |= {"GRADIO_TEMP_DIR": str(uploads), "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_MCP_SERVER": str(mcp),
            "HF_HUB_OFFLINE": "1", "SPACE_ID": "benchmark/space"}
    log = open(tmp / f"server-{port}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.server", "serve", "--port", str(port), *extra], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(url + "config", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {(tmp / f'server-{port}.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield url, psutil.Process(proc.pid), uploads
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def serve(args) -> None:
    """The server process: the app (or the floor) on 127.0.0.1:PORT."""
    import app
    from cifar_model import Answer, Classifier

    clf = Classifier.from_pretrained()
    if args.floor:  # the page and its guard, no work: every picture "answered" at once
        blank = Answer(dict.fromkeys(clf.classes, 1 / len(clf.classes)), False, -1.0, np.zeros((32, 32, 3), np.uint8))
        clf.predict = lambda source: blank
        clf.heatmap = lambda answer: np.zeros((32, 32), np.float32)
    if args.no_browser_model:  # onnxruntime-web not installed: the Live tab falls back to the server
        app.ORT_DIR = Path(tempfile.mkdtemp())
    if args.loopback_downloads:  # 127.0.0.1 plays huggingface.co, which Gradio lets itself download from
        from gradio import processing_utils
        processing_utils.PUBLIC_HOSTNAME_WHITELIST.append("127.0.0.1")
    demo = app.build_demo(clf)
    keep = float(os.environ.get("KEEP_UPLOADS_S", app.KEEP_UPLOADS_S))
    demo.launch(server_name="127.0.0.1", server_port=args.port, quiet=True, **app.launch_kwargs(demo, keep))


class Visitor(threading.Thread):
    """Upload a new photo, then /predict, about once a second, until stopped: latencies and losses."""

    def __init__(self, url: str, headers: dict = VISITOR, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.every = url, headers, every
        self.latencies: list[float] = []
        self.lost: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        seed = random.randrange(1 << 30)
        while not self.stopped.is_set():
            seed += 1
            t0 = time.monotonic()
            try:
                path = upload(self.url, photo(seed), headers=self.headers)
                message = call(self.url, "predict", {"path": path}, timeout=30, headers=self.headers)
                if not message["success"]:
                    raise RuntimeError(message["output"].get("error"))
                self.latencies.append(time.monotonic() - t0)
            except Exception as err:  # noqa: BLE001 -- a lost request, whatever the cause, is what is counted
                self.lost.append(f"{type(err).__name__}: {str(err)[:120]}")
            self.stopped.wait(max(0.0, self.every - (time.monotonic() - t0)))


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.exists() else 0


def rss(proc: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def measure(url: str, proc: psutil.Process, uploads: Path, seconds: float, attack=None) -> dict:
    """The visitor's latencies for ``seconds`` while ``attack(url, deadline)`` runs (if any)."""
    visitor, rss0, cache0 = Visitor(url), rss(proc), folder_bytes(uploads)
    deadline = time.monotonic() + seconds
    attacker = threading.Thread(target=attack, args=(url, deadline), daemon=True) if attack else None
    visitor.start()
    if attacker:
        attacker.start()
    peak = rss0
    while time.monotonic() < deadline:
        time.sleep(1)
        peak = max(peak, rss(proc))
    visitor.stopped.set()
    visitor.join(60)
    if attacker:
        attacker.join(30)
    return {"lat": visitor.latencies, "lost": visitor.lost, "rss": (peak - rss0) / 2**20,
            "cache": (folder_bytes(uploads) - cache0) / 2**20}


# --- the attacks, each from one client (ATTACKER) until its deadline ------------------------------


def attack_url(url: str, deadline: float) -> None:
    """Ask the server to download a large file (the Hub's role is played by 127.0.0.1) through every route."""
    big = f"http://127.0.0.1:{SLOW_PORT}/big.bin"
    payload = {"path": big, "url": big, "meta": {"_type": "gradio.FileData"}}
    while time.monotonic() < deadline:
        for route, body in (("gradio_api/queue/join", {"data": [payload], "fn_index": fn_index(url, "predict"),
                                                       "session_hash": "a"}),
                            ("gradio_api/run/predict", {"data": [payload], "fn_index": 0, "session_hash": "a"})):
            httpx.post(url + route, json=body, headers=ATTACKER, timeout=30)
        httpx.get(url + f"gradio_api/file={big}", headers=ATTACKER, timeout=30)


def slowest_pictures() -> dict[str, bytes]:
    """The costliest pictures to decode within the limits, by format: as many pixels as their bytes allow."""
    from cifar_model.preprocess import LOSSLESS_MAX_PIXELS, PIXELS_PER_BYTE

    side = int(LOSSLESS_MAX_PIXELS ** 0.5)
    rng = np.random.default_rng(0)
    out = {}
    for fmt, kwargs in (("WEBP", {"lossless": True, "exif": b"Exif\0\0"}), ("PNG", {}),
                        ("TIFF", {"compression": "tiff_deflate"}), ("GIF", {})):
        rows = 0
        while fmt not in out:  # flat, with just enough noise rows that the file is large enough to be allowed
            pixels = np.full((side, side, 3), 90, np.uint8)
            pixels[:rows] = rng.integers(0, 256, (rows, side, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, fmt, **kwargs)
            if buf.tell() * PIXELS_PER_BYTE >= side * side:
                out[fmt] = buf.getvalue()
            rows = rows * 2 or 8
    return out


def vary(data: bytes, i: int) -> bytes:
    """The same picture in different bytes (the app remembers answers by file): a chunk nobody reads."""
    if data.startswith(b"RIFF"):  # WebP (extended format): an unknown chunk at the end, the RIFF size patched
        data = data + b"UNIQ" + (8).to_bytes(4, "little") + i.to_bytes(8, "little")
        return data[:4] + (len(data) - 8).to_bytes(4, "little") + data[8:]
    end = data.rindex(b"IEND") - 4  # PNG: a private chunk before IEND
    return data[:end] + (8).to_bytes(4, "big") + b"prIv" + i.to_bytes(8, "big") + bytes(4) + data[end:]


def attack_decode(url: str, deadline: float) -> None:
    """Join /predict 1.5 times a second with the costliest picture (never reading the answers)."""
    picture, i = slowest_pictures()["WEBP"], 0  # the costliest to decode (see decode_costs)
    while time.monotonic() < deadline:
        i += 1
        try:
            path = upload(url, vary(picture, i), f"p{i}.webp", headers=ATTACKER)
            httpx.post(url + "gradio_api/queue/join", headers=ATTACKER, timeout=10, json={
                "data": [{"path": path}], "fn_index": fn_index(url, "predict"), "session_hash": f"d{i}"})
        except (RuntimeError, httpx.HTTPError):
            pass
        time.sleep(1 / 1.5)


def decode_costs() -> None:
    """How long the library takes on the costliest picture of each format (median of 3, this process)."""
    from cifar_model import to_uint8

    for fmt, data in slowest_pictures().items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            to_uint8(data)
            times.append(time.perf_counter() - t0)
        print(f"  costliest {fmt} within the limits: {len(data):,} bytes, decoded in {statistics.median(times):.2f} s")


def attack_uploads(url: str, deadline: float) -> None:
    """10 MB uploads as fast as the server takes them."""
    data = os.urandom(10 * 1000 * 1000)
    while time.monotonic() < deadline:
        try:
            upload(url, data, headers=ATTACKER)
        except (RuntimeError, httpx.HTTPError):
            time.sleep(0.05)


def attack_live(url: str, deadline: float) -> None:
    """Join the server's live stream four times with one frame each, then send nothing."""
    frame = {"url": "data:image/jpeg;base64," + base64.b64encode(photo(1, (320, 240))).decode()}
    while time.monotonic() < deadline:
        for i in range(4):
            httpx.post(url + "gradio_api/queue/join", headers=ATTACKER, timeout=10, json={
                "data": [frame], "fn_index": fn_index(url, "live"), "session_hash": f"l{i}{time.monotonic()}"})
        time.sleep(5)


def attack_files(url: str, deadline: float) -> None:
    """Upload requests of 1,000 tiny files each."""
    while time.monotonic() < deadline:
        httpx.post(url + "gradio_api/upload", headers=ATTACKER, timeout=30,
                   files=[("files", (f"{i}.png", b"x")) for i in range(1000)])


ATTACKS = {"url": attack_url, "decode": attack_decode, "uploads": attack_uploads, "live": attack_live,
           "files": attack_files}
SLOW_PORT = 0


def attacks(args) -> None:
    import http.server

    global SLOW_PORT

    class Slow(http.server.BaseHTTPRequestHandler):  # 800 MiB, or a byte every 4 s
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            for _ in range(800):
                self.wfile.write(bytes(1 << 20))

        def log_message(self, *a):
            pass

    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    SLOW_PORT = slow.server_port
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    decode_costs()
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp), "--loopback-downloads") as (url, proc, uploads):
        base = measure(url, proc, uploads, args.seconds)
        p50, p95 = np.percentile(base["lat"], 50), np.percentile(base["lat"], 95)
        print(f"baseline (the visitor alone, {args.seconds:.0f} s): p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms,"
              f" {len(base['lat'])} requests, {len(base['lost'])} lost")
        print("| attack | visitor p50 | p95 | p95 / baseline | lost | server RSS growth | cache growth |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name in args.only or ATTACKS:
            r = measure(url, proc, uploads, args.seconds, ATTACKS[name])
            q50, q95 = (np.percentile(r["lat"], q) if r["lat"] else float("nan") for q in (50, 95))
            print(f"| {name} | {q50 * 1000:.0f} ms | {q95 * 1000:.0f} ms | {q95 / p95:.2f}x | {len(r['lost'])} of "
                  f"{len(r['lat']) + len(r['lost'])} | {r['rss']:+.0f} MB | {r['cache']:+.0f} MB |", flush=True)
            for reason in sorted(set(r["lost"])):
                print(f"    lost: {reason}")
        # After the upload flood: uploads and MCP still work for everyone else.
        after = upload(url, photo(7), headers={"x-forwarded-for": "1.1.1.1"})
        print(f"after the attacks: a new visitor's upload {'works' if after else 'FAILS'}; "
              f"/config {httpx.get(url + 'config').status_code}")
    slow.shutdown()


def speed(args) -> None:
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as (app_url, *_), \
            server(Path(tmp), "--floor") as (floor_url, *_):
        picture = Path(tmp) / "photo.jpg"
        picture.write_bytes(photo(0))
        clients = {"app": Client(app_url, verbose=False, headers=VISITOR),
                   "floor": Client(floor_url, verbose=False, headers=VISITOR)}
        lat: dict[str, list[float]] = {k: [] for k in clients}
        for i in range(args.requests + 5):  # alternating, so drift in the machine's load hits both
            for name, client in clients.items():
                t0 = time.perf_counter()
                client.predict(handle_file(str(picture)), api_name="/predict")
                if i >= 5:
                    lat[name].append(time.perf_counter() - t0)
        rate = {}
        for name, url in (("app", app_url), ("floor", floor_url)):
            pool = [Client(url, verbose=False, headers={"x-forwarded-for": f"8.8.4.{i}"}) for i in range(8)]
            t0 = time.perf_counter()
            threads = [threading.Thread(target=lambda c: [c.predict(handle_file(str(picture)), api_name="/predict")
                                                          for _ in range(10)], args=(c,)) for c in pool]
            [t.start() for t in threads]
            [t.join() for t in threads]
            rate[name] = 80 / (time.perf_counter() - t0)
    p = {k: (statistics.median(v) * 1000, np.percentile(v, 90) * 1000) for k, v in lat.items()}
    print("| measure | floor | app | app / floor |\n| --- | --- | --- | --- |")
    print(f"| /predict p50 | {p['floor'][0]:.1f} ms | {p['app'][0]:.1f} ms | {p['app'][0] / p['floor'][0]:.2f}x |")
    print(f"| /predict p90 | {p['floor'][1]:.1f} ms | {p['app'][1]:.1f} ms | {p['app'][1] / p['floor'][1]:.2f}x |")
    print(f"| throughput, 8 clients | {rate['floor']:.1f}/s | {rate['app']:.1f}/s "
          f"| {rate['app'] / rate['floor']:.2f}x |")


def soak(args) -> None:
    hostile = [f.data for f in hostile_files().values()]
    frame = {"url": "data:image/jpeg;base64," + base64.b64encode(photo(3, (320, 240))).decode()}
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as (url, proc, uploads):
        visitors = [Visitor(url, {"x-forwarded-for": f"8.8.8.{i}"}, every=0.25) for i in range(1, 5)]
        stop = threading.Event()
        errors: list[str] = []

        def other(kind: str) -> None:  # hostile files, raw paths, live frames: refused or answered, never lost
            i = 0
            while not stop.is_set():
                i += 1
                headers = {"x-forwarded-for": f"9.9.9.{len(kind)}"}
                try:
                    if kind == "hostile":
                        call(url, "predict", {"path": upload(url, hostile[i % len(hostile)], "f.png", headers)},
                             headers=headers)
                    elif kind == "paths":
                        call(url, "predict", {"path": "/etc/passwd"}, headers=headers)
                    else:
                        call(url, "live", frame, headers=headers)
                except Exception as err:  # noqa: BLE001
                    if "429" not in str(err) and "refused: 400" not in str(err):
                        errors.append(f"{kind}: {type(err).__name__}: {str(err)[:100]}")
                stop.wait(0.5)

        others = [threading.Thread(target=other, args=(k,), daemon=True) for k in ("hostile", "paths", "live")]
        start = time.monotonic()
        [t.start() for t in visitors + others]
        samples = []
        while time.monotonic() - start < args.minutes * 60:
            samples.append((time.monotonic() - start, rss(proc) / 2**20, folder_bytes(uploads) / 2**20))
            time.sleep(5)
        stop.set()
        [v.stopped.set() for v in visitors]
        [t.join(60) for t in visitors + others]
    t, mem, cache = np.array(samples).T
    tail = t >= t[-1] - 15 * 60
    lat = [x for v in visitors for x in v.latencies]
    lost = [x for v in visitors for x in v.lost]
    print(f"{args.minutes} min, {len(lat) + len(lost)} visitor requests ({len(lost)} lost), other clients' unexpected"
          f" failures: {len(errors)}; visitor p50 {np.percentile(lat, 50) * 1000:.0f} ms, p99 "
          f"{np.percentile(lat, 99) * 1000:.0f} ms")
    print(f"RSS {mem[0]:.0f} -> {mem[-1]:.0f} MB (peak {mem.max():.0f}); slope over the last 15 minutes "
          f"{np.polyfit(t[tail] / 60, mem[tail], 1)[0]:+.2f} MB/min; cache at the end {cache[-1]:.0f} MB")
    for minute in range(0, int(t[-1] // 60) + 1, 5):
        i = int(np.argmin(abs(t - minute * 60)))
        print(f"  t={minute:3d} min  RSS {mem[i]:6.0f} MB  cache {cache[i]:6.1f} MB")
    for reason in sorted(set(lost + errors)):
        print(f"  lost: {reason} (x{(lost + errors).count(reason)})")


# Page code for the live measurement: when the page sent each frame, when the bars changed.
TIMING_JS = """
window.__sent = []; window.__changed = [];
const send = window.fetch;
window.fetch = (url, init) => { if (/stream\\/|queue\\/join/.test(String(url))) window.__sent.push(performance.now());
                                return send(url, init); };
new MutationObserver(() => window.__changed.push(performance.now()))
  .observe(document, {subtree: true, attributes: true, attributeFilter: ['style', 'aria-valuenow']});
"""


def live(args) -> None:
    from playwright.sync_api import sync_playwright

    from cifar_model import Classifier

    def watch(page, url: str) -> dict:
        seen = {"sent": 0, "downloaded": {}}
        page.on("request", lambda r: seen.__setitem__("sent", seen["sent"] + len(r.post_data_buffer or b"")))
        page.on("requestfinished", lambda r: r.url.startswith(url + "live/") and seen["downloaded"].__setitem__(
            r.url.rsplit("/", 1)[1], r.sizes()["responseBodySize"]))
        page.on("websocket", lambda ws: ws.on("framesent", lambda f: seen.__setitem__("sent", seen["sent"] + len(f))))
        return seen

    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as (url, *_), \
            server(Path(tmp), "--no-browser-model") as (fallback_url, *_), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, FAKE_UI])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        seen = watch(page, url)
        page.goto(url)
        page.get_by_role("tab", name="Live").click()
        t0 = time.monotonic()
        page.evaluate("async () => { window.__live = await window.cifarLive; }")
        ready = time.monotonic() - t0
        page.click(".live-start")
        page.wait_for_function("() => window.__live.stats.frames > 5")
        frames0, sent0 = page.evaluate("() => window.__live.stats.frames"), seen["sent"]
        page.wait_for_timeout(10_000)
        stats = page.evaluate("() => ({frames: window.__live.stats.frames, ms: window.__live.stats.ms})")
        browser_sent = seen["sent"] - sent0
        # The same network on the 500 test pictures enlarged 8x, in the page and in the library (fp32).
        fp32 = Classifier.from_pretrained(precision="fp32")
        agree, worst = 0, 0.0
        for f in sorted((ROOT / "tests" / "data" / "cifar10-test-sample").glob("*/*.jpg")):
            buf = io.BytesIO()
            Image.open(f).resize((256, 256), Image.Resampling.NEAREST).save(buf, "PNG")
            got = page.evaluate("""async (src) => { const img = new Image(); img.src = src; await img.decode();
                const c = new OffscreenCanvas(img.width, img.height), x = c.getContext('2d'); x.drawImage(img, 0, 0);
                const d = x.getImageData(0, 0, img.width, img.height);
                return (await window.__live.classify(d.data, d.width, d.height)).probabilities; }""",
                                "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
            want = list(fp32.predict(buf.getvalue()).probabilities.values())
            agree += int(np.argmax(got) == np.argmax(want))
            worst = max(worst, float(np.abs(np.array(got) - want).max()))
        # The server's path: the same page where onnxruntime-web can't load.
        server_page = browser.new_page(viewport={"width": 1366, "height": 768})
        server_page.route("https://**", lambda route: route.abort())
        server_page.add_init_script(TIMING_JS)
        server_seen = watch(server_page, fallback_url)
        server_page.goto(fallback_url)
        server_page.get_by_role("tab", name="Live").click()
        server_page.wait_for_function("() => document.body.classList.contains('live-fallback')")
        server_page.locator("#live-server").get_by_text("Click to Access Webcam").click()
        server_page.locator("#live-server").get_by_role("button", name="capture photo").click()
        server_page.locator("#live-server [data-testid='label-output-value']").wait_for(state="visible")
        sent0 = server_seen["sent"]
        server_page.evaluate("() => { window.__sent = []; window.__changed = []; }")
        server_page.wait_for_timeout(10_000)
        sent, changed = server_page.evaluate("() => [window.__sent, window.__changed]")
        server_sent = server_seen["sent"] - sent0
        lags = [min((c - s for c in changed if c > s), default=None) for s in sent]
        lags = [x for x in lags if x is not None]
        browser.close()
    n = stats["frames"] - frames0
    print(f"Chromium headless, fake camera, 10 s each; {os.cpu_count()} CPUs shared with the server")
    print("| | in the browser | on the server |\n| --- | --- | --- |")
    print(f"| frames classified a second | {n / 10:.1f} | {len(sent) / 10:.1f} |")
    print(f"| ms a frame (browser: resize + network; server: frame sent to the bars changing, median) | "
          f"{statistics.median(stats['ms'][-n:]):.1f} | {statistics.median(lags) if lags else float('nan'):.0f} |")
    print(f"| bytes sent to the server in 10 s | {browser_sent:,} | {server_sent:,} |")
    print(f"first Live visit: {sum(seen['downloaded'].values()):,} bytes over the wire ("
          + ", ".join(f"{k} {v:,}" for k, v in sorted(seen["downloaded"].items())) + f"), ready in {ready:.1f} s")
    print(f"browser path vs Classifier (fp32) on the 500 test pictures enlarged 8x: top class agrees on {agree}/500, "
          f"largest probability difference {worst:.1e}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="(internal) run the app")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--floor", action="store_true")
    s.add_argument("--loopback-downloads", action="store_true")
    s.add_argument("--no-browser-model", action="store_true")
    sub.add_parser("speed").add_argument("--requests", type=int, default=40)
    a = sub.add_parser("attacks")
    a.add_argument("--seconds", type=float, default=60)
    a.add_argument("--only", nargs="*", choices=list(ATTACKS))
    sub.add_parser("soak").add_argument("--minutes", type=float, default=45)
    sub.add_parser("live")
    args = p.parse_args(argv)
    {"serve": serve, "speed": speed, "attacks": attacks, "soak": soak, "live": live}[args.command](args)


if __name__ == "__main__":
    main()
