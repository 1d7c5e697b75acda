"""onnxruntime-gpu for a GPU machine that can be sent 64 MiB: ``prune`` and ``pack``
make the bundle here, ``unpack`` and ``check`` run there (README.md beside them)."""
