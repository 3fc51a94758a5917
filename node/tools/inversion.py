"""Update inversion: reconstructing a member's training inputs from the update it published.

In a plain or sealed task every member's update is public once revealed (it is in the store, its
CID on chain). This module measures what an observer recovers from one such update.

**Analytic attack on a fully connected first layer** (Phong et al., "Privacy-Preserving Deep
Learning via Additively Homomorphic Encryption", IEEE TIFS 2018 / ATIS 2017, Section 3; worked
out for federated learning by Fowl et al., "Robbing the Fed", ICLR 2022, and Boenisch et al.,
"When the Curious Abandon Honesty", EuroS&P 2023): for a first layer ``y = W x + b`` the
gradient of one example's loss is ``dL/dW_i = (dL/db_i) x`` for every neuron ``i``. Summed over
the examples of a batch, and over the steps of local training, the update of row ``i`` is
``ΔW_i = Σ_t c_{i,t} x_t`` and that of its bias ``Δb_i = Σ_t c_{i,t}``, with the same scalar
weights ``c`` (learning rate, momentum and the backpropagated error). So ``ΔW_i / Δb_i`` is a
weighted average of the inputs that reached neuron ``i``, and exactly the input when a single
example did. A member's update here is several epochs of minibatch SGD with momentum, so most rows
are blends; how much of a training example survives is what ``reconstruction_metrics`` measures.
Rows whose bias barely moved (``|Δb_i|`` near 0: a dead neuron, or weights that cancel) are
skipped, and the ``k`` rows with the largest ``|Δb_i|`` are kept.

Quality against the member's actual training set:

* **PSNR** of each reconstruction to its nearest training example, with the data's own range
  as the peak: ``10 log10(range^2 / MSE)``.
* **Nearest-neighbour match rate**: the share of reconstructions whose nearest neighbour among
  the member's training examples and an equally large set of non-members of the same
  distribution is a training example; 0.5 is chance, 1.0 means every reconstruction singles out a
  training example.
* **Distinct members recovered**: training examples that are the nearest neighbour of some
  reconstruction at a PSNR of at least the threshold (20 dB: an RMSE of a tenth of the range);
  the same count of non-members is the false-alarm baseline.

``invert_artifact`` takes any update artifact's bytes: float32 deltas as published today, or
int64 tensors (fixed point ``q * 2**-28``, as a masked update under secure aggregation is
published), decoded by the artifact reader, never unpickled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ArtifactInvalid, ConfigError

__all__ = ["Inversion", "update_tensors", "first_layer", "analytic_inversion", "invert_artifact", "gradient_matching", "psnr", "nearest",
           "nn_match_rate", "balanced", "reconstruction_metrics", "METRIC_KEYS"]

PSNR_THRESHOLD = 20.0  # dB: an RMSE of a tenth of the data's range
METRIC_KEYS = ["psnr_mean", "psnr_median", "nn_match", "distinct", "distinct_nonmembers", "reconstructions", "members",
               "nonmembers"]


@dataclass(frozen=True)
class Inversion:
    """Reconstructions (k x features, model-input space, flattened), the first-layer neuron each
    came from, and that neuron's bias update."""

    x: np.ndarray
    neurons: np.ndarray
    bias: np.ndarray


# ---------------------------------------------------------------------------- the attack
def update_tensors(data: bytes, *, max_bytes: int) -> dict[str, np.ndarray]:
    """An update artifact's tensors as float64: float32 as is, int64 as fixed point
    (``fixedpoint.dequantize``). Decoded by the artifact reader; nothing is unpickled."""
    import torch

    from ..protocol.artifact import decode
    from ..protocol.fixedpoint import dequantize

    art = decode(data, max_bytes=max_bytes)
    out = {}
    for name, t in art.tensors.items():
        if t.dtype == torch.int64:
            t = dequantize(t)
        elif t.dtype != torch.float32:
            raise ArtifactInvalid(f"{name}: dtype {t.dtype}, an update holds float32 or int64 tensors")
        out[name] = t.numpy().astype(np.float64)
    return out


