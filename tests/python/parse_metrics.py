#!/usr/bin/env python3
"""Parses a `/_vespa/metrics` text with the official Prometheus client's parsers
(prometheus-client, pinned in requirements.txt) and prints its samples as one JSON line,
then ALL PASSED. Any text the parser rejects fails the script.

Env: VESPA_METRICS_FILE (the text), VESPA_METRICS_FORMAT (`openmetrics`: the strict
OpenMetrics 1.0.0 parser; `prometheus`: the text format 0.0.4 parser)."""
import json
import os

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as prometheus_families

PARSERS = {"openmetrics": openmetrics_families, "prometheus": prometheus_families}


def main():
    with open(os.environ["VESPA_METRICS_FILE"], encoding="utf-8") as f:
        text = f.read()
    parse = PARSERS[os.environ["VESPA_METRICS_FORMAT"]]
    families = [
        {
            "name": family.name,
            "type": family.type,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value}
                for s in family.samples
            ],
        }
        for family in parse(text)
    ]
    print(json.dumps(families))
    print("ALL PASSED")


if __name__ == "__main__":
    main()
