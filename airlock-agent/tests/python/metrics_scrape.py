"""Scrapes a Prometheus endpoint twice (the Prometheus text format, and
OpenMetrics), parses both with the official Python client's parsers, checks
the naming conventions, and prints one JSON object:

  {"samples": [{"name", "labels", "value"}], "types": {family: type},
   "violations": [text], "openmetrics_families": [name]}

Usage: metrics_scrape.py URL PREFIX   (PREFIX: "airlock" or "airlock_gateway")
"""

import json
import re
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
# Names that measure time or size must say their base unit (Prometheus naming).
MEASURES = ("lag", "duration", "latency", "size", "age", "bytes", "seconds")
BASE_UNITS = ("_seconds", "_bytes")
NOT_BASE = ("milliseconds", "microseconds", "_ms", "minutes", "hours", "kilobytes", "megabytes", "_kb", "_mb", "kib", "mib")
MAX_SERIES = 100


def fetch(url, accept):
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get("Content-Type", ""), response.read().decode("utf-8")


def check(families, prefix):
    violations = []
    for family in families:
        name = family.name
        where = f"{name} ({family.type})"
        if not name.startswith(prefix + "_"):
            violations.append(f"{where}: does not start with {prefix}_")
        if not SNAKE.match(name):
            violations.append(f"{where}: not lower snake_case")
        if not family.documentation.strip():
            violations.append(f"{where}: no HELP text")
        if any(bad in name for bad in NOT_BASE):
            violations.append(f"{where}: not in a base unit")
        measured = any(word in name.split("_") for word in MEASURES)
        if measured and not name.endswith(BASE_UNITS) and not name.endswith("_info"):
            violations.append(f"{where}: measures time or size but does not end in _seconds or _bytes")
        # A histogram's buckets are one series each by `le`; count label sets without it.
        series = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le")) for s in family.samples}
        if len(series) > MAX_SERIES:
            violations.append(f"{where}: {len(series)} label sets (labels of high cardinality?)")
        for sample in family.samples:
            for label in sample.labels:
                if not SNAKE.match(label) and label != "le":
                    violations.append(f"{where}: label {label!r} is not lower snake_case")
            if family.type == "counter" and not sample.name.endswith(("_total", "_created")):
                violations.append(f"{where}: counter sample {sample.name} does not end in _total")
            if family.type != "counter" and sample.name.endswith("_total"):
                violations.append(f"{where}: {sample.name} ends in _total but is not a counter")
            if name.endswith("_info") and sample.value != 1:
                violations.append(f"{where}: an info metric's value is 1, not {sample.value}")
        if family.type == "histogram":
            suffixes = {s.name[len(name):] for s in family.samples}
            if not {"_bucket", "_sum", "_count"} <= suffixes:
                violations.append(f"{where}: a histogram needs _bucket, _sum and _count, has {sorted(suffixes)}")
            if not any(s.labels.get("le") == "+Inf" for s in family.samples):
                violations.append(f"{where}: no le=\"+Inf\" bucket")
        if family.type == "untyped":
            violations.append(f"{where}: no TYPE")
    return violations


def main():
    url, prefix = sys.argv[1], sys.argv[2]
    content_type, text = fetch(url, None)
    violations = []
    if not content_type.startswith("text/plain; version=0.0.4"):
        violations.append(f"the plain scrape's Content-Type is {content_type!r}")
    families = list(text_string_to_metric_families(text))
    violations += check(families, prefix)
    om_type, om_text = fetch(url, OPENMETRICS)
    if not om_type.startswith("application/openmetrics-text"):
        violations.append(f"asked for OpenMetrics, got Content-Type {om_type!r}")
    # The OpenMetrics parser is strict (# EOF, unit and type metadata).
    om = list(openmetrics_families(om_text))
    samples = [{"name": s.name, "labels": s.labels, "value": s.value} for f in families for s in f.samples]
    print(json.dumps({
        "samples": samples,
        "types": {f.name: f.type for f in families},
        "violations": violations,
        "openmetrics_families": sorted(f.name for f in om),
    }))


if __name__ == "__main__":
    main()
