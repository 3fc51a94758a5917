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


def separated_by(res: dict) -> int | None:
    bad = set(res["malicious_peers"])
    for r, reps in enumerate(res["reputation"], 1):
        if max(reps[i] for i in bad) < min(reps[i] for i in range(res["peers"]) if i not in bad):
            return r
    return None


def main(paths: list[str]) -> int:
    results = [r for p in paths for r in json.loads(Path(p).read_text())]
    print("| dataset | attack | malicious | best rule | best acc | vs no attack | fedavg-plain | multi-krum | backdoor ASR (best rule) | malicious below honest from round (multi-krum) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in sorted({r["dataset"] for r in results}):
        base = max(r["final_accuracy"] for r in results if r["dataset"] == d and r["attack"] == "none")
        print(f"| {d} | none | 0 | {max((r for r in results if r['dataset'] == d and r['attack'] == 'none'), key=lambda r: r['final_accuracy'])['rule']} | {base:.4f} | | | | | |")
        for attack in sorted({r["attack"] for r in results if r["dataset"] == d} - {"none"}):
            for frac in sorted({r["malicious"] for r in results if r["dataset"] == d and r["attack"] == attack}):
                cell = [r for r in results if r["dataset"] == d and r["attack"] == attack and r["malicious"] == frac]
                best = max(cell, key=lambda r: r["final_accuracy"])
                by = {r["rule"]: r for r in cell}
                plain, krum = by.get("fedavg-plain"), by.get("multi-krum")
                asr = best["backdoor_success_rate"]
                sep = separated_by(krum) if krum else None
                cells = [d, attack, f"{frac:.2f}", best["rule"], f"{best['final_accuracy']:.4f}",
                         f"{100 * (best['final_accuracy'] - base):+.1f} pp",
                         f"{plain['final_accuracy']:.4f}" if plain else "-",
                         f"{krum['final_accuracy']:.4f}" if krum else "-",
                         f"{asr:.3f}" if asr is not None else "-",
                         (str(sep) if sep else "never") if krum else "-"]
                print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
