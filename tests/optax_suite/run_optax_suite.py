"""Runs the test suite that ships inside the installed ``optax`` package against gradtx.

    python tests/optax_suite/run_optax_suite.py                  # every Optax test except contrib
    python tests/optax_suite/run_optax_suite.py --only contrib   # optax.contrib's tests (issue 14)
    python tests/optax_suite/run_optax_suite.py --only alias_test schedule --baseline

Each test file is rewritten by ``shim.rewrite_test_source`` so that every public Optax name it uses
is gradtx's (see ``shim.py``), then run with pytest. A case *exercises gradtx* when it used at least
one substituted name; the pass rate is taken over those cases. With ``--baseline`` the unmodified
tests run first with Optax itself, and cases that fail there (broken in this environment) are left
out. ``--report FILE`` writes the summary and every failure as Markdown.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import optax

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OPTAX_DIR = pathlib.Path(optax.__file__).resolve().parent

CONFTEST = '''
import json, os
import pytest
import _optax_shim as shim

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    shim.USED.clear()
    shim.MISSING.clear()

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        message = ""
        if report.outcome == "failed" and call.excinfo is not None:
            text = str(call.excinfo.value)
            message = call.excinfo.typename + ": " + (text.splitlines()[0] if text else "")
        record = {"nodeid": item.nodeid, "outcome": report.outcome, "used": sorted(shim.USED),
                  "missing": sorted(shim.MISSING), "message": message[:300]}
        with open(os.environ["OPTAX_SUITE_RECORDS"] + f".{os.getpid()}", "a") as f:
            f.write(json.dumps(record) + "\\n")
'''

BASELINE_CONFTEST = '''
import json, os
import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        record = {"nodeid": item.nodeid, "outcome": report.outcome}
        with open(os.environ["OPTAX_SUITE_RECORDS"] + f".{os.getpid()}", "a") as f:
            f.write(json.dumps(record) + "\\n")
'''


def optax_test_files(only: list[str], include_contrib: bool) -> list[pathlib.Path]:
    files = sorted(OPTAX_DIR.rglob("*_test.py"))
    if not include_contrib:
        files = [f for f in files if "contrib" not in f.parts]
    if only:
        files = [f for f in files if any(word in str(f.relative_to(OPTAX_DIR)) for word in only)]
    return files


def optax_module_name(path: pathlib.Path) -> str:
    return "optax." + ".".join(path.relative_to(OPTAX_DIR).with_suffix("").parts)


def _run_pytest(
    directory: pathlib.Path, names: list[str], workers: int, records: pathlib.Path, extra_env: dict
) -> tuple[int, str]:
    env = dict(os.environ, OPTAX_SUITE_RECORDS=str(records), **extra_env)
    command = [sys.executable, "-m", "pytest", *[f"{n}.py" for n in names], "-q", "-p", "no:cacheprovider", "--rootdir",
               str(directory), "-o", "addopts=", "-o", "testpaths=", "--continue-on-collection-errors"]
    if workers > 1:
        command += ["-n", str(workers)]
    completed = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    return completed.returncode, completed.stdout + completed.stderr


def _read_records(records: pathlib.Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for part in records.parent.glob(records.name + ".*"):
        for line in part.read_text().splitlines():
            record = json.loads(line)
            out[record["nodeid"]] = record
    return out


def run(files: list[pathlib.Path], workers: int, baseline: bool) -> dict:
    work = pathlib.Path(tempfile.mkdtemp(prefix="optax_suite_"))
    sys.path.insert(0, str(HERE))
    import shim  # noqa: E402  (needs optax and gradtx importable)

    suite = work / "suite"
    suite.mkdir()
    shutil.copy(HERE / "shim.py", suite / "_optax_shim.py")
    (suite / "conftest.py").write_text(CONFTEST)
    # Every test file is written, since one test module may import another (``alias_test``).
    for path in optax_test_files([], include_contrib=True):
        name = shim.test_module_name(optax_module_name(path))
        (suite / f"{name}.py").write_text(shim.rewrite_test_source(path.read_text()))
    names = [shim.test_module_name(optax_module_name(path)) for path in files]
    env = {"PYTHONPATH": os.pathsep.join([str(suite), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code, output = _run_pytest(suite, names, workers, work / "records", env)
    records = _read_records(work / "records")

    baseline_records = None
    if baseline:
        original = work / "baseline"
        original.mkdir()
        (original / "conftest.py").write_text(BASELINE_CONFTEST)
        for path in files:
            # Sibling test imports (``from optax._src import alias_test``) keep working unchanged.
            (original / f"{shim.test_module_name(optax_module_name(path))}.py").write_text(path.read_text())
        _run_pytest(original, names, workers, work / "baseline_records", {})
        baseline_records = {k: v for k, v in _read_records(work / "baseline_records").items()}
    return {"records": records, "baseline": baseline_records, "output": output, "returncode": code,
            "files": [optax_module_name(f) for f in files]}


def summarize(result: dict) -> dict:
    records = result["records"]
    baseline = result["baseline"]
    exercised = {k: r for k, r in records.items() if r["used"] or r["missing"]}
    if baseline is not None:
        exercised = {k: r for k, r in exercised.items() if baseline.get(k, {}).get("outcome") != "failed"}
    passed = [k for k, r in exercised.items() if r["outcome"] == "passed"]
    skipped = [k for k, r in exercised.items() if r["outcome"] == "skipped"]
    failed = {k: r for k, r in exercised.items() if r["outcome"] == "failed"}
    missing_names = collections.Counter(name for r in failed.values() for name in r["missing"])
    ran = len(passed) + len(failed)
    return {
        "cases_total": len(records),
        "cases_exercising_gradtx": len(exercised),
        "passed": len(passed),
        "failed": len(failed),
        "skipped": len(skipped),
        "pass_rate": len(passed) / ran if ran else 0.0,
        "failed_for_missing_name": sum(1 for r in failed.values() if r["missing"]),
        "missing_names": dict(missing_names.most_common()),
        "failures": failed,
        "collection_errors": [line for line in result["output"].splitlines() if line.startswith("ERROR ")],
    }


def markdown(summary: dict, files: list[str]) -> str:
    lines = [
        "# Optax's test suite run against gradtx",
        "",
        f"Files: {len(files)}. Cases: {summary['cases_total']}, of which {summary['cases_exercising_gradtx']} "
        f"exercise gradtx: {summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped "
        f"(pass rate {100 * summary['pass_rate']:.1f}%; "
        f"{summary['failed_for_missing_name']} failures are missing names).",
        "",
    ]
    if summary["missing_names"]:
        lines += ["## Missing names", ""] + [f"- `{n}` ({c} cases)" for n, c in summary["missing_names"].items()] + [""]
    if summary["collection_errors"]:
        lines += ["## Collection errors", ""] + [f"- {e}" for e in summary["collection_errors"]] + [""]
    lines += ["## Failures", ""]
    lines += [f"- `{k}`: {r['message']}" for k, r in sorted(summary["failures"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=[], help="run only test files whose path contains a word")
    parser.add_argument("--contrib", action="store_true", help="include optax.contrib's tests")
    parser.add_argument("--baseline", action="store_true", help="leave out cases that fail with Optax itself")
    parser.add_argument("-n", "--workers", type=int, default=2)
    parser.add_argument("--report", type=pathlib.Path, help="write a Markdown report here")
    parser.add_argument("--json", type=pathlib.Path, help="write the per-case records here")
    args = parser.parse_args(argv)
    files = optax_test_files(args.only, args.contrib or any("contrib" in w for w in args.only))
    result = run(files, args.workers, args.baseline)
    summary = summarize(result)
    report = markdown(summary, result["files"])
    if args.report:
        args.report.write_text(report)
    if args.json:
        args.json.write_text(json.dumps({"summary": {k: v for k, v in summary.items() if k != "failures"},
                                         "records": result["records"]}, indent=1))
    print(report if len(report) < 20000 else report[:20000] + "\n...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
