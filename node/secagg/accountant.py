"""Member-level privacy of the released bucket sums, in zero-concentrated DP (zCDP), composed over
rounds by adding rho (Bun & Steinke, TCC 2016, Lemma 2.3) and converted to (epsilon, delta) at
the end.

Neighbouring inputs: one member's update is replaced by zero (its clipped update, L2 norm at most
``clip``, is the only thing that differs; every survivor, that member included, still adds its
noise share), as in user-level DP-FedAvg and in Kairouz, Liu & Steinke's analysis.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from .noise import NoisePlan

__all__ = ["ddg_tau", "round_rho", "epsilon", "total_epsilon"]


def ddg_tau(sigma_sq: float, n: int) -> float:
    """tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1)): how far the sum of ``n``
    i.i.d. N_Z(0, sigma^2) is from N_Z(0, n sigma^2) (Kairouz, Liu & Steinke 2021, Theorem 1)."""
    return 10.0 * sum(math.exp(-2.0 * math.pi**2 * sigma_sq * k / (k + 1)) for k in range(1, n))


def ddg_rho(*, l2: float, l1: float, sigma_sq: float, n: int, dim: int) -> float:
    """zCDP rho of releasing x + sum of ``n`` i.i.d. N_Z(0, sigma_sq)^dim for integer x with
    ||x - x'||_2 <= l2 and ||x - x'||_1 <= l1.

    Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning
    with Secure Aggregation", ICML 2021 (arXiv:2102.06387): Theorem 1 (privacy of the sum of n
    i.i.d. discrete Gaussians, sigma >= 1/2) in its Renyi form, Proposition 14 / Eq. 17, which
    is also the form the authors' own accounting code (google-research/federated,
    distributed_dp) evaluates: with A = l2 / (sqrt(n) sigma), B = l1 / (sqrt(n) sigma), for every
    order alpha > 1
        D_alpha <= min( alpha A^2/2 + tau d,
                        alpha/2 (A^2 + 2 B tau + tau^2 d),
                        alpha/2 (A + sqrt(d) tau)^2 ).
    rho-zCDP asks D_alpha <= rho alpha for all alpha > 1; tau d <= alpha tau d, so rho is the
    minimum of A^2/2 + tau d, (A^2 + 2 B tau + tau^2 d)/2 and (A + sqrt(d) tau)^2/2.
    For n = 1, tau = 0 and this is the discrete Gaussian's A^2/2 (Canonne-Kamath-Steinke,
    Theorem 4). For sigma >~ 4, tau underflows to 0 in floats; its true value is below 1e-300.
    """
    if n < 1 or dim < 1:
        raise ValueError("n and dim must be >= 1")
    if sigma_sq < 0.25:
        raise ValueError(f"the theorem needs sigma >= 1/2, got sigma^2 = {sigma_sq}")
    tau = ddg_tau(sigma_sq, n)
    central = math.sqrt(n * sigma_sq)
    a, b = l2 / central, l1 / central
    return min(a * a / 2 + tau * dim,
               (a * a + 2 * b * tau + tau * tau * dim) / 2,
               (a + math.sqrt(dim) * tau) ** 2 / 2)


def round_rho(plan: NoisePlan, survivors: int, dim: int) -> float:
    """The zCDP rho of one round's released bucket sum, with ``survivors`` members' noise in it
    (fewer survivors than ``plan.members`` means less noise and a larger rho).

    L2 sensitivity: ``plan.sensitivity`` (clip / g plus the rounding term sqrt(d)/2); L1: the
    Cauchy-Schwarz bound sqrt(d) * L2 (the rounded update has d coordinates).
    """
    if survivors < 1:
        raise ValueError("a released sum has at least one survivor")
    l2 = plan.sensitivity
    return ddg_rho(l2=l2, l1=math.sqrt(dim) * l2, sigma_sq=float(plan.member_sigma_sq), n=survivors, dim=dim)


def _epsilon_at(rho: float, log_inv_delta: float, alpha: float) -> float:
    """Canonne, Kamath & Steinke, NeurIPS 2020 (arXiv:2004.00010v4), Proposition 12 at order
    alpha with Renyi divergence alpha rho (Corollary 13 for zCDP), solved for epsilon: rho-zCDP
    gives (eps, delta)-DP with eps = alpha rho + log(1 - 1/alpha)
    + (log(1/delta) - log(alpha)) / (alpha - 1), for any alpha > 1."""
    return alpha * rho + math.log1p(-1 / alpha) + (log_inv_delta - math.log(alpha)) / (alpha - 1)


def epsilon(rho: float, delta: float) -> float:
    """The smallest epsilon such that rho-zCDP implies (epsilon, delta)-DP that we can certify:
    the minimum over orders alpha > 1 of Canonne-Kamath-Steinke's conversion (Proposition 12 /
    Corollary 13 of "The Discrete Gaussian for Differential Privacy", NeurIPS 2020), never more
    than the classic
    rho + 2 sqrt(rho log(1/delta)) (Bun & Steinke 2016, Proposition 1.3). Every alpha gives a
    valid bound, so an approximate minimizer is still an upper bound."""
    if not (0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not (rho >= 0):
        raise ValueError(f"rho must be >= 0, got {rho!r}")
    if rho == 0:
        return 0.0
    if math.isinf(rho):
        return math.inf
    li = math.log(1 / delta)
    classic = rho + 2 * math.sqrt(rho * li)
    # golden-section search on log(alpha - 1) (the objective is unimodal there; checked against
    # a dense grid in tests/test_secagg_noise.py)
    f = lambda u: _epsilon_at(rho, li, 1 + math.exp(u))  # noqa: E731
    lo, hi = -12.0, 12.0 + max(0.0, math.log(li / rho + 1))
    ratio = (math.sqrt(5) - 1) / 2
    x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(200):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - ratio * (hi - lo)
            f1 = f(x1)
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + ratio * (hi - lo)
            f2 = f(x2)
    return max(0.0, min(classic, f1, f2))


def total_epsilon(rhos: Sequence[float], delta: float) -> float:
    """Epsilon at ``delta`` after all the rounds: zCDP composes by adding rho."""
    return epsilon(math.fsum(rhos), delta)
