"""Memory and correctness of ``python app.py`` over a long run of mixed, partly hostile, traffic.

    python -m benchmarks.soak [--seconds 600] [--warmup 120] [--sample-every 5] [--model DIR_OR_REPO]

``python app.py`` runs as a subprocess on a free port of 127.0.0.1 with the environment a Space
starts it with: no MALLOC_* (a Space can't set MALLOC_ARENA_MAX before Python starts), no GRADIO_*
(so the MCP server is on, as by default), only its own upload folder and telemetry off
(``--server-env KEY=VALUE`` adds a variable, for experiments). Eight client threads run for
``--seconds``:

* 5 gradio_client clients send real pictures (the 500 committed CIFAR-10 test pictures, the app's
  examples and, every 10th request, a generated 640x480 or 1920x1440 photo); each answer's top class
  must be what :meth:`cifar_model.Classifier.predict` gives in this process. Each upload is made a
  file no earlier upload was (random bytes after the JPEG's end, which decoders ignore), as real
  visitors' files are: Gradio stores identical uploads once (``--same-files`` sends them as they
  are). Each client starts a new session (a new Client) every ``--session-requests`` requests, as
  visitors come and go.
* 2 gradio_client clients send tests/hostile.py's corpus (bombs, truncated, mislabelled files...);
  each must get the library's own error sentence, or its prediction for the odd-but-valid ones.
* 1 client sends raw-path attacks over plain HTTP, as gradio_client never would: ``POST
  /gradio_api/queue/join`` with an image payload naming a file outside the upload folder
  (``/etc/passwd``, a traversal out of the upload folder, a secret file of this run...), a new session
  each time, then reads ``/gradio_api/queue/data``. The answer must be ``app.REFUSED`` (or, for a
  payload Gradio checks itself, FileData or not an image's, Gradio's own refusal) and must never
  contain the file's content.

The server's RSS (with children) and thread count are sampled every ``--sample-every`` seconds.
Reported: requests, outcomes by kind, wrong answers (must be 0), latency p50/p99, RSS start / peak /
end, and the least-squares RSS slope in MB per minute after ``--warmup`` seconds. Exit status 1 when
an answer is wrong, a file leaks, or the slope exceeds ``--max-slope``. Loopback only; every loop is
bounded by the deadline and every request by a timeout, so the run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

from . import _serve
from ._serve import Expected, Sampler, Tally, call, judge, mb, ms

REQUEST_TIMEOUT_S = 60.0  # a request not answered by then counts as lost (and is cancelled)
VALID_CLIENTS, HOSTILE_CLIENTS = 5, 2
PHOTO_EVERY = 10  # every 10th valid request sends a photo-sized upload instead of a 32x32 picture
PHOTO_SIZES = ((640, 480), (1920, 1440))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0, help="length of the run (default %(default)s)")
    p.add_argument("--warmup", type=float, default=120.0,
                   help="seconds excluded from the slope (default %(default)s; a third of --seconds if that is less)")
    p.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling interval in seconds")
    p.add_argument("--session-requests", type=int, default=100, help="requests per gradio_client session")
    p.add_argument("--same-files", action="store_true",
                   help="send the pictures as they are, not each upload made distinct (Gradio then stores each once)")
    p.add_argument("--max-slope", type=float, default=1.0, help="allowed RSS slope after warm-up, MB per minute")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="add a variable to the server's environment (e.g. MALLOC_ARENA_MAX=2)")
    p.add_argument("--model", default=None, help="weights folder or Hub repo id (default: bundled weights/)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Raw-path attacks, over plain HTTP.


def predict_fn_index(url: str) -> int:
    """The ``/predict`` event's index, from the page's ``/config``."""
    config = httpx.get(f"{url}config", timeout=30).json()
    for dep in config["dependencies"]:
        if dep.get("api_name") == "predict":
            return dep["id"]
    raise SystemExit("the app's /config has no event with api_name 'predict'")


def attacks(upload_dir: Path, secret: Path) -> list[tuple[str, object, bool]]:
    """(name, payload, refused by Gradio before the handler) for each attack."""
    from cifar_model import BUNDLED_WEIGHTS

    file_data = {"_type": "gradio.FileData"}
    return [
        ("/etc/passwd", {"path": "/etc/passwd"}, False),
        ("relative traversal", {"path": "../../../../../../../../etc/passwd"}, False),
        ("secret of this run", {"path": str(secret)}, False),
        ("traversal out of the upload folder", {"path": f"{upload_dir}/../{secret.name}"}, False),
        ("/proc/self/environ", {"path": "/proc/self/environ"}, False),
        ("the weights", {"path": str(BUNDLED_WEIGHTS / "model.safetensors")}, False),
        ("app.py, relative", {"path": "app.py"}, False),
        ("file:// url", {"url": f"file://{secret}"}, False),
        ("NUL byte", {"path": f"{upload_dir}/x.jpg\0/etc/passwd"}, False),
        ("bare string", "/etc/passwd", True),
        ("FileData /etc/passwd", {"path": "/etc/passwd", "meta": file_data}, True),
        ("FileData secret", {"path": str(secret), "meta": file_data}, True),
    ]


def raw_attack(http: httpx.Client, url: str, fn_index: int, payload: object, timeout: float) -> tuple[str, str, str]:
    """One attack in a new session -> (everything the server sent back, status, the error message
    shown). Status: "refused" (the event failed), "answered" (it succeeded), "timeout", "no answer"
    or "HTTP <code>" (the join itself was refused)."""
    session = secrets.token_hex(8)
    body = {"data": [payload], "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    joined = http.post(f"{url}gradio_api/queue/join", json=body, timeout=timeout)
    text = joined.text
    if joined.status_code != 200:
        return text, f"HTTP {joined.status_code}", ""
    event_id = joined.json().get("event_id")
    deadline = time.monotonic() + timeout
    with http.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=timeout) as sse:
        for line in sse.iter_lines():
            text += line + "\n"
            if time.monotonic() > deadline:
                return text, "timeout", ""
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_completed" and msg.get("event_id") == event_id:
                if msg.get("success"):
                    return text, "answered", ""
                return text, "refused", (msg.get("output") or {}).get("error") or ""
            if msg.get("msg") == "close_stream":
                break
    return text, "no answer", ""


def attack_outcome(text: str, status: str, shown: str, by_gradio: bool, secrets_: tuple[str, ...],
                   refused: str) -> tuple[str, str]:
    """(outcome, detail): "leak" if any secret appears anywhere in the answer; else "ok" when the
    event failed with the app's sentence, or failed at all for a payload Gradio refuses before the
    handler runs (a FileData outside the upload folder, a payload that is not an image's)."""
    if any(s in text for s in secrets_):
        return "leak", text[:200]
    if status == "refused" and (shown == refused or by_gradio):
        return "ok", ""
    if status == "refused" or status == "answered":
        return "mismatch", f"{status}, shown {shown[:100]!r}"
    return "lost", status


# ---------------------------------------------------------------------------------------------
# The clients.


def valid_worker(i: int, url: str, valid: dict[Path, Expected], photos: list[Path], deadline: float,
                 tally: Tally, args, scratch: Path) -> None:
    files = [p for p in valid if p not in photos]
    rng = random.Random(i)
    rng.shuffle(files)  # each client its own order
    scratch.mkdir()

    def pick(n: int) -> tuple[Path, Path]:
        path = photos[(n // PHOTO_EVERY) % len(photos)] if n % PHOTO_EVERY == PHOTO_EVERY - 1 else files[n % len(files)]
        return path, path if args.same_files else distinct_copy(path, scratch, rng)

    _client_loop(url, deadline, tally, args, pick, valid)


def _client_loop(url: str, deadline: float, tally: Tally, args, pick, expected: dict[Path, Expected]) -> None:
    """One client thread's requests until ``deadline``: ``pick(n)`` -> (picture, the file to send)."""
    client, n = None, 0
    while time.monotonic() < deadline:
        client = _session(client, url, n, args)
        path, sent = pick(n)
        result, error, seconds = call(client, sent, REQUEST_TIMEOUT_S)
        tally.add(path.name, judge(result, error, expected[path]), seconds)
        n += 1
    if client is not None:
        _serve.close_all([client])


def _session(client, url: str, n: int, args):
    """A new client (a new visitor's session) every ``args.session_requests`` requests."""
    if client is None or n % args.session_requests == 0:
        if client is not None:
            _serve.close_all([client])
        client = _serve.new_client(url)
    return client


def distinct_copy(path: Path, folder: Path, rng: random.Random) -> Path:
    """``path`` with 8 random bytes after the JPEG's end marker (decoders ignore them): the same
    picture in a file no earlier upload had, as every real visitor's file is (Gradio stores identical
    uploads once, so sending the same files over and over would hide how its cache grows)."""
    out = folder / path.name
    out.write_bytes(path.read_bytes() + rng.randbytes(8))
    return out


def hostile_worker(i: int, url: str, hostile: dict[Path, Expected], deadline: float, tally: Tally, args) -> None:
    files = list(hostile)
    random.Random(100 + i).shuffle(files)
    _client_loop(url, deadline, tally, args, lambda n: (files[n % len(files)],) * 2, hostile)


def raw_worker(url: str, fn_index: int, cases: list, secrets_: tuple[str, ...], refused: str, deadline: float,
               tally: Tally) -> None:
    with httpx.Client() as http:
        n = 0
        while time.monotonic() < deadline:
            name, payload, by_gradio = cases[n % len(cases)]
            t0 = time.perf_counter()
            try:
                judged = attack_outcome(*raw_attack(http, url, fn_index, payload, REQUEST_TIMEOUT_S), by_gradio,
                                        secrets_, refused)
            except (httpx.HTTPError, ValueError) as err:
                judged = ("lost", f"{type(err).__name__} {err}")
            tally.add(name, judged, time.perf_counter() - t0)
            n += 1


# ---------------------------------------------------------------------------------------------
# The run.


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import app  # nothing happens at import; REFUSED is the sentence the app answers for any foreign path

    warmup = min(args.warmup, args.seconds / 3)
    extra = dict(kv.split("=", 1) for kv in args.server_env)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp_name:
        tmp = Path(tmp_name)
        upload_dir, log = tmp / "uploads", tmp / "server.log"
        port = _serve.free_port()
        url = f"http://127.0.0.1:{port}/"
        env = _serve.server_env(upload_dir, model=args.model, extra=extra)
        env.pop("GRADIO_MCP_SERVER")  # the app's default, as on a Space
        proc = _serve.start_app(port, env, log)  # starts while the references are computed
        try:
            return run(args, app.REFUSED, url, proc, tmp, upload_dir, log, warmup, extra)
        finally:
            _serve.stop(proc)


def run(args, refused: str, url: str, proc, tmp: Path, upload_dir: Path, log: Path, warmup: float,
        extra: dict) -> int:
    t_begin = time.perf_counter()
    marker = f"SOAK-SECRET-{secrets.token_hex(8)}"
    secret = tmp / "secret.txt"
    secret.write_text(marker + "\n")
    photos = [_serve.make_photo(tmp / f"photo_{w}x{h}.jpg", (w, h)) for w, h in PHOTO_SIZES]
    valid, hostile = _serve.reference(args.model, _serve.real_pictures() + photos, tmp / "hostile")
    print(f"references: {len(valid)} valid pictures ({len(photos)} photos), {len(hostile)} hostile files "
          f"({time.perf_counter() - t_begin:.1f} s)", flush=True)
    _serve.close_all([_serve.wait_until_answering(url, next(iter(valid)), proc, log)])
    fn_index = predict_fn_index(url)
    cases = attacks(upload_dir, secret)
    # /etc/passwd's first line, this process's environment's PATH, and this run's secret must never come back.
    leaks = (marker, "root:x:0:0", f"PATH={os.environ.get('PATH', '')}")
    print(f"app.py answering on {url} ({time.perf_counter() - t_begin:.1f} s); /predict is fn_index {fn_index}; "
          f"{len(cases)} raw attacks", flush=True)

    sampler = Sampler(proc.pid, every=args.sample_every)
    tallies = {"valid": Tally(), "hostile": Tally(), "raw": Tally()}
    start = time.monotonic()
    deadline = start + args.seconds
    sampler.mark()
    sampler.start()
    cpu0 = sampler.cpu_seconds()
    threads = [threading.Thread(target=valid_worker, daemon=True,
                                args=(i, url, valid, photos, deadline, tallies["valid"], args, tmp / f"sent-{i}"))
               for i in range(VALID_CLIENTS)]
    threads += [threading.Thread(target=hostile_worker, args=(i, url, hostile, deadline, tallies["hostile"], args),
                                 daemon=True) for i in range(HOSTILE_CLIENTS)]
    threads.append(threading.Thread(target=raw_worker, daemon=True,
                                    args=(url, fn_index, cases, leaks, refused, deadline, tallies["raw"])))
    for t in threads:
        t.start()
    watch(threads, tallies, sampler, start, deadline, upload_dir)
    end = time.monotonic()
    cpu = sampler.cpu_seconds() - cpu0
    sampler.mark()
    sampler.stop()
    return report(args, tallies, sampler, start, end, warmup, cpu, extra, cached_uploads(upload_dir))


def watch(threads: list[threading.Thread], tallies: dict[str, Tally], sampler: Sampler, start: float,
          deadline: float, upload_dir: Path) -> None:
    """Wait for the clients (at most a request timeout past the deadline), one progress line a minute."""
    next_report, seen = start + 60, 0
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline + REQUEST_TIMEOUT_S + 30:
        time.sleep(1)
        if time.monotonic() >= next_report:
            next_report += 60
            done = sum(t.total for t in tallies.values())
            recent = tallies["valid"].latencies[seen:]
            seen += len(recent)
            print(f"  {time.monotonic() - start:5.0f} s: {done} requests, valid p50 {ms(recent, 50)} this minute, "
                  f"{cached_uploads(upload_dir)} uploads cached, server RSS {mb(sampler.samples[-1][1])}, "
                  f"{sampler.samples[-1][2]} threads", flush=True)


def cached_uploads(upload_dir: Path) -> int:
    """Folders in Gradio's upload folder (one per distinct file it stored)."""
    return sum(1 for e in os.scandir(upload_dir) if e.is_dir()) if upload_dir.is_dir() else 0


def report(args, tallies: dict[str, Tally], sampler: Sampler, start: float, end: float, warmup: float,
           cpu: float, extra: dict, cached_files: int) -> int:
    import gradio

    seconds = end - start
    rss = [v for _, v, _ in sampler.samples]
    threads = [n for _, _, n in sampler.samples]
    slope = sampler.slope(start + warmup)
    whole = sampler.slope(start)
    half = sampler.slope(start + seconds / 2)
    done = sum(t.total for t in tallies.values())
    print(f"\ngradio {gradio.__version__}, {os.cpu_count()} CPUs shared by server and clients (and other work on "
          f"this machine); server environment: defaults{', ' + str(extra) if extra else ''}; MALLOC_* unset; "
          f"{'the same files re-sent' if args.same_files else 'every picture upload a distinct file'}")
    print("| measure | result |")
    print("| --- | --- |")
    print(f"| run | {seconds:.0f} s, {VALID_CLIENTS} picture clients + {HOSTILE_CLIENTS} hostile-file clients "
          f"(gradio_client, a new session every {args.session_requests} requests) + 1 raw-path client (HTTP) |")
    print(f"| requests | {done} ({done / seconds:.1f} req/s): valid {tallies['valid'].total}, "
          f"hostile {tallies['hostile'].total}, raw-path {tallies['raw'].total} |")
    for kind, what in (("valid", "right class"), ("hostile", "expected outcome"), ("raw", "refused")):
        t = tallies[kind]
        others = ", ".join(f"{n} {o}" for o, n in sorted(t.outcomes.items()) if o != "ok") or "nothing else"
        print(f"| {kind} | {t.outcomes['ok']} {what}; {others}; latency p50 {ms(t.latencies, 50)}, "
              f"p99 {ms(t.latencies, 99)}, max {ms(t.latencies, 100)} |")
    print(f"| server RSS (with children) | start {mb(rss[0])}, peak {mb(max(rss))}, end {mb(rss[-1])} "
          f"({len(rss)} samples every {args.sample_every:g} s) |")
    print(f"| server RSS through the run | {' -> '.join(mb(v) for v in sampler.trend(start, end, 7))} |")
    print(f"| RSS slope (least squares) | {fmt_slope(slope)} after the first {warmup:.0f} s; "
          f"{fmt_slope(whole)} over the whole run; {fmt_slope(half)} over the second half |")
    print(f"| server threads | start {threads[0]}, max {max(threads)}, end {threads[-1]} |")
    print(f"| server CPU | {cpu:.0f} s of {seconds:.0f} s x {os.cpu_count()} CPUs; "
          f"soak process {sum(psutil.Process().cpu_times()[:2]):.0f} s |")
    print(f"| distinct files in Gradio's upload folder at the end | {cached_files} |")

    failed = []
    for kind in ("valid", "hostile", "raw"):
        t = tallies[kind]
        if t.outcomes["mismatch"] or t.outcomes["leak"]:
            failed.append(f"{kind}: wrong answers {dict(t.outcomes)} e.g. {t.failures[:5]}")
        if t.outcomes["lost"]:
            failed.append(f"{kind}: {t.outcomes['lost']} requests lost, e.g. {t.failures[:3]}")
        if not t.total:
            failed.append(f"{kind}: no request completed")
    if slope is None:
        failed.append("too few RSS samples after the warm-up for a slope")
    elif slope > args.max_slope:
        failed.append(f"RSS still grows after warm-up: {slope:+.2f} MB/min (> {args.max_slope} MB/min)")
    for line in failed:
        print(f"FAILED: {line}")
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    return 1 if failed else 0


def fmt_slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} MB/min"


if __name__ == "__main__":
    raise SystemExit(main())
