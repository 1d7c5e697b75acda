"""Smoke test: onnxruntime really runs a graph on the CUDA execution provider.

Builds a tiny recommendation-like graph on the spot with onnx.helper (Gather a user
embedding -> LayerNormalization -> MatMul with an item table -> Add a bias -> TopK)
and checks, each check printing PASS or FAIL and the next one running regardless:

- a session with only the CUDA provider and CPU fallback disabled, so every node must
  be placed on CUDA and onnxruntime's own kernels (from the pruned fatbins) run, not
  only cuBLAS; it prints the CUDA libraries the process loaded;
- its scores against numpy (relative tolerance 2e-2: the CUDA provider uses TF32);
- IOBinding with inputs and outputs on the GPU;
- CUDA graph capture and replay (``enable_cuda_graph``), new inputs written in place;
- calls per second of the toy graph through IOBinding (100,000 items; not a figure
  of any real model).

Exit status 1 when the session or its numerics fail. ``ORT_PRELOAD=1`` calls
``onnxruntime.preload_dlls()`` first (it finds CUDA 13 under ``<site>/nvidia``).

    PYTHONPATH=/tmp/site python3 -m benchmarks.gpu.check
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

CUDA = "CUDAExecutionProvider"
USERS, DIM, ITEMS, TOP = 1000, 64, 100_000, 10
LIBRARIES = (
    "libcudart", "libcublas", "libcudnn", "libcurand", "onnxruntime_providers", "libcuda.so"
)  # fmt: skip
Floats = NDArray[np.float32]
Ints = NDArray[np.int64]


class Toy:
    """The toy graph's weights, the graph, and numpy's answer for it."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.embedding = rng.standard_normal((USERS, DIM), dtype=np.float32)
        self.items = (rng.standard_normal((DIM, ITEMS), dtype=np.float32) / 8).astype(np.float32)
        self.bias = (rng.standard_normal(ITEMS, dtype=np.float32) / 10).astype(np.float32)

    def users(self, count: int) -> Ints:
        return self.rng.integers(0, USERS, count).astype(np.int64)

    def model(self) -> bytes:
        nodes = [
            helper.make_node("Gather", ["emb", "users"], ["u"], axis=0),
            helper.make_node(
                "LayerNormalization", ["u", "ln_w", "ln_b"], ["un"], axis=-1, epsilon=1e-5
            ),
            helper.make_node("MatMul", ["un", "items"], ["mm"]),
            helper.make_node("Add", ["mm", "bias"], ["logits"]),
            helper.make_node(
                "TopK", ["logits", "k"], ["top_v", "top_i"], axis=-1, largest=1, sorted=1
            ),
        ]
        weights: dict[str, NDArray[np.generic]] = {
            "emb": self.embedding,
            "ln_w": np.ones(DIM, np.float32),
            "ln_b": np.zeros(DIM, np.float32),
            "items": self.items,
            "bias": self.bias,
            "k": np.array([TOP], np.int64),
        }
        graph = helper.make_graph(
            nodes,
            "reco",
            [helper.make_tensor_value_info("users", TensorProto.INT64, ["B"])],
            [
                helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", ITEMS]),
                helper.make_tensor_value_info("top_v", TensorProto.FLOAT, ["B", TOP]),
                helper.make_tensor_value_info("top_i", TensorProto.INT64, ["B", TOP]),
            ],
            [numpy_helper.from_array(value, name) for name, value in weights.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.checker.check_model(model)
        serialized: bytes = model.SerializeToString()
        return serialized

    def compare(self, users: Ints, logits: Floats, top_v: Floats, top_i: Ints) -> str:
        """Raise unless the graph's outputs match numpy's; the errors, relative to the
        largest logit."""
        u = self.embedding[users]
        u = (u - u.mean(-1, keepdims=True)) / np.sqrt(u.var(-1, keepdims=True) + 1e-5)
        expected = u @ self.items + self.bias
        top = np.sort(expected, -1)[:, ::-1][:, :TOP]
        scale = float(np.abs(expected).max())
        error = float(np.abs(logits - expected).max()) / scale
        top_error = float(np.abs(top_v - top).max()) / scale
        if error >= 2e-2 or top_error >= 2e-2:
            raise AssertionError(f"rel err logits {error:.2e} topk {top_error:.2e}")
        # the indices must point at the values returned (TF32 may reorder near-ties)
        if not np.allclose(np.take_along_axis(logits, top_i, -1), top_v, atol=1e-5 * scale):
            raise AssertionError("TopK indices do not match its values")
        return f"rel err logits {error:.1e} topk {top_error:.1e}"


def loaded_libraries() -> list[str]:
    """The CUDA and onnxruntime libraries mapped into this process."""
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if line.strip()}
    return sorted(p for p in paths if any(name in p for name in LIBRARIES))


def session(model: bytes, cuda_options: Mapping[str, str] | None = None) -> ort.InferenceSession:
    """CUDA only: listing the CPU provider too conflicts with disabling its fallback."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=[(CUDA, dict(cuda_options or {}))])


def on_gpu(array: NDArray[np.generic]) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0)


def empty_on_gpu(shape: list[int], dtype: type[np.generic]) -> ort.OrtValue:
    return ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0)


class Checks:
    def __init__(self, toy: Toy) -> None:
        self.toy = toy
        self.model = toy.model()
        self.failed: list[str] = []
        self.session: ort.InferenceSession | None = None

    def run(self, name: str, check: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            message = check()
        except Exception as error:  # a smoke test reports every failure and goes on
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            self.failed.append(name)
        else:
            print(f"PASS {name} ({time.perf_counter() - start:.2f}s) {message}", flush=True)

    def cuda_session(self) -> str:
        self.session = session(self.model)
        providers = self.session.get_providers()
        if providers[0] != CUDA:
            raise AssertionError(f"the session runs on {providers}")
        return f"providers={providers} libs={loaded_libraries()}"

    def numerics(self) -> str:
        assert self.session is not None
        users = self.toy.users(32)
        logits, top_v, top_i = self.session.run(None, {"users": users})
        return self.toy.compare(users, logits, top_v, top_i)

    def io_binding(self) -> str:
        assert self.session is not None
        users = self.toy.users(32)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input("users", on_gpu(users))
        for name in ("logits", "top_v", "top_i"):
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        if (device := binding.get_outputs()[0].device_name().lower()) != "cuda":
            raise AssertionError(f"the outputs are on {device}")
        logits, top_v, top_i = binding.copy_outputs_to_cpu()
        return self.toy.compare(users, logits, top_v, top_i)

    def cuda_graph(self) -> str:
        graph_session = session(self.model, {"enable_cuda_graph": "1"})
        rows = 32
        users = on_gpu(self.toy.users(rows))
        outputs = {
            "logits": empty_on_gpu([rows, ITEMS], np.float32),
            "top_v": empty_on_gpu([rows, TOP], np.float32),
            "top_i": empty_on_gpu([rows, TOP], np.int64),
        }
        binding = graph_session.io_binding()
        binding.bind_ortvalue_input("users", users)
        for name, value in outputs.items():
            binding.bind_ortvalue_output(name, value)
        graph_session.run_with_iobinding(binding)  # warm-up and capture
        for _ in range(3):
            chosen = self.toy.users(rows)
            users.update_inplace(chosen)
            graph_session.run_with_iobinding(binding)  # replay
        logits, top_v, top_i = (outputs[n].numpy() for n in ("logits", "top_v", "top_i"))
        return self.toy.compare(chosen, logits, top_v, top_i)

    def throughput(self) -> str:
        assert self.session is not None
        lines = []
        for rows in (1, 64, 256):
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("users", on_gpu(self.toy.users(rows)))
            for name in ("top_v", "top_i", "logits"):
                binding.bind_output(name, "cuda", 0)
            for _ in range(5):
                self.session.run_with_iobinding(binding)
            calls, start = 50, time.perf_counter()
            for _ in range(calls):
                self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()
            seconds = (time.perf_counter() - start) / calls
            lines.append(
                f"B={rows}: {seconds * 1e3:.3f} ms/call, "
                f"{rows * ITEMS / seconds / 1e6:.1f} M candidates/s"
            )
        return "; ".join(lines)


def main() -> None:
    print("onnxruntime", ort.__version__, ort.__file__, "device:", ort.get_device(), flush=True)
    print("available providers:", ort.get_available_providers(), flush=True)
    print("LD_LIBRARY_PATH:", os.environ.get("LD_LIBRARY_PATH", ""), flush=True)
    if os.environ.get("ORT_PRELOAD", "0") == "1":
        ort.preload_dlls()
    if CUDA not in ort.get_available_providers():
        sys.exit(f"FAIL: {CUDA} is not available (a CPU-only onnxruntime imported?)")
    checks = Checks(Toy())
    core = "session on CUDAExecutionProvider (no CPU fallback)", "run() numerics vs numpy"
    checks.run(core[0], checks.cuda_session)
    if checks.session is not None:
        checks.run(core[1], checks.numerics)
        checks.run("IOBinding (cuda in/out)", checks.io_binding)
        checks.run("CUDA graph capture+replay", checks.cuda_graph)
        checks.run("throughput (IOBinding, N=100k items)", checks.throughput)
    sys.exit(1 if set(core) & set(checks.failed) else 0)


if __name__ == "__main__":
    main()
