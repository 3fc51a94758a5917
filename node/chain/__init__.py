"""The FedChain contract as the node sees it: typed views, events, safe transactions, keys."""
from .client import ZERO32, ChainClient, MemberInfo, Outcome, Phase, RoundState, deploy_contract, load_artifact

__all__ = ["ZERO32", "ChainClient", "MemberInfo", "Outcome", "Phase", "RoundState", "deploy_contract", "load_artifact"]
