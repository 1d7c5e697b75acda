"""FeCoSR-style federated training of the hybrid: markets that may not pool their
interactions train its shared weights together through Flower (docs/federated.md).

config.py     what a federation is told (rounds, strategy, S2CE, adaptation)
partition.py  a market's own share of a split: all a client holds
client.py     one market's side: local rounds, adaptation, evaluation, its parts
wire.py       shared weights <-> Flower records, and what crosses the wire, metered
grid.py       an in-process Flower Grid: the simulation without Ray
apps.py       the Flower ServerApp and ClientApp
run.py        a whole federation in one process, into a hybrid run folder
planted.py    the planted-data setting of its test and its ablation benchmark
"""