def first_layer(spec) -> tuple[str, str, int]:
    """(weight name, bias name, input features) of the model's first layer, which must be fully
    connected: its first parameter a 2-D weight over all (flattened) inputs, then its bias."""
    from ..ml.models import build_model

    params = list(build_model(spec).named_parameters())
    features = math.prod(spec.inputs) if isinstance(spec.inputs, tuple) else int(spec.inputs)
    if len(params) >= 2:
        (wn, w), (bn, b) = params[0], params[1]
        if w.dim() == 2 and w.shape[1] == features and bn.endswith("bias") and tuple(b.shape) == (w.shape[0],):
            return wn, bn, features
    raise ConfigError(f"the analytic inversion needs a fully connected first layer; model {spec.arch!r} starts with "
                      f"{params[0][0] if params else 'nothing'} {tuple(params[0][1].shape) if params else ''}")


def analytic_inversion(dw: np.ndarray, db: np.ndarray, *, k: int = 64, floor: float = 1e-6) -> Inversion:
    """Phong et al.'s observation: row ``i`` of the weight update over its bias update,
    ``ΔW_i / Δb_i``, for the ``k`` neurons of largest ``|Δb_i|``. Neurons with ``|Δb_i|`` at
    most ``floor`` times the largest (or exactly 0) carry no usable ratio and are skipped."""
    dw, db = np.asarray(dw, dtype=np.float64), np.asarray(db, dtype=np.float64).ravel()
    if dw.ndim != 2 or dw.shape[0] != db.size:
        raise ValueError(f"weight update {dw.shape} and bias update {db.shape} do not form a layer")
    if k < 1:
        raise ValueError("k must be at least 1")
    mag = np.abs(db)
    top = float(mag.max()) if mag.size else 0.0
    usable = np.flatnonzero((mag > 0) & (mag > floor * top) & np.isfinite(mag) & np.isfinite(dw).all(axis=1))
    order = usable[np.argsort(-mag[usable], kind="stable")][:k]
    return Inversion(dw[order] / db[order, None], order, db[order])


def invert_artifact(data: bytes, spec, *, k: int = 64, max_bytes: int = 1 << 30, clip: tuple[float, float] | None = None) -> Inversion:
    """The analytic attack on one update artifact's bytes (float32 deltas or int64 fixed point).
    ``clip``: the data's public range (lo, hi); reconstructions are clipped into it."""
    tensors = update_tensors(data, max_bytes=max_bytes)
    wn, bn, _ = first_layer(spec)
    if wn not in tensors or bn not in tensors:
        raise ArtifactInvalid(f"the update has no first layer {wn}/{bn} (it holds {sorted(tensors)[:6]})")
    inv = analytic_inversion(tensors[wn], tensors[bn], k=k)
    if clip is not None:
        inv = Inversion(np.clip(inv.x, clip[0], clip[1]), inv.neurons, inv.bias)
    return inv


def gradient_matching(spec, base: dict, update: dict[str, np.ndarray], *, batch: int = 8, iterations: int = 200,
                      lr: float = 0.1, seed: int = 0, clip: tuple[float, float] | None = None) -> np.ndarray:
    """Gradient matching (Zhu et al., "Deep Leakage from Gradients", NeurIPS 2019), with the
    cosine distance of Geiping et al. ("Inverting Gradients", NeurIPS 2020) so that the unknown
    learning rate, momentum and step count do not matter: ``batch`` dummy inputs and soft labels
    are optimized (Adam) until the gradient of their loss at the round's ``base`` model points
    along ``-update``. It reads the update as one virtual step, so a many-step update is matched
    only roughly. Returns the dummy inputs, flattened (``batch`` x features)."""
    import torch

    from ..ml.models import build_model

    gen = torch.Generator().manual_seed(seed)
    model = build_model(spec)
    model.load_state_dict(base)
    model.eval()
    named = [(n, p) for n, p in model.named_parameters()]
    params = [p for _, p in named]
    target = [-torch.as_tensor(np.asarray(update[n]), dtype=torch.float64) for n, _ in named]
    t_norm = torch.sqrt(sum((t * t).sum() for t in target))
    if not t_norm > 0:
        raise ValueError("the update is zero: nothing to match")
    shape = (batch, *spec.inputs) if isinstance(spec.inputs, tuple) else (batch, int(spec.inputs))
    lo, hi = clip if clip is not None else (0.0, 1.0)
    x = (lo + (hi - lo) * torch.rand(shape, generator=gen)).requires_grad_(True)
    labels = torch.zeros(batch, spec.classes, requires_grad=True)
    opt = torch.optim.Adam([x, labels], lr=lr * (hi - lo))
    for _ in range(iterations):
        opt.zero_grad()
        out = model(x)
        loss = -(torch.softmax(labels, 1) * torch.log_softmax(out, 1)).sum(1).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g.double() * t).sum() for g, t in zip(grads, target))
        g_norm = torch.sqrt(sum((g.double() * g.double()).sum() for g in grads)) + 1e-30
        (1 - dot / (g_norm * t_norm)).backward()
        opt.step()
        if clip is not None:
            with torch.no_grad():
                x.clamp_(lo, hi)
    return x.detach().double().numpy().reshape(batch, -1)


