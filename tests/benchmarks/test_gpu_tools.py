"""The onnxruntime-gpu bundle tools on synthetic files: the fatbin pruner on an ELF
built here, a wheel packed and unpacked again, and the smoke test's toy graph on CPU.
The real provider library is too large for a test; the pruner reproduced, byte for
byte, the pruned provider that ran on the H200 (benchmarks/gpu/README.md)."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.gpu import check, pack, unpack
from benchmarks.gpu.prune import FATBIN_MAGIC, elf_section, fatbins, prune_library

ENTRY = 64  # an entry header's size here; the pruner reads it from each entry


def entry(arch: int, payload: bytes, kind: int = 2) -> bytes:
    header = bytearray(ENTRY)
    struct.pack_into("<HHIQ", header, 0, kind, 0x101, ENTRY, len(payload))
    struct.pack_into("<I", header, 28, arch)
    return bytes(header) + payload


def fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body


def elf(sections: dict[str, bytes]) -> bytes:
    """A little-endian ELF64 file with these sections (and .shstrtab), nothing else."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    contents = [*sections.values(), names]
    at, layout = 64, []
    for content in contents:
        layout.append((at, len(content)))
        at += len(content) + (-len(content)) % 8
    header = bytearray(64)
    header[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", header, 0x28, at)  # section headers after the contents
    struct.pack_into("<HHH", header, 0x3A, 64, len(contents) + 1, len(contents))
    body = b"".join(c + bytes((-len(c)) % 8) for c in contents)
    table = bytes(64)  # section 0: the null section
    name_at = 1
    for name, (offset, size) in zip([*sections, ".shstrtab"], layout, strict=True):
        table += struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, size, 0, 0, 8, 0)
        name_at += len(name) + 1
    return bytes(header) + body + table


MIXED = fatbin(entry(75, b"a" * 24), entry(90, b"n" * 40), entry(120, b"z" * 16))
NEW_ONLY = fatbin(entry(120, b"q" * 8))
SECTION = MIXED + bytes(8) + NEW_ONLY


def test_prune_keeps_one_arch_in_place_and_leaves_the_rest_of_the_file() -> None:
    image = elf({".text": b"\x90" * 40, ".nv_fatbin": SECTION, ".data": b"d" * 16})
    pruned = bytearray(image)
    result = prune_library(pruned, 90)
    start, size = elf_section(pruned, ".nv_fatbin")
    assert len(pruned) == len(image) and size == len(SECTION)
    assert pruned[:start] == image[:start] and pruned[start + size :] == image[start + size :]
    kept = entry(90, b"n" * 40)
    section = bytes(pruned[start : start + size])
    # the first fatbin: its sm_90 entry at its front, its size rewritten, the rest zeroed
    assert section[:16] == struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(kept))
    assert section[16 : len(MIXED)] == kept + bytes(len(MIXED) - 16 - len(kept))
    assert section[len(MIXED) :] == bytes(8) + NEW_ONLY  # no sm_90 entry: untouched
    found = [(f.start, [e.arch for e in f.entries]) for f in fatbins(section)]
    assert found == [(0, [90]), (len(MIXED) + 8, [120])]
    assert (result.fatbins, result.pruned, result.kept_bytes) == (2, 1, len(kept))
    assert result.freed_bytes == len(MIXED) - 16 - len(kept)
    assert result.found[("cubin", 120)] == ENTRY + 16 + ENTRY + 8


def test_prune_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="ELF64"):
        prune_library(bytearray(b"MZ" + bytes(100)), 90)
    with pytest.raises(ValueError, match=r"no \.nv_fatbin"):
        prune_library(bytearray(elf({".text": b"x" * 8})), 90)
    with pytest.raises(ValueError, match="no fatbin at section offset 0"):
        prune_library(bytearray(elf({".nv_fatbin": b"\x01" * 16})), 90)


def test_a_packed_wheel_unpacks_into_a_site_part_by_part(tmp_path: Path) -> None:
    wheel = tmp_path / "onnxruntime_gpu-1.30.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    provider = elf({".nv_fatbin": SECTION})
    pybind = "onnxruntime/capi/onnxruntime_pybind11_state.cpython-312-x86_64-linux-gnu.so"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(pack.PROVIDER, provider)
        z.writestr("onnxruntime/capi/libonnxruntime_providers_tensorrt.so", b"trt")
        z.writestr("onnxruntime/transformers/x.py", "")
        z.writestr("onnxruntime/__init__.py", "# ort")
        z.writestr(pybind, b"pybind")
        z.writestr("onnxruntime_gpu-1.30.0.dist-info/METADATA", "Name: onnxruntime-gpu")
    bundle = tmp_path / "bundle"
    pack.pack(wheel, bundle, 90)
    expected = bytearray(provider)
    prune_library(expected, 90)

    first, site = tmp_path / "first", tmp_path / "site"
    first.mkdir()
    for name in (pack.provider_xz(90), pack.SUMS):
        (first / name).write_bytes((bundle / name).read_bytes())
    assert unpack.unpack(first, site) == ["the rest of onnxruntime"]  # the first call
    assert unpack.unpack(bundle, site) == []  # the second: both parts there, the rest added
    capi = site / "onnxruntime" / "capi"
    assert (capi / unpack.PROVIDER).read_bytes() == expected
    assert (capi / Path(pybind).name).read_bytes() == b"pybind"
    assert (site / "onnxruntime/__init__.py").read_text() == "# ort"
    assert (site / "onnxruntime_gpu-1.30.0.dist-info/METADATA").exists()
    assert not (capi / "libonnxruntime_providers_tensorrt.so").exists()
    assert not (site / "onnxruntime/transformers").exists()

    (bundle / pack.REST).write_bytes(b"not the packed file")
    (capi / Path(pybind).name).unlink()
    with pytest.raises(unpack.Mismatch, match=pack.REST):
        unpack.unpack(bundle, site)


def test_the_smoke_tests_toy_graph_matches_numpy_on_cpu() -> None:
    toy = check.Toy()
    session = ort.InferenceSession(toy.model(), providers=["CPUExecutionProvider"])
    users = toy.users(4)
    logits, top_v, top_i = session.run(None, {"users": users})
    assert toy.compare(users, logits, top_v, top_i).startswith("rel err")
    with pytest.raises(AssertionError, match="rel err"):
        toy.compare(users, logits + np.float32(1.0), top_v, top_i)
