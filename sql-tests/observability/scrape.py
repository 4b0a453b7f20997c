"""Scrapes a Rivulet /metrics endpoint and parses it with prometheus-client's OpenMetrics parser
(strict: a malformed exposition raises), printing the samples as JSON for the Rust test:
{"families": {name: type}, "samples": [[sample name, {label: value}, value], ...]}.

Usage: scrape.py URL
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> None:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
        kind = response.headers.get("Content-Type", "")
        if not kind.startswith("application/openmetrics-text"):
            raise SystemExit(f"unexpected content type {kind!r}")
        text = response.read().decode("utf-8")
    families = {}
    samples = []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples.append([s.name, s.labels, s.value])
    json.dump({"families": families, "samples": samples}, sys.stdout)


if __name__ == "__main__":
    main()
