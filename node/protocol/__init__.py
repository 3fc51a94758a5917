"""The pure protocol: task, artifact format, CIDs, fixed point and a round's logic.

Nothing here talks to a chain, a store or a peer: inputs in, results out.
"""
