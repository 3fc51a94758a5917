"""What stays inside a member: datasets and shards, the model registry, local training."""
