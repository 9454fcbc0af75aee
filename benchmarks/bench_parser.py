"""Benchmark of the API's strict JSON parser (common/parsers.py) on the webhook's body, against DRF's JSONParser.

    .venv/bin/python benchmarks/bench_parser.py      # ~10 s, no network

The body is a real Alertmanager notification (events/tests/payloads/01_firing_first.json) and one of 50 alerts
built from it (a large group). Both parsers read the same bytes; the figures are the median microseconds per
parse of REPEAT rounds of LOOPS parses each, baseline first, in the same run.
"""

import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "vmautoscale.settings")

import django  # noqa: E402

django.setup()

from rest_framework.parsers import JSONParser  # noqa: E402

from common.parsers import StrictJSONParser  # noqa: E402

LOOPS = 2000
REPEAT = 7


def microseconds(parser, raw):
    samples = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        for _n in range(LOOPS):
            parser.parse(io.BytesIO(raw), "application/json", {})
        samples.append((time.perf_counter() - start) / LOOPS * 1e6)
    return statistics.median(samples)


def main():
    captured = json.loads((ROOT / "events/tests/payloads/01_firing_first.json").read_text())
    body = captured.get("body", captured)
    large = dict(body, alerts=[dict(body["alerts"][0], fingerprint=f"{n:016x}") for n in range(50)])
    print(f"{'body':<28} {'bytes':>7} {'DRF JSONParser':>15} {'StrictJSONParser':>17} {'ratio':>6}")
    for name, value in (("one alert (captured)", body), ("50 alerts", large)):
        raw = json.dumps(value).encode()
        baseline = microseconds(JSONParser(), raw)
        strict = microseconds(StrictJSONParser(), raw)
        print(f"{name:<28} {len(raw):>7} {baseline:>12.1f} us {strict:>14.1f} us {strict / baseline:>6.2f}")


if __name__ == "__main__":
    main()
