"""Aggregation rules: how every peer turns the round's valid updates into one global model.

Each rule is a pure function over exact int64 fixed-point updates (rows in canonical member
order) and integer weights, returning the aggregated delta and which rows it kept, wrapped in a
class with named parameters (``registry.RULES``). Every result is an exact integer function of
the inputs, so every honest peer gets the same bits on any hardware, with any thread count.

Weighting (all rules that weight): ``w_i = min(samples_i, sample_cap) * reputation_i``, the
sample count the peer reports in its artifact, capped so no single peer dominates, times its
on-chain reputation at submission.
"""
from ..protocol.round import Contribution
from ._exact import Aggregate
from .base import AggregationRule, drop_copies, weights_of
from .coordinate import Median, TrimmedMean, coordinate_median, trimmed_mean
from .krum import MultiKrum, krum_outliers, krum_scores, multi_krum
from .mean import FedAvg, PlainFedAvg, agreeing_with, fedavg_clipped, plain_fedavg
from .registry import RULE_IDS, RULES, make_rule
from .round import aggregate_round, bucket_delta, check_secure_bits, check_secure_rule, pin_rule, rule_of
from .trust import TrustCosine, trust_cosine, trust_scores

__all__ = [
    "Aggregate", "AggregationRule", "Contribution", "drop_copies", "weights_of", "RULES", "RULE_IDS", "make_rule", "rule_of", "pin_rule",
    "aggregate_round", "bucket_delta", "check_secure_bits", "check_secure_rule", "FedAvg", "PlainFedAvg", "Median", "TrimmedMean", "MultiKrum", "TrustCosine",
    "fedavg_clipped", "plain_fedavg", "agreeing_with", "coordinate_median", "trimmed_mean", "krum_scores",
    "krum_outliers", "multi_krum",
    "trust_scores", "trust_cosine",
]
