"""The FedChain contract: Solidity source, committed compiled artifact, and its build step."""
