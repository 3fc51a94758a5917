"""`fedchain report`: one self-contained HTML page about a deployment, drawn from the chain and
the store alone (the peers' logs only add the last round's federated metric, when given).

Four figures, each a PNG embedded as base64: the federated metric per round (members' holdouts),
reputation per member per round (``ReputationChanged`` events), participation per round
(submitted, included, voted, out of the members) and gas per round (the receipts of the
transactions behind the round's ``UpdateSubmitted``, ``VoteCommitted`` and ``VoteCast`` events).
"""
from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import errors as E
from ..chain import ChainClient
from ..ledger.history import RoundRecord
from ..protocol.evaluation import headline

__all__ = ["ReportData", "collect_report", "render_report", "write_report", "reputation_by_round", "gas_by_round"]

_EVENTS_WITH_GAS = ("UpdateSubmitted", "VoteCommitted", "VoteCast")


@dataclass
class ReportData:
    contract: str
    chain_id: int
    task_name: str
    kind: str
    members: list[str]
    history: list[RoundRecord]
    metrics: dict  # round -> RoundMetric
    reputation: dict[str, list[int]]  # member -> reputation after each round 0..R (0: at deployment)
    gas: dict[int, int]  # round -> gas of its submissions and votes
    notes: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> list[int]:
        return [r.round for r in self.history]


def reputation_by_round(chain: ChainClient, members: list[str], rounds: list[int], from_block: int) -> dict[str, list[int]]:
    """Each member's reputation at deployment and after each round's settlement, from the
    ``MemberRegistered`` and ``ReputationChanged`` events (a change is attributed to the round it settles)."""
    start = {ev.args.peer.lower(): int(ev.args.reputation) for ev in chain.events("MemberRegistered", from_block=from_block)}
    changes: dict[str, list[tuple[int, int, int, int]]] = {}
    for ev in chain.events("ReputationChanged", from_block=from_block):
        changes.setdefault(ev.args.peer.lower(), []).append((int(ev.args.round), ev.blockNumber, ev.logIndex, int(ev.args.current)))
    out = {}
    for m in members:
        key = m.lower()
        rep = start.get(key, 0)
        evs = sorted(changes.get(key, []))
        series, i = [rep], 0
        for r in rounds:
            while i < len(evs) and evs[i][0] <= r:
                rep = evs[i][3]
                i += 1
            series.append(rep)
        out[m] = series
    return out


def gas_by_round(chain: ChainClient, from_block: int) -> dict[int, int]:
    """Gas used per round by the transactions that emitted its submission and vote events."""
    txs: dict[int, set[bytes]] = {}
    for name in _EVENTS_WITH_GAS:
        for ev in chain.events(name, from_block=from_block):
            txs.setdefault(int(ev.args.round), set()).add(bytes(ev.transactionHash))
    return {r: sum(int(chain.w3.eth.get_transaction_receipt(h)["gasUsed"]) for h in sorted(hashes)) for r, hashes in sorted(txs.items())}


def collect_report(deployment: str, rpc: str | None = None, store: str | None = None, logs: str | None = None) -> ReportData:
    from .operations import federated_view, open_deployment

    dep, chain = open_deployment(deployment, rpc)
    view = federated_view(dep, chain, store, logs)
    members = chain.members()
    rounds = [r.round for r in view.history]
    notes = [view.note] if view.note else []
    if not view.metrics and not view.note:
        notes.append("No member published an evaluation: their shards have no holdout "
                     "(make them with `fedchain data split --holdout` or `data import --holdout`).")
    last_final = max((r.round for r in view.history if r.status == "finalized"), default=0)
    if last_final and last_final not in view.metrics and logs is None:
        notes.append(f"Round {last_final}'s model has no later update to carry its evaluation; pass the peers' logs "
                     "(--logs) to include the evaluations they logged.")
    return ReportData(dep.contract, dep.chain_id, str(dep.task.get("name", "?")), view.kind, members, view.history,
                      view.metrics, reputation_by_round(chain, members, rounds, dep.deploy_block),
                      gas_by_round(chain, dep.deploy_block), notes)


