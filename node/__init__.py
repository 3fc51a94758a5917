"""Everything a fedchain peer does: chain client, artifact store and format, training,
aggregation rules and the round loop. See the README for how the pieces fit."""
