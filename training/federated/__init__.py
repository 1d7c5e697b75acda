"""FeCoSR-style federated training of the hybrid: markets that may not pool their
interactions train its shared weights together through Flower (docs/federated.md).

config.py      what a federation is told (rounds, strategy, S2CE, adaptation)
shared.py      what every party holds: vocabulary, market codes, row offsets
partition.py   a market's own share of a split: all a client holds
client.py      one market's side: local rounds, adaptation, evaluation, its parts
wire.py        shared weights <-> Flower records, and what crosses the wire, metered
grid.py        an in-process Flower Grid (the simulation without Ray), a metered one
apps.py        the Flower ServerApp and ClientApp, and the server's work
run_folder.py  the run folder, from the server's outcome and the shared info
run.py         a whole federation in one process, into a hybrid run folder
deployment.py  the apps for Flower's deployment engine (the App folder: app/)
loopback.py    the deployment as real processes on this machine
errors.py      FederationError
planted.py     the planted-data setting of its test and its ablation benchmark
"""