def _figures(data: ReportData) -> dict[str, bytes]:
    """name -> PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = headline(data.kind)
    label = "MSE" if metric == "mse" else "accuracy"
    out = {}

    def save(name, fig, ax, title, ylabel):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[name] = buf.getvalue()

    fig, ax = plt.subplots(figsize=(7, 3.6))
    pts = sorted((r, m.headline) for r, m in data.metrics.items() if m.headline is not None)
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"federated {label}")
        bal = sorted((r, float(m.values["balanced_accuracy"])) for r, m in data.metrics.items() if "balanced_accuracy" in m.values)
        if bal:
            ax.plot([p[0] for p in bal], [p[1] for p in bal], marker="s", linestyle="--", label="balanced accuracy")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no published evaluations", ha="center", va="center", transform=ax.transAxes)
    save("federated_metric", fig, ax, f"Federated {label} on the members' holdouts (round 0: initial model)", label)

    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = [0, *data.rounds]
    for i, (m, series) in enumerate(data.reputation.items()):
        ax.plot(xs, series, marker=".", label=f"{i}: {m[:8]}…")
    if data.reputation:
        ax.legend(fontsize="small", ncol=2)
    save("reputation", fig, ax, "Reputation per member after each round", "reputation")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    rs = data.rounds
    width = 0.27
    ax.bar([r - width for r in rs], [len(h.submissions) for h in data.history], width, label="submitted")
    ax.bar(rs, [h.included_count for h in data.history], width, label="included")
    ax.bar([r + width for r in rs], [len(h.votes) for h in data.history], width, label="voted")
    ax.axhline(len(data.members), color="gray", linestyle=":", label=f"members ({len(data.members)})")
    ax.legend(fontsize="small")
    save("participation", fig, ax, "Participation per round", "members")

    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar(list(data.gas), list(data.gas.values()), color="tab:purple")
    save("gas", fig, ax, "Gas per round (submissions and votes)", "gas")
    return out


_TITLES = {"federated_metric": "Federated metric", "reputation": "Reputation", "participation": "Participation", "gas": "Gas"}


def render_report(data: ReportData, figures: dict[str, bytes]) -> str:
    """The HTML page: a summary table and the figures inline (data: URIs), nothing fetched."""
    esc = html.escape
    metric = headline(data.kind)
    rows = []
    for h in data.history:
        m = data.metrics.get(h.round)
        value = f"{m.headline:.4f} ({m.source}, {len(m.evaluations)} members)" if m and m.headline is not None else "-"
        rows.append(f"<tr><td>{h.round}</td><td>{esc(h.status)}</td><td>{len(h.submissions)}/{len(data.members)}</td>"
                    f"<td>{h.included_count if h.model else '-'}</td><td>{len(h.votes)}</td><td>{esc(value)}</td>"
                    f"<td>{data.gas.get(h.round, 0)}</td><td><code>{esc(h.model or '-')}</code></td></tr>")
    images = "\n".join(
        f'<section><h2>{esc(_TITLES[name])}</h2><img id="fig-{name}" alt="{esc(_TITLES[name])}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}"></section>' for name, png in figures.items())
    notes = "".join(f"<p class=note>{esc(n)}</p>" for n in data.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fedchain report: {esc(data.task_name)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}img{{max-width:100%}}.note{{color:#a60}}</style></head>
<body><h1>fedchain report: {esc(data.task_name)}</h1>
<p>Contract <code>{esc(data.contract)}</code> on chain {data.chain_id}; {len(data.members)} members; generated
{esc(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))} from the chain and the store.</p>{notes}
<table><tr><th>round</th><th>status</th><th>submitted/members</th><th>included</th><th>votes</th>
<th>federated {esc(metric)}</th><th>gas</th><th>model</th></tr>
{''.join(rows)}</table>
{images}
</body></html>
"""


def write_report(deployment: str, output: str, png_dir: str | None = None, rpc: str | None = None,
                 store: str | None = None, logs: str | None = None) -> list[Path]:
    """`fedchain report`: write the HTML page (and, with ``png_dir``, the PNGs); returns the paths written."""
    from .operations import check_writable

    out = check_writable(output)
    pngs = Path(png_dir) if png_dir else None
    if pngs is not None and pngs.exists() and not pngs.is_dir():
        raise E.ConfigError(f"--png {pngs} exists and is not a folder")
    data = collect_report(deployment, rpc, store, logs)
    figures = _figures(data)
    out.write_text(render_report(data, figures))
    written = [out]
    if pngs is not None:
        pngs.mkdir(parents=True, exist_ok=True)
        for name, png in figures.items():
            (pngs / f"{name}.png").write_bytes(png)
            written.append(pngs / f"{name}.png")
    return written
