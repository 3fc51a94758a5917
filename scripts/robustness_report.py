"""Summarize one or more `fedchain experiment robustness` results.json files as Markdown.

    python scripts/robustness_report.py runs/robustness/results.json [more.json ...]

For each dataset and attack at each malicious fraction: the best rule and its final accuracy
against the best attack-free run, plain FedAvg's accuracy, the backdoor success rate, and the
first round by which every malicious peer's reputation is below every honest peer's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fedchain.node.tools.experiment import SUMMARY_HEADERS, robustness_summary


def main(paths: list[str]) -> int:
    results = [r for p in paths for r in json.loads(Path(p).read_text())]
    print("| " + " | ".join(SUMMARY_HEADERS) + " |")
    print("|" + " --- |" * len(SUMMARY_HEADERS))
    for row in robustness_summary(results):
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
