"""The contract between training and serving: model versions on disk, and the shared vocabulary."""