# ---------------------------------------------------------------------------- metrics (pure NumPy)
def _rows(a: np.ndarray) -> np.ndarray:
    """``a`` as float64 rows, one per example (images flattened)."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:]))) if a.ndim != 2 else a


def psnr(x: np.ndarray, ref: np.ndarray, data_range: float) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each row of ``x`` against the same row of ``ref``,
    ``10 log10(data_range^2 / MSE)``; inf where they are equal."""
    x, ref = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(ref, dtype=np.float64))
    if x.shape != ref.shape:
        raise ValueError(f"PSNR of {x.shape} against {ref.shape}")
    if not data_range > 0:
        raise ValueError("the data range must be positive")
    mse = np.mean((x - ref) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def nearest(x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Index of each row of ``x``'s nearest row of ``candidates`` (Euclidean; ties: the first)."""
    x, c = np.atleast_2d(np.asarray(x, dtype=np.float64)), _rows(candidates)
    if x.shape[1] != c.shape[1] or len(c) == 0:
        raise ValueError(f"nearest neighbours of {x.shape} among {c.shape}")
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), 256):
        d = ((x[s : s + 256, None, :] - c[None, :, :]) ** 2).sum(axis=2)
        out[s : s + 256] = np.argmin(d, axis=1)
    return out


def nn_match_rate(x: np.ndarray, members: np.ndarray, nonmembers: np.ndarray) -> float:
    """Share of rows of ``x`` whose nearest neighbour in ``members`` ∪ ``nonmembers`` is a member
    (chance: ``|members| / (|members| + |nonmembers|)``, 0.5 for equal sets)."""
    if len(x) == 0:
        return float("nan")
    idx = nearest(x, np.concatenate([_rows(members), _rows(nonmembers)]))
    return float(np.mean(idx < len(members)))


def balanced(members: np.ndarray, nonmembers: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both sets cut to the smaller size by a seeded random draw, so the match rate's chance is 0.5."""
    n = min(len(members), len(nonmembers))
    rng = np.random.default_rng(seed)
    pick = lambda a: a if len(a) == n else a[np.sort(rng.permutation(len(a))[:n])]  # noqa: E731
    return pick(members), pick(nonmembers)


def reconstruction_metrics(x: np.ndarray, members: np.ndarray, nonmembers: np.ndarray, *, data_range: float | None = None,
                           threshold: float = PSNR_THRESHOLD) -> dict:
    """How well the reconstructions ``x`` recover the member's training examples ``members``,
    against non-members ``nonmembers`` of the same distribution (all flattened to rows). The
    data range defaults to that of members and non-members together."""
    x, m, n = _rows(x), _rows(members), _rows(nonmembers)
    if data_range is None:
        both = np.concatenate([m, n])
        data_range = float(both.max() - both.min()) or 1.0
    base = {"reconstructions": int(len(x)), "members": int(len(m)), "nonmembers": int(len(n))}
    if len(x) == 0:
        return base | {"psnr_mean": float("nan"), "psnr_median": float("nan"), "nn_match": float("nan"), "distinct": 0,
                       "distinct_nonmembers": 0}
    to_member = psnr(x, m[nearest(x, m)], data_range)
    union = nearest(x, np.concatenate([m, n]))  # indices >= len(m) are non-members
    is_member = union < len(m)
    cand = np.concatenate([m, n])
    close = psnr(x, cand[union], data_range) >= threshold
    finite = np.where(np.isfinite(to_member), to_member, 100.0)  # an exact copy counts as 100 dB in the mean
    return base | {"psnr_mean": float(finite.mean()), "psnr_median": float(np.median(finite)), "nn_match": float(is_member.mean()),
                   "distinct": int(np.unique(union[is_member & close]).size),
                   "distinct_nonmembers": int(np.unique(union[~is_member & close]).size)}
