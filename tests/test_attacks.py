"""Every attack, in a small run against a real anvil, is detected (the attacker's reputation falls
below every honest peer's) or neutralized (the model stays as good as without it).

Runs use the experiment engine: a fresh contract per run, the real store, one Peer per member
driven round by round in this process (the same code paths as separate peer processes)."""
import pytest

from fedchain.node.tools.devnet import Devnet
from fedchain.node.tools.experiment import TrialConfig, run_trial

PEERS, ROUNDS = 7, 3  # 30% malicious -> 2 attackers; the 5 honest hold 5/7 > 2/3 of reputation


@pytest.fixture(scope="module")
def net():
    with Devnet(accounts=PEERS + 1) as d:
        yield d


@pytest.fixture(scope="module")
def cache():
    return {}


@pytest.fixture(scope="module")
def baseline(net, cache, tmp_path_factory):
    return run_trial(TrialConfig(rule="multi-krum", peers=PEERS, rounds=ROUNDS), net, tmp_path_factory.mktemp("base"), datasets_cache=cache)


def _run(net, cache, tmp_path, attack, rule="multi-krum", **kw):
    return run_trial(TrialConfig(rule=rule, attack=attack, malicious=0.3, peers=PEERS, rounds=ROUNDS, **kw), net, tmp_path, datasets_cache=cache)


def _detected(res) -> bool:
    last = res["reputation"][-1]
    bad = set(res["malicious_peers"])
    return max(last[i] for i in bad) < min(last[i] for i in range(res["peers"]) if i not in bad)


@pytest.mark.parametrize("attack", ["signflip", "scaling", "noise", "malformed", "collude"])
def test_attacker_is_excluded_and_loses_reputation(net, cache, tmp_path, baseline, attack):
    res = _run(net, cache, tmp_path, attack)
    assert res["malicious_peers"] == [5, 6]
    assert _detected(res), res["reputation"][-1]
    assert res["final_accuracy"] >= baseline["final_accuracy"] - 0.05
    assert res["rounds_finalized"] == ROUNDS


@pytest.mark.parametrize("attack", ["labelflip", "backdoor", "freeride"])
def test_data_poisoning_and_free_riding_do_not_hurt_the_model(net, cache, tmp_path, baseline, attack):
    res = _run(net, cache, tmp_path, attack)
    assert _detected(res) or res["final_accuracy"] >= baseline["final_accuracy"] - 0.05, (res["final_accuracy"], res["reputation"][-1])
    if attack == "backdoor":
        assert res["backdoor_success_rate"] < 0.10


def test_lazy_voter_finds_nothing_to_copy_under_commit_reveal_and_falls_behind(net, cache, tmp_path, monkeypatch):
    from fedchain.node.chain import Phase
    from fedchain.node.peer.pipeline import ABSTAIN
    from fedchain.node.tools import attacks

    calls = []  # (phase when the vote hook ran, whether it found a vote to copy)
    original = attacks.LazyVoter.vote

    def spy(self, ctx, honest):
        choice = original(self, ctx, honest)
        calls.append((ctx.peer.chain.round_state().phase, choice not in (None, ABSTAIN)))
        return choice

    monkeypatch.setattr(attacks.LazyVoter, "vote", spy)
    # fedavg: a lazy voter's own updates are honest; only its votes can tell it apart
    res = _run(net, cache, tmp_path, "lazyvote", rule="fedavg", commit_reveal=True)
    assert res["rounds_finalized"] == ROUNDS
    # While votes can be cast (committed) there is never one to copy. (Peer.reveal consults the
    # vote hook again for a round the peer abstained in, when revealed votes are visible; its
    # reveal of a vote it never committed then reverts, so only the voting phase counts here.)
    while_voting = [found for phase, found in calls if phase is Phase.VOTING]
    assert while_voting and not any(while_voting), calls
    assert _detected(res), res["reputation"][-1]  # abstaining forgoes the agreement reward


@pytest.mark.parametrize("reveal", [20, 0])
def test_adaptive_team_knows_what_the_protocol_lets_it_know(net, cache, tmp_path, monkeypatch, reveal):
    """Sealed updates (the engine's default): every colluder crafts from the same rows, the whole
    team's benign updates of the round plus the previous round's revealed honest ones. Plain: from
    the round's honest updates."""
    import hashlib

    from fedchain.node.tools import attacks

    seen = {}  # (round, colluder) -> (rows, digest of the rows)
    original = attacks._Adaptive._benign_rows

    def spy(self, ctx, keys, own):
        rows = original(self, ctx, keys, own)
        seen[(ctx.round, ctx.peer.address)] = (rows.shape[0], hashlib.sha256(rows.tobytes()).hexdigest())
        return rows

    monkeypatch.setattr(attacks._Adaptive, "_benign_rows", spy)
    res = run_trial(TrialConfig(rule="fedavg", attack="ipm", malicious=0.3, peers=PEERS, rounds=2, update_reveal_blocks=reveal),
                    net, tmp_path, datasets_cache=cache)
    assert res["protocol"] == ("sealed" if reveal else "plain") and res["rounds_finalized"] == 2
    assert res["vote_order"] == "attackers first" and len(seen) == 4
    for r in (1, 2):
        [a, b] = [v for (rr, _), v in seen.items() if rr == r]
        assert a == b  # both colluders crafted from the same rows
        assert a[0] == (5 if not reveal else 2 if r == 1 else 2 + 5)
