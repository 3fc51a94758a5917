"""The pinned-determinism fixtures: update artifacts, and the aggregate CID of every rule over them.

    python scripts/make_determinism_fixtures.py             # rewrite tests/data/determinism/
    python scripts/make_determinism_fixtures.py --digests   # print the CIDs the fixtures give here

Inputs come from NumPy's seeded Generator, never torch's: torch's samplers take different code
paths on different CPU capabilities, NumPy's give the same numbers everywhere. Seven updates of a
4288-parameter model (plus an int64 BatchNorm-style counter) are stored once, at unit scale; the
three cases multiply their float tensors by a power of two (exact, with ``np.ldexp``) so that the
values need each of the exact-arithmetic plans in ``aggregation/_exact.py`` (direct, one-sided,
two-sided, the last one also clamped at the fixed-point limit). Each aggregate is computed the
way a peer computes it (``aggregate_round``) and identified by its Kubo CID, as on chain.

Regenerate only when an intended change alters the aggregates, or to pin a rule just added to
``RULES``; ``tests/test_pinned_determinism.py`` then checks the new CIDs on every CPU
capability and thread count it can run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "determinism"
MEMBERS = 7
SHAPES = {"layer.weight": (64, 64), "layer.bias": (64,), "head.weight": (2, 64)}  # 4288 floats: > one 4096-column block
COUNTER = "norm.num_batches_tracked"
CASES = {"direct": -13, "one-sided": -7, "two-sided": 11}  # power-of-two scale of the float tensors
SAMPLE_CAP = 50
# Rules beyond their defaults: (key suffix, rule, params).
VARIANTS = [("clip_norm=0.05", "fedavg", {"clip_norm": 0.05}), ("beta=0.4", "trimmed-mean", {"beta": 0.4}),
            ("f=1,m=4", "multi-krum", {"num_malicious_clients": 1, "num_clients_to_keep": 4}),
            ("exclude_opposed=false", "fedavg", {"exclude_opposed": False}), ("outlier_ratio=1.5", "multi-krum", {"outlier_ratio": 1.5})]


def _generate() -> tuple[dict[str, np.ndarray], list[tuple[dict[str, np.ndarray], int, int]]]:
    """The base model and (delta, samples, reputation) per member, at unit scale."""
    rng = np.random.default_rng(20261130)
    base = {k: rng.normal(0, 1, s).astype(np.float32) for k, s in SHAPES.items()}
    base[COUNTER] = np.array(12, dtype=np.int64)
    direction = {k: rng.normal(0, 1, s) for k, s in SHAPES.items()}
    updates = []
    for member in range(MEMBERS):
        delta = {k: (v + rng.normal(0, 0.5, v.shape)).astype(np.float32) for k, v in direction.items()}
        if member == 1:
            delta = {k: -3 * v for k, v in delta.items()}  # sign-flipped and scaled
        if member == 4:
            delta = {k: np.full(v.shape, 50, dtype=np.float32) for k, v in delta.items()}  # far outlier
        if member == 6:  # a free-rider: member 2's update, barely perturbed (dropped as a copy)
            delta = {k: (v * (1 + 2.0**-14)).astype(np.float32) for k, v in updates[2][0].items() if k != COUNTER}
        delta[COUNTER] = np.array([3, 5, 4, 6, 100, 4, 5][member], dtype=np.int64)
        updates.append((delta, 20 + 7 * member, 1000 + 150 * (member % 3)))
    return base, updates


def write_fixtures() -> None:
    import torch

    from fedchain.node.protocol.artifact import encode
    from fedchain.node.protocol.cid import cid_of_bytes

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.safetensors"):
        old.unlink()
    base, updates = _generate()
    base_bytes = encode({k: torch.from_numpy(v) for k, v in base.items()}, {"kind": "model", "round": 0})
    (OUT / "base.safetensors").write_bytes(base_bytes)
    base_cid = cid_of_bytes(base_bytes)
    manifest = {"base": {"file": "base.safetensors", "cid": base_cid}, "sample_cap": SAMPLE_CAP, "updates": []}
    for member, (delta, samples, reputation) in enumerate(updates):
        data = encode({k: torch.from_numpy(v) for k, v in delta.items()},
                      {"kind": "update", "task": "determinism", "round": 1, "base": base_cid, "samples": samples,
                       "peer": f"member-{member}"})
        name = f"update-{member}.safetensors"
        (OUT / name).write_bytes(data)
        manifest["updates"].append({"file": name, "cid": cid_of_bytes(data), "member": member, "reputation": reputation,
                                    "position": member})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    computed = compute()
    expected = {
        "about": "Aggregate artifact CIDs over the updates in manifest.json; written by "
                 "scripts/make_determinism_fixtures.py, checked by tests/test_pinned_determinism.py.",
        "torch": torch.__version__,
        "cases": {name: {"scale": f"2**{exp}", "plan": computed["plans"][name]} for name, exp in CASES.items()},
        "aggregates": computed["aggregates"],
    }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def compute() -> dict:
    """Aggregate CIDs of every rule (and variant) in every case, from the committed fixtures."""
    import torch

    from fedchain.node.aggregation import RULES, Contribution, _exact, aggregate_round, make_rule
    from fedchain.node.protocol.artifact import decode
    from fedchain.node.protocol.cid import cid_of_bytes
    from fedchain.node.protocol.fixedpoint import quantize, state_to_vector
    from fedchain.node.protocol.round import RoundInputs
    from fedchain.node.protocol.task import ModelSpec, Task

    manifest = json.loads((OUT / "manifest.json").read_text())

    def read(entry: dict) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        data = (OUT / entry["file"]).read_bytes()
        if cid_of_bytes(data) != entry["cid"]:
            raise SystemExit(f"{entry['file']} does not match its CID in manifest.json: the fixture is damaged")
        art = decode(data, max_bytes=1 << 24)
        return {k: v.numpy() for k, v in art.tensors.items()}, art.metadata

    def scaled(arrays: dict[str, np.ndarray], exp: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ldexp(v, exp).astype(np.float32) if v.dtype == np.float32 else v.copy())
                for k, v in arrays.items()}

    base_arrays, _ = read(manifest["base"])
    updates = [read(u) for u in manifest["updates"]]
    runs = [(name, name, {}) for name in RULES] + [(f"{rule}[{suffix}]", rule, params) for suffix, rule, params in VARIANTS]
    out = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), "plans": {},
           "aggregates": {}}
    for case, exp in CASES.items():
        base = scaled(base_arrays, 0)
        contributions = [Contribution(u["member"], u["cid"], scaled(arrays, exp), samples=int(meta["samples"]),
                                      reputation=u["reputation"], position=u["position"])
                         for u, (arrays, meta) in zip(manifest["updates"], updates)][::-1]  # not in member order
        rows = torch.stack([quantize(state_to_vector({k: v for k, v in c.delta.items() if v.is_floating_point()}))
                            for c in contributions])
        plan = _exact._Plan.of(_exact._max_abs(rows), _exact._max_abs(rows))
        out["plans"][case] = [len(plan.left), len(plan.right)]
        for key, rule, params in runs:
            task = Task(name="determinism", dataset="synthetic", model=ModelSpec(64, 2), rule=rule,
                        rule_params=tuple(sorted(params.items())), sample_cap=manifest["sample_cap"])
            artifact, bitmap, _ = aggregate_round(base, task, "determinism", RoundInputs(1, manifest["base"]["cid"], contributions))
            out["aggregates"][f"{case}/{key}"] = {"cid": cid_of_bytes(artifact), "included": bitmap}
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", action="store_true", help="print the CIDs computed here from the committed fixtures")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.digests:
        print(json.dumps(compute(), sort_keys=True))
    else:
        write_fixtures()
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
