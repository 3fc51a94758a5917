"""Secure aggregation without a coordinator: pairwise masks, Shamir-shared mask seeds, and
distributed discrete-Gaussian noise. Pure functions: no chain, no store, no peer."""
