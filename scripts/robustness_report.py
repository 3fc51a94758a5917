"""Summarize one or more `fedchain experiment robustness` results.json files as Markdown.

    python scripts/robustness_report.py runs/robustness/results.json [more.json ...]
    python scripts/robustness_report.py --reputation runs/robustness/results.json   # per rule: accuracy and reputation

For each dataset and attack at each malicious fraction: the best rule and its final accuracy
against the best attack-free run, plain FedAvg's accuracy, the backdoor success rate, and the
first round by which every malicious peer's reputation is below every honest peer's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from fedchain.node.tools.experiment import REPUTATION_HEADERS, SUMMARY_HEADERS, reputation_summary, robustness_summary


def _markdown(headers: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + " --- |" * len(headers))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(args: list[str]) -> int:
    if not args or "-h" in args or "--help" in args:
        print(__doc__.strip())
        return 0 if args else 1
    reputation = "--reputation" in args
    try:
        results = [r for p in args if p != "--reputation" for r in json.loads(Path(p).read_text())]
    except (OSError, ValueError) as exc:
        print(f"error: cannot read results: {exc}", file=sys.stderr)
        return 1
    if reputation:
        _markdown(REPUTATION_HEADERS, reputation_summary(results))
    else:
        _markdown(SUMMARY_HEADERS, robustness_summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
