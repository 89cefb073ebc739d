"""Mutation testing of the pure logic, with mutmut (pinned in requirements-dev.txt): how many small
changes to the code (``<`` for ``<=``, ``+ 1`` for ``- 1``, a dropped argument...) the fast tests notice.

    python -m benchmarks.mutation                        # every module below, within 60 minutes
    python -m benchmarks.mutation --module preprocess --module app --max-minutes 15

Each module is mutated on its own, with only its fast tests (never the browser tests, the served-app
tests or the full test split), in a scratch copy of the repository under ``mutants/<module>/`` (git
ignores it): a copy of the source, the tests, ``weights/`` and ``examples/``, and a ``pyproject.toml``
with a ``[tool.mutmut]`` section written from ``MODULES`` below. There mutmut runs
``mutmut run --max-children 2`` (2 cores; ``--max-children N`` to change it), under ``nice``. Only the
functions named in ``MODULES`` are mutated: the lines of the file's other functions are handed to mutmut as
``do_not_mutate_patterns``. A module that would run past ``--max-minutes`` (counted from the start,
for all modules together) is stopped; its unchecked mutants are counted as such, not as killed.

The report, ``benchmarks/results/2026-11-26-cpu-mutation.log``, has per module: mutants, killed,
survived, timeouts, not checked, the score (killed + timeouts over mutants less the ones listed as
equivalent in ``benchmarks/mutation_equivalents.toml``) and each survivor with its file, line and the
mutation; a survivor listed there is shown with the reason it cannot change what a caller sees (or,
for the few no test can kill under mutmut, why not; those count as survivors). mutmut counts a
mutant whose tests run past 3x their time plus 10 s (wall clock) as a timeout, and timeouts as killed;
each timeout is listed with its mutation, so a reader can tell a real hang (a loop that no longer ends)
from a slow run.

Each mutant's tests run in a process forked from mutmut's fork server, which has imported the tests but
run nothing: forked from a process in which torch had used its thread pool, the tests hung at their
first parallel operation, and every such mutant counted as a (false) timeout.

Run it under ``nice``; pass ``--max-minutes`` to bound it. Times per module are in the log.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "2026-11-26-cpu-mutation.log"
SCRATCH = ROOT / "mutants"
COPY = ["cifar_model", "train", "app.py", "tests", "weights", "examples", "pyproject.toml"]


@dataclass
class Module:
    files: dict[str, list[str] | None]  # file -> the functions (or classes) to mutate; None: all
    tests: list[str]  # pytest arguments: the module's fast tests
    skip: dict[str, str] = field(default_factory=dict)  # function -> why it is not mutated


MODULES: dict[str, Module] = {
    "preprocess": Module({"cifar_model/preprocess.py": None},
                         ["tests/test_preprocess.py", "tests/test_mutants_preprocess.py"]),
    "calibration": Module(
        {"cifar_model/calibration.py": None},
        ["tests/test_calibration.py", "tests/test_mutants_calibration.py"],
        skip={"reliability_diagram": "drawing code: its pixels are checked by eye, not by a behavioural test",
              "_font": "drawing code (the diagram's font)", "_hatch": "drawing code (the diagram's hatching)"}),
    "weights": Module({"cifar_model/weights.py": None},
                      ["tests/test_weights.py", "tests/test_model.py", "tests/test_mutants_weights.py",
                       "tests/test_hub.py", "-k",
                       # not the shipped weights' accuracy checks (11 s a mutant): they test the network, not
                       # the config checks, which every other test here goes through
                       "not full_test_split and not score_at_least and not bf16_and_fp32"]),
    "metrics_model": Module({"cifar_model/metrics.py": None, "cifar_model/model.py": None},
                            ["tests/test_card.py", "tests/test_model.py", "tests/test_weights.py",
                             "tests/test_mutants_metrics.py", "-k",
                             "not full_test_split and not score_at_least and not bf16_and_fp32"]),
    "classifier": Module(
        {"cifar_model/classifier.py": ["tta_logits", "_fused_for_inference", "_pick_precision", "Classifier"],
         "cifar_model/explain.py": None},
        ["tests/test_model.py", "tests/test_mutants_classifier.py"]),
    # The served-app tests (tests/test_security.py, most of tests/test_app.py) start a Gradio server:
    # too slow to run once per mutant. These functions are called directly here, as the server calls them.
    "app": Module({"app.py": ["RequestLimits", "_folder_bytes", "_refuse", "_read_capped", "_replay",
                              "image_source", "unsure_notice", "enlarge", "heat_overlay", "_fresh_copies",
                              "Handlers"]},
                  ["tests/test_mutants_app.py"]),
    "train_data": Module(
        {"train/data.py": ["_where", "_read_tree", "_read_tar", "_plan_tar", "_decode_one", "_decode"],
         "train/recipe.py": ["split_train_val"]},
        ["tests/test_train_data.py", "tests/test_train.py"]),
}


def _survivor_lists() -> tuple[dict[tuple[str, str, str], str], dict[tuple[str, str, str], str]]:
    """(file, line, mutated line) -> why, for the [[equivalent]] and [[untestable]] groups of
    ``mutation_equivalents.toml``: survivors no test can kill, each with its reason."""
    data = tomllib.loads(Path(__file__).with_name("mutation_equivalents.toml").read_text())
    return tuple({(g["file"], before, after): g["why"] for g in data.get(table, []) for before, after in g["mutants"]}
                 for table in ("equivalent", "untestable"))


# EQUIVALENT: behaves exactly like the original for every caller (not counted in the score).
# UNTESTABLE: not equivalent, but no test can kill it under mutmut (counted as a survivor, shown with why).
EQUIVALENT, UNTESTABLE = _survivor_lists()


def _top_level(path: Path) -> list[tuple[str, int, int]]:
    """(name, first line with its decorators, last line) of each top-level def and class."""
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out.append((node.name, start, node.end_lineno))
    return out


def _excluded_lines(path: Path, only: list[str] | None, skip: dict[str, str]) -> tuple[list[str], list[str]]:
    """Regexes matching the lines not to mutate, and the lines they also hit among the ones to mutate."""
    lines = path.read_text().splitlines()
    keep, drop = set(), set()
    for name, start, end in _top_level(path):
        span = range(start, end + 1)
        if name in skip or (only is not None and name not in only):
            drop.update(span)
        else:
            keep.update(span)
    texts = {lines[i - 1].strip() for i in drop if lines[i - 1].strip()}
    collateral = sorted({lines[i - 1].strip() for i in keep if lines[i - 1].strip() in texts})
    return [r"^\s*" + re.escape(t) + r"\s*$" for t in sorted(texts)], collateral


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items) + "]"


def _prepare(name: str, mod: Module) -> tuple[Path, list[str]]:
    work = SCRATCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for item in COPY:
        src = ROOT / item
        (shutil.copytree(src, work / item, ignore=ignore) if src.is_dir() else shutil.copy2(src, work / item))
    patterns, notes = [], []
    for file, only in mod.files.items():
        p, collateral = _excluded_lines(ROOT / file, only, mod.skip)
        patterns += p
        notes += [f"{file}: also left unmutated (same text as an excluded line): {t}" for t in collateral]
    config = "\n".join([
        "", "[tool.mutmut]",
        f"source_paths = {_toml_list(['cifar_model', 'train', 'app.py'])}",
        f"only_mutate = {_toml_list(list(mod.files))}",
        f"also_copy = {_toml_list(['weights', 'examples'])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(mod.tests)}",
        f"pytest_add_cli_args = {_toml_list(['-p', 'no:cacheprovider', '-m', 'not browser'])}",
        f"do_not_mutate_patterns = {_toml_list(patterns)}",
        "use_git_change_detection = false",
        "use_setproctitle = false",
        # Each mutant's tests run in a process forked from a server that has imported the tests but run no
        # torch operation: a process forked after torch has used its thread pool hangs at its next
        # parallel operation (that is what mutmut's default "fork" did here: the hang counted as a
        # "timeout", i.e. as killed, whatever the mutant did).
        'process_isolation = "forkserver"',
        # a mutant that makes a test loop is stopped at 3x the test's time (+1 s), not mutmut's 15x:
        # on 2 shared cores the long waits cost more than the few mutants they would still kill
        "timeout_multiplier = 3.0",
        # ...plus 10 s: mutmut times each test alone, without the session fixtures it shares with others (the
        # bundled weights, loaded again in every mutant's process); on 2 busy cores a mutant's run took
        # past the default 1 s allowance and counted as a timeout though it would have been killed
        "timeout_constant = 10.0",
        "", ])
    with open(work / "pyproject.toml", "a") as f:
        f.write(config)
    return work, notes


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> tuple[int | None, str]:
    cmd = [sys.executable, "-m", "mutmut", *args]  # run the whole driver under nice
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        return None, out


def _function_of(path: Path, line: int) -> str:
    for name, start, end in _top_level(path):
        if start <= line <= end:
            return name
    return "?"


def _where(file: str, key: str, diff: str) -> tuple[int, str, str]:
    """The file's line number, the original line and the mutated line of a mutant, from ``mutmut show``."""
    minus = [l[1:] for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    plus = [l[1:] for l in diff.splitlines() if l.startswith("+") and not l.startswith("+++")]
    func = key.split("__mutmut_")[0].split(".")[-1].replace("x_", "", 1).replace("xǁ", "").split("ǁ")[-1]
    lines = (ROOT / file).read_text().splitlines()
    spans = [(s, e) for n, s, e in _top_level(ROOT / file)]
    hits = [i + 1 for i, text in enumerate(lines) if minus and text.strip() == minus[0].strip()]  # methods: other indent
    # prefer the hit inside the mutated function
    inside = [h for h in hits if any(s <= h <= e and _function_of(ROOT / file, h) in key for s, e in spans)]
    line = (inside or hits or [0])[0]
    return line, " / ".join(m.strip() for m in minus), " / ".join(p.strip() for p in plus)


def run_module(name: str, mod: Module, deadline: float, children: int = 2) -> dict:
    t0 = time.monotonic()
    work, notes = _prepare(name, mod)
    left = deadline - time.monotonic()
    rc, out = _mutmut(work, "run", "--max-children", str(children), timeout=max(left, 1))
    stopped = rc is None
    _, res = _mutmut(work, "results", "--all", "true", timeout=120)
    status = dict(re.findall(r"^\s+(\S+): (.+)$", res, flags=re.M))
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    survivors, equivalent, hung = [], [], []
    for key, s in sorted(status.items()):
        if s not in ("survived", "no tests", "suspicious", "timeout"):
            continue
        _, diff = _mutmut(work, "show", key, timeout=60)
        file = next((f for f in mod.files if key.startswith(f[:-3].replace("/", ".") + ".")), next(iter(mod.files)))
        line, before, after = _where(file, key, diff)
        func = _function_of(ROOT / file, line)
        reason = EQUIVALENT.get((file, before, after))
        row = f"{file}:{line} ({func}) [{s}] {before}  ->  {after}"
        if s == "timeout":
            hung.append(row)
            continue
        why = UNTESTABLE.get((file, before, after))
        (equivalent if reason else survivors).append(row + (f"\n        equivalent: {reason}" if reason else "")
                                                     + (f"\n        untestable here: {why}" if why else ""))
    total = len(status)
    killed = counts.get("killed", 0) + counts.get("caught by type check", 0)
    timeouts = counts.get("timeout", 0)
    score_base = total - len(equivalent) - counts.get("skipped", 0) - counts.get("not checked", 0)
    score = 100.0 * (killed + timeouts) / score_base if score_base else float("nan")
    return dict(name=name, mod=mod, total=total, killed=killed, timeouts=timeouts,
                survived=counts.get("survived", 0), no_tests=counts.get("no tests", 0),
                not_checked=counts.get("not checked", 0), other={k: v for k, v in counts.items() if k not in (
                    "killed", "caught by type check", "timeout", "survived", "no tests", "not checked")},
                survivors=survivors, equivalent=equivalent, hung=hung, score=score, stopped=stopped, notes=notes,
                seconds=time.monotonic() - t0, tail=out[-3000:] if not status else "")


def _section(r: dict) -> str:
    m: Module = r["mod"]
    rows = []
    rows.append(f"## {r['name']}: " + ", ".join(
        f"{f} ({'all functions' if only is None else ', '.join(only)})" for f, only in m.files.items()))
    rows.append(f"tests: {' '.join(m.tests)}")
    for fn, why in m.skip.items():
        rows.append(f"not mutated: {fn}: {why}")
    rows += [f"note: {n}" for n in r["notes"]]
    rows.append(f"mutants {r['total']}, killed {r['killed']}, survived {r['survived']}, timeouts "
                f"{r['timeouts']}, no tests {r['no_tests']}, not checked {r['not_checked']}"
                + "".join(f", {k} {v}" for k, v in r["other"].items())
                + f" (equivalent among the survivors: {len(r['equivalent'])}): score {r['score']:.1f}%"
                + f" in {r['seconds'] / 60:.1f} min"
                + (" (stopped at the time limit)" if r["stopped"] else ""))
    if r["survivors"]:
        rows.append("survivors:")
        rows += ["    " + s for s in r["survivors"]]
    if r["hung"]:
        rows.append("timeouts (counted as killed; each is listed so it can be judged a real hang):")
        rows += ["    " + s for s in r["hung"]]
    if r["equivalent"]:
        rows.append("equivalent (not counted):")
        rows += ["    " + s for s in r["equivalent"]]
    if r["tail"]:
        rows.append("mutmut said:\n" + r["tail"])
    return "\n".join(rows) + "\n"


def report(results: list[dict], output: Path, children: int = 2) -> str:
    """The log: this run's modules, and the other modules' sections from the previous log (a module can be
    re-run alone after a test was added); numbers for the overall line are kept in a .json beside it."""
    store = output.with_suffix(".json")
    saved = json.loads(store.read_text()) if store.exists() else {}
    for r in results:
        saved[r["name"]] = dict(section=_section(r), total=r["total"], ok=r["killed"] + r["timeouts"],
                                base=r["total"] - len(r["equivalent"]) - r["not_checked"]
                                - r["other"].get("skipped", 0), seconds=r["seconds"])
    store.write_text(json.dumps(saved, indent=1) + "\n")
    rows = [f"# Mutation testing, mutmut 3.8.1, CPU ({os.cpu_count()} cores shared, --max-children {children}, nice), "
            f"{datetime.date.today().isoformat()}",
            "# python -m benchmarks.mutation [--module NAME ...] [--max-minutes N]  (modules re-run alone "
            "keep the others' last sections)",
            "# score = (killed + timeouts) / (mutants - equivalent - not checked)", ""]
    names = [n for n in MODULES if n in saved]
    for n in names:
        rows.append(saved[n]["section"])
    tot = {k: sum(saved[n][k] for n in names) for k in ("total", "ok", "base", "seconds")}
    score = 100.0 * tot["ok"] / tot["base"] if tot["base"] else float("nan")
    rows.append(f"## overall ({', '.join(names)}): {tot['ok']} of {tot['base']} non-equivalent mutants killed "
                f"({score:.1f}%; goal 90%), {tot['total']} mutants, {tot['seconds'] / 60:.1f} min in all")
    missing = [n for n in MODULES if n not in saved]
    if missing:
        rows.append(f"## not run: {', '.join(missing)}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=list(MODULES), help="repeatable; default: all")
    ap.add_argument("--max-minutes", type=float, default=60.0, help="for all modules together")
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--max-children", type=int, default=2, help="mutmut's parallel test runs (default 2)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    deadline = started + 60 * args.max_minutes
    results = []
    for name in args.module or list(MODULES):
        if time.monotonic() > deadline - 30:
            print(f"{name}: not reached within {args.max_minutes:g} min", flush=True)
            continue
        r = run_module(name, MODULES[name], deadline, args.max_children)
        results.append(r)
        print(f"{name}: {r['total']} mutants, {r['killed']} killed, {r['survived']} survived, "
              f"score {r['score']:.1f}% ({r['seconds']:.0f} s)", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    text = report(results, args.output, args.max_children)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
