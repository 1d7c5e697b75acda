"""Unpack the onnxruntime-gpu bundle (``benchmarks.gpu.pack``) into a site folder.

Runs on the device machine with its own Python (standard library only; no xz tool
needed). It unpacks whichever parts of the bundle are in ``--bundle``, so the
parts can arrive in two device calls (the provider in one, the rest in the next),
and skips a part already unpacked, so running it again is harmless. Every part and
the unpacked provider are checked against the bundle's SHA256SUMS. Exit status 0
when the site holds the whole package, 3 while a part is still missing, 2 on a
checksum mismatch or a bundle without SHA256SUMS. Then ``PYTHONPATH=SITE`` imports
this onnxruntime ahead of any other installed.

    python3 -m benchmarks.gpu.unpack [--bundle build/gpu-bundle] [SITE (default /tmp/site)]
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import shutil
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

PROVIDER = "libonnxruntime_providers_cuda.so"
REST = "ort_gpu_rest.tar.xz"
SUMS = "SHA256SUMS"
CHUNK = 1 << 22


class Mismatch(Exception):
    """A file's SHA-256 is not the one SHA256SUMS gives."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sums(bundle: Path) -> dict[str, str]:
    """SHA256SUMS as name -> hex digest."""
    lines = (bundle / SUMS).read_text().splitlines()
    return {name.lstrip("*"): digest for digest, name in (line.split(None, 1) for line in lines)}


def checked(path: Path, sums: dict[str, str], name: str | None = None) -> Path:
    """``path``, once its SHA-256 is the one SHA256SUMS gives for ``name`` (its own)."""
    name = name or path.name
    if name not in sums:
        raise Mismatch(f"{name} is not listed in {SUMS}")
    if (got := sha256(path)) != sums[name]:
        raise Mismatch(f"{path}: sha256 {got}, {SUMS} says {sums[name]}")
    return path


def unpack(bundle: Path, site: Path) -> list[str]:
    """Unpack the parts found in ``bundle`` into ``site``; returns what is still missing."""
    sums = read_sums(bundle)
    capi = site / "onnxruntime" / "capi"
    capi.mkdir(parents=True, exist_ok=True)
    provider = capi / PROVIDER
    for packed in sorted(bundle.glob("ort_cuda_provider_sm*.so.xz")):
        if provider.exists() and sha256(provider) == sums.get(PROVIDER):
            continue
        partial = capi / f"{PROVIDER}.part"
        with lzma.open(checked(packed, sums)) as src, partial.open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        checked(partial, sums, PROVIDER).chmod(0o755)
        partial.replace(provider)
        print(f"unpacked {packed} -> {provider}")
    rest = bundle / REST
    if rest.exists() and not any(capi.glob("onnxruntime_pybind11_state*.so")):
        with tarfile.open(checked(rest, sums)) as tar:
            tar.extractall(site, filter="data")
        print(f"unpacked {rest} -> {site}")
    missing = [] if provider.exists() else ["the CUDA provider"]
    if not any(capi.glob("onnxruntime_pybind11_state*.so")):
        missing.append("the rest of onnxruntime")
    return missing


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.gpu.unpack",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument("site", type=Path, nargs="?", default=Path("/tmp/site"))
    parser.add_argument("--bundle", type=Path, default=Path("build/gpu-bundle"))
    args = parser.parse_args(argv)
    try:
        missing = unpack(args.bundle, args.site)
    except (Mismatch, OSError) as error:
        parser.exit(2, f"error: {error}\n")
    state = f"missing: {', '.join(missing)}" if missing else "complete"
    print(f"site {args.site}: {state}")
    sys.exit(3 if missing else 0)


if __name__ == "__main__":
    main()
