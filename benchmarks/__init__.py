"""Measurements of the project's speed, kept apart from the packages they measure
(none of them ships in an image). Run each from the repository root with the
project's environment: ``.venv/bin/python -m benchmarks.<name> --help``.

- ``timing``: the one timing loop;
- ``workload``: the shared workload, keep-alive client and table;
- ``processes``: the service and redis-server as real processes (the tests use them);
- ``scoring``: candidates/s of each store version's graph (history-once / paper);
- ``batch_sizes``: candidates/s of one graph as requests share a call, on any provider;
- ``gpu``: onnxruntime-gpu cut down to fit a GPU machine's carry, unpacked and
  checked there (gpu/README.md);
- ``serve``: the service under concurrent clients against the model-bound ceiling;
- ``serve_cpu``, ``serve_settings``, ``call_width``, ``soak``, ``variants``: the
  measurements behind docs/benchmarks.md and docs/reliability.md;
- ``federated_planted``: not a speed, the federation's ablations on planted data
  (docs/federated.md, "Measured").
"""
