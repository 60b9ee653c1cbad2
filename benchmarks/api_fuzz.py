"""API robustness: schemathesis generates requests from the service's own OpenAPI schema and sends them to a live
`dermlens serve`; the figure is the number of requests tried and how many got a 5xx (target: none).

    pip install "schemathesis>=4"                     # not a dependency of dermlens itself
    python benchmarks/api_fuzz.py                     # starts `dermlens serve` (bundled model) on a free port
    python benchmarks/api_fuzz.py --max-examples 200 --model runs/x/model

Checks run: ``not_a_server_error`` (no 5xx), ``status_code_conformance`` and ``content_type_conformance`` (answers
match what the schema declares) and ``response_schema_conformance``. Every operation is tried with generated
examples (positive and negative: wrong types, missing fields, odd multipart bodies). Prints schemathesis's summary,
then one line: requests tried, 5xx seen.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from load import free_port, start_server  # the same server start-up as the load run

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="Model folder for the server; default the bundled model.")
    parser.add_argument("--max-examples", type=int, default=100, help="Generated examples per operation and phase.")
    parser.add_argument("--max-concurrency", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=8)
    args = parser.parse_args(argv)
    st = shutil.which("st") or str(Path(sys.executable).with_name("st"))
    if not Path(st).exists():
        raise SystemExit('schemathesis is not installed: pip install "schemathesis>=4"')
    with tempfile.TemporaryDirectory(prefix="dermlens-api-fuzz-") as scratch:
        log = open(Path(scratch) / "server.log", "w")
        port = free_port()
        process = start_server(args.model, port, args, log)
        report = Path(scratch) / "events.ndjson"
        try:
            run = subprocess.run(
                [st, "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", CHECKS, "--max-examples",
                 str(args.max_examples), "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color"],
                text=True, capture_output=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
        print(run.stdout[-6000:])
        requests = server_errors = 0
        for line in report.read_text().splitlines() if report.is_file() else []:
            for status in _statuses(json.loads(line)):
                requests += 1
                server_errors += status >= 500
        print(f"requests tried: {requests}; 5xx answers: {server_errors} (target: 0); schemathesis exit code {run.returncode}")
    return 0 if server_errors == 0 else 1


def _statuses(event, found=None):
    """Every HTTP status code recorded anywhere in one ndjson event (the layout differs between versions)."""
    found = [] if found is None else found
    if isinstance(event, dict):
        for key, value in event.items():
            if key == "status_code" and isinstance(value, int):
                found.append(value)
            else:
                _statuses(value, found)
    elif isinstance(event, list):
        for value in event:
            _statuses(value, found)
    return found


if __name__ == "__main__":
    sys.exit(main())
