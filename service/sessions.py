"""onnxruntime sessions for scoring graphs: provider choice and explicit thread counts.

``auto`` asks for CUDA only where an NVIDIA driver is present and keeps it only if
the session really runs on it (onnxruntime silently falls back to CPU when a CUDA
library is missing); ``cuda`` insists and fails otherwise; ``cpu`` never tries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnxruntime as ort

Provider = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def nvidia_driver_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists()


def make_session(
    path: Path, *, provider: Provider = "auto", intra_threads: int = 0, inter_threads: int = 1
) -> ort.InferenceSession:
    """A session for one graph; ``intra_threads`` 0 lets onnxruntime pick (one per core)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads sleep instead of spinning: in the service they share the
    # cores with the event loop, which a spinning pool would starve between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    want_cuda = provider == "cuda" or (
        provider == "auto" and CUDA in ort.get_available_providers() and nvidia_driver_present()
    )
    providers = [CUDA, CPU] if want_cuda else [CPU]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    if provider == "cuda" and session.get_providers()[0] != CUDA:
        raise ValueError(
            f"{path}: the CUDA provider was asked for but onnxruntime could not use it "
            f"(available: {ort.get_available_providers()})"
        )
    return session


def active_provider(session: ort.InferenceSession) -> str:
    """``cuda`` or ``cpu``: what the session actually runs on."""
    return "cuda" if session.get_providers()[0] == CUDA else "cpu"
