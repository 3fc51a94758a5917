"""Sample-level differential privacy in an update's metadata: what a peer of a DP task publishes
about the privacy it has spent, in integers, and the check every validator applies.

A task with ``train.dp`` (``PrivacyConfig``) has every peer train with DP-SGD. Each update then
carries, as canonical decimal strings:

====================  ===========================================================================
``dp_epsilon_micro``  the author's cumulative epsilon at the task's delta after the training that
                      produced this update (all its rounds so far), x 10**6, rounded up; at most
                      the task's budget when it sets one, else at most 10**12
``dp_noise_micro``    the noise multiplier it trained with, x 10**6, rounded half up, 1 .. 10**9;
                      exactly the task's when the task fixes one
====================  ===========================================================================

An update of a DP task without both fields, an update of a plain task with any ``dp_*`` field, an
unknown ``dp_*`` field, a value that is not a canonical decimal integer, or one out of range makes
the artifact malformed: the update is excluded like any other malformed update.

What this does and does not prove: the numbers are the author's own account. They let everyone
see that each member claims to stay within the budget, and a member claiming to be over it is
excluded; nobody can verify from the update that the noise was really added. Sample-level DP is
a promise each organization makes to its own data subjects, enforced by its own node.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ArtifactInvalid
from .evaluation import _int  # the same canonical, bounded decimal fields as the eval_* ones
from .task import PrivacyConfig

__all__ = ["SCALE", "MAX_EPSILON_MICRO", "MAX_NOISE_MICRO", "DP_KEYS", "PrivacySpent", "privacy_metadata",
           "parse_privacy", "epsilon_to_micro", "noise_to_micro", "budget_micro"]

SCALE = 10**6
MAX_EPSILON_MICRO = 10**12
MAX_NOISE_MICRO = 10**9
DP_KEYS = frozenset({"dp_epsilon_micro", "dp_noise_micro"})


@dataclass(frozen=True)
class PrivacySpent:
    """One update's privacy account in the published integer form."""

    epsilon_micro: int  # cumulative epsilon x 10**6, rounded up
    noise_micro: int  # noise multiplier x 10**6

    @property
    def epsilon(self) -> float:
        return self.epsilon_micro / SCALE

    @property
    def noise_multiplier(self) -> float:
        return self.noise_micro / SCALE


def epsilon_to_micro(epsilon: float) -> int:
    """Epsilon x 10**6 rounded up (a reported budget is never smaller than the one spent)."""
    if not (epsilon >= 0):
        raise ValueError(f"not an epsilon: {epsilon!r}")
    return MAX_EPSILON_MICRO if not math.isfinite(epsilon) else min(math.ceil(epsilon * SCALE - 1e-6), MAX_EPSILON_MICRO)


def noise_to_micro(noise: float) -> int:
    if not (math.isfinite(noise) and noise > 0):
        raise ValueError(f"not a noise multiplier: {noise!r}")
    return max(1, min(math.floor(noise * SCALE + 0.5), MAX_NOISE_MICRO))


def budget_micro(dp: PrivacyConfig) -> int:
    """The largest ``dp_epsilon_micro`` a task admits: its budget rounded up, or the field's cap."""
    return MAX_EPSILON_MICRO if dp.epsilon is None else min(math.ceil(dp.epsilon * SCALE - 1e-6), MAX_EPSILON_MICRO)


def privacy_metadata(spent: PrivacySpent) -> dict[str, str]:
    return {"dp_epsilon_micro": str(int(spent.epsilon_micro)), "dp_noise_micro": str(int(spent.noise_micro))}


def parse_privacy(meta: dict, dp: PrivacyConfig | None) -> PrivacySpent | None:
    """The privacy account an update's metadata carries (None in a task without DP);
    ``ArtifactInvalid`` when the ``dp_*`` fields do not fit the task (see the module's table)."""
    present = {k for k in meta if isinstance(k, str) and k.startswith("dp_")}
    if dp is None:
        if present:
            raise ArtifactInvalid(f"metadata has DP field {sorted(present)[0][:40]!r} in a task without DP")
        return None
    unknown = present - DP_KEYS
    if unknown:
        raise ArtifactInvalid(f"metadata has unknown DP field {sorted(unknown)[0][:40]!r}")
    if present != DP_KEYS:
        raise ArtifactInvalid(f"an update of a DP task needs {sorted(DP_KEYS)} (missing {sorted(DP_KEYS - present)})")
    epsilon = _int(meta, "dp_epsilon_micro", 0, budget_micro(dp))
    if dp.noise_multiplier is not None:
        fixed = noise_to_micro(dp.noise_multiplier)
        noise = _int(meta, "dp_noise_micro", fixed, fixed)
    else:
        noise = _int(meta, "dp_noise_micro", 1, MAX_NOISE_MICRO)
    return PrivacySpent(epsilon, noise)
