"""Tooling on top of the runtime: devnet, deployment, simulation, experiments, attacks, audit."""
