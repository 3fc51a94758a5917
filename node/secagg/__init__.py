"""Secure aggregation without a coordinator: pairwise masks, Shamir-shared mask seeds, and
distributed discrete-Gaussian noise. Pure functions: no chain, no store, no peer.

* ``keys``: HKDF derivations and X25519 (identity keys, per-round seeds, mask keys);
* ``shamir``: t-out-of-n sharing of 16-byte seeds over GF(2^128) at x = member index + 1;
* ``masking``: the AES-CTR PRG and the double masking of Bonawitz et al. (CCS 2017) modulo 2^64;
* ``bundles``: the share bundles and unmask reveals members publish, their strict decoders, and
  the reconstruction of dropped members' mask seeds and survivors' self seeds.
"""
from .bundles import (
    KINDS,
    ShareBundle,
    Unmask,
    deal,
    decode_bundle,
    decode_unmask,
    encode_bundle,
    encode_unmask,
    encrypt_share,
    open_share,
    pair_keys,
    reconstruct,
    self_commitment,
)
from .keys import agree, derive, encode_parts, identity_private, mask_private, public_key, round_seeds
from .masking import mask, pair_seed, prg, self_mask_seed, unmask_sum
from .shamir import combine, split

__all__ = [
    "KINDS",
    "ShareBundle",
    "Unmask",
    "agree",
    "combine",
    "deal",
    "decode_bundle",
    "decode_unmask",
    "derive",
    "encode_bundle",
    "encode_parts",
    "encode_unmask",
    "encrypt_share",
    "identity_private",
    "mask",
    "mask_private",
    "open_share",
    "pair_keys",
    "pair_seed",
    "prg",
    "public_key",
    "reconstruct",
    "round_seeds",
    "self_commitment",
    "self_mask_seed",
    "split",
    "unmask_sum",
]
