"""Long coverage-guided fuzzing runs (atheris) of the server's doors and the SDK state file.

``python -m power_bench.fuzz [--seconds S] [--harness NAME]... [--json FILE]`` runs each
harness of ``tests/fuzz/fuzzing.py`` for S seconds (default 300) from its seed corpus (in a
temporary copy) and reports, per harness: executions, executions per second, coverage
(libFuzzer's ``cov``: instrumented edges reached, and ``ft``: features), the corpus it
grew, and crashes (inputs saved in the run's directory; each must be 0). Run it under the
benchmark lock (``flock /tmp/pushsim-bench.lock ...``): it keeps a core busy. Figures:
docs/reliability.md.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz"
HARNESSES = ("mqtt", "mqtt5", "http", "validation", "state")
_STATS = re.compile(r"#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s+cov: (\d+) ft: (\d+) "
                    r"corp: (\d+)/(\S+)")


def run_one(name: str, seconds: float, workdir: Path) -> dict[str, Any]:
    """One harness for ``seconds``; its figures."""
    corpus = workdir / name / "corpus"
    shutil.copytree(FUZZ / "corpus" / name, corpus)
    artifacts = workdir / name / "artifacts"
    artifacts.mkdir()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(FUZZ / "fuzzing.py"), name, f"-max_total_time={int(seconds)}",
         f"-artifact_prefix={artifacts}/", "-rss_limit_mb=2000", "-print_final_stats=1",
         str(corpus)],
        capture_output=True, text=True, timeout=seconds + 300, cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.monotonic() - started
    stats = _STATS.findall(done.stderr)
    last = stats[-1] if stats else ("0", "0", "0", "0", "0b")
    executions = int(re.findall(r"Done (\d+) runs", done.stderr)[-1]) \
        if "Done" in done.stderr else int(last[0])
    crashes = sorted(p.name for p in artifacts.iterdir())
    return {"harness": name, "seconds": round(wall, 1), "executions": executions,
            "executions_per_s": round(executions / wall), "coverage_edges": int(last[1]),
            "features": int(last[2]), "corpus_inputs": int(last[3]),
            "seed_inputs": len(list((FUZZ / "corpus" / name).iterdir())),
            "crashes": len(crashes), "crash_files": crashes, "exit_status": done.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m power_bench.fuzz",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--harness", action="append", choices=HARNESSES)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="pushsim-fuzz-") as tmp:
        for name in args.harness or HARNESSES:
            result = run_one(name, args.seconds, Path(tmp))
            results.append(result)
            print(f"{name}: {result['executions']:,} executions "
                  f"({result['executions_per_s']:,}/s), cov {result['coverage_edges']}, "
                  f"ft {result['features']}, corpus {result['seed_inputs']} -> "
                  f"{result['corpus_inputs']}, crashes {result['crashes']}", flush=True)
    report = {"load_average": os.getloadavg(), "results": results}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(r["crashes"] == 0 and r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
