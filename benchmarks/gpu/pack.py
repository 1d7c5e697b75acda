"""Make the onnxruntime-gpu bundle that a device call can carry (64 MiB at most).

From the onnxruntime-gpu wheel (1.30.0 for CUDA 13, cp312, manylinux_2_28: 247 MB,
its CUDA provider alone 272 MB unpacked) this writes to ``OUT``:

- ``ort_cuda_provider_sm90.so.xz``: the CUDA provider pruned to one architecture
  (``benchmarks.gpu.prune``), xz-compressed (about 47 MiB for sm_90);
- ``ort_gpu_rest.tar.xz``: the rest of ``onnxruntime/`` and the ``.dist-info`` (about
  12 MiB), without the TensorRT provider and the Python tool packages (transformers,
  quantization, tools) that scoring does not import;
- ``SHA256SUMS``: both files, and the pruned provider as unpacked, for
  ``benchmarks.gpu.unpack`` to check.

    python -m benchmarks.gpu.pack build/wheels/onnxruntime_gpu-1.30.0-*.whl build/gpu-bundle
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import io
import lzma
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.gpu.prune import prune_library

PROVIDER = "onnxruntime/capi/libonnxruntime_providers_cuda.so"
LEFT_OUT = (
    PROVIDER,
    "onnxruntime/capi/libonnxruntime_providers_tensorrt.so",
    "onnxruntime/transformers/",
    "onnxruntime/quantization/",
    "onnxruntime/tools/",
)
REST = "ort_gpu_rest.tar.xz"
SUMS = "SHA256SUMS"
XZ_PRESET = 9 | lzma.PRESET_EXTREME  # minutes, not seconds: every MiB counts against 64


def provider_xz(arch: int) -> str:
    return f"ort_cuda_provider_sm{arch}.so.xz"


def rest_tar(wheel: zipfile.ZipFile) -> bytes:
    """Every file of the wheel but ``LEFT_OUT``, as a tar laid out like ``pip install
    --target`` (owner root, the wheel's modes and times)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in wheel.infolist():
            if info.is_dir() or info.filename.startswith(LEFT_OUT):
                continue
            entry = tarfile.TarInfo(info.filename)
            data = wheel.read(info)
            entry.size = len(data)
            entry.mode = (info.external_attr >> 16) & 0o777 or 0o644
            entry.mtime = calendar.timegm((*info.date_time, 0, 0, 0))
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def pack(wheel_path: Path, out: Path, arch: int = 90) -> dict[str, str]:
    """Write the bundle's three files to ``out``; returns name -> sha256 (SHA256SUMS)."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        provider = bytearray(wheel.read(PROVIDER))
        rest = rest_tar(wheel)
    print(prune_library(provider, arch).summary(arch))
    files = {
        provider_xz(arch): lzma.compress(provider, preset=XZ_PRESET),
        REST: lzma.compress(rest, preset=XZ_PRESET),
    }
    sums = {Path(PROVIDER).name: hashlib.sha256(provider).hexdigest()}
    for name, data in files.items():
        (out / name).write_bytes(data)
        sums[name] = hashlib.sha256(data).hexdigest()
        print(f"{out / name}: {len(data):,} bytes ({len(data) / 2**20:.1f} MiB)")
    (out / SUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    return sums


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.pack",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument("wheel", type=Path, help="the onnxruntime-gpu wheel")
    parser.add_argument("out", type=Path, help="the bundle's folder (build/gpu-bundle)")
    parser.add_argument("--arch", type=int, default=90, help="the SM to keep (default: 90)")
    args = parser.parse_args(argv)
    try:
        sums = pack(args.wheel, args.out, args.arch)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{args.out / SUMS}: pruned provider {sums[Path(PROVIDER).name]}")


if __name__ == "__main__":
    main()
