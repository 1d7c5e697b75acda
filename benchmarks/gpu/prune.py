"""Keep one GPU architecture's kernels in a CUDA library's fatbins.

onnxruntime-gpu 1.30.0's CUDA provider (libonnxruntime_providers_cuda.so, 272 MB) is
mostly its ``.nv_fatbin`` section: 578 fatbins holding cubins for sm_75, 80, 86, 89,
90 and 120, and no PTX, so a GPU only ever loads the cubins of its own architecture.
This keeps, in every fatbin that has one, only the entries built for ``--arch`` (90:
the H100 and H200): they move to the fatbin's front, its size field is rewritten and
the freed tail is zeroed, which then compresses away. Every fatbin keeps its offset,
so the ``.nvFatBinSegment`` wrappers that point at them stay valid, and the file keeps
its size. Fatbins without an entry for the architecture (on 1.30.0: 9 with sm_120
kernels only) are left as they are. Standard library only; no cuobjdump needed.

    python -m benchmarks.gpu.prune libonnxruntime_providers_cuda.so pruned.so [--arch 90]
"""

from __future__ import annotations

import argparse
import struct
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
# A fatbin: magic, version, header size, size of the entries that follow the header.
FATBIN_HEADER = struct.Struct("<IHHQ")
# An entry: kind (1 PTX, 2 cubin), flags, entry header size, payload size; the target
# architecture (a u32, 90 for sm_90) sits at byte 28 of the entry header.
ENTRY_HEADER = struct.Struct("<HHIQ")
ARCH = struct.Struct("<I")
ARCH_AT = 28
KINDS = {1: "PTX", 2: "cubin"}
# ELF64, little-endian: where the section headers are, and one section header's fields.
ELF_SHOFF = struct.Struct("<Q")  # at 0x28: where the section headers start
ELF_SHCOUNTS = struct.Struct("<HHH")  # at 0x3a: e_shentsize, e_shnum, e_shstrndx
SECTION = struct.Struct("<IIQQQQ")  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size


@dataclass(frozen=True)
class Entry:
    kind: int
    arch: int
    start: int  # offsets in the section
    end: int


@dataclass(frozen=True)
class Fatbin:
    start: int
    header_size: int
    end: int
    entries: tuple[Entry, ...]


@dataclass(frozen=True)
class Pruned:
    fatbins: int
    pruned: int  # fatbins that had an entry of the architecture
    kept_bytes: int
    freed_bytes: int
    found: Counter[tuple[str, int]]  # (kind, arch) -> bytes, before pruning

    def summary(self, arch: int) -> str:
        found = ", ".join(
            f"{kind} sm_{a} {size / 2**20:.1f} MiB"
            for (kind, a), size in sorted(self.found.items())
        )
        return (
            f"{self.fatbins} fatbins ({found}); kept sm_{arch} in {self.pruned} "
            f"({self.kept_bytes / 2**20:.1f} MiB), {self.fatbins - self.pruned} left as they "
            f"were, {self.freed_bytes / 2**20:.1f} MiB zeroed"
        )


def elf_section(image: bytes | bytearray, name: str) -> tuple[int, int]:
    """The file offset and size of the section ``name`` of a little-endian ELF64 image."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    (offset,) = ELF_SHOFF.unpack_from(image, 0x28)
    entry_size, count, names_index = ELF_SHCOUNTS.unpack_from(image, 0x3A)
    if count == 0 or names_index >= count:
        raise ValueError("the ELF file lists no sections (or an extended count)")
    headers = [SECTION.unpack_from(image, offset + i * entry_size) for i in range(count)]
    names = headers[names_index][4]
    for name_at, _, _, _, start, size in headers:
        end = image.index(b"\0", names + name_at)
        if image[names + name_at : end].decode() == name:
            return start, size
    raise ValueError(f"no {name} section")


def fatbins(section: bytes | bytearray | memoryview) -> Iterator[Fatbin]:
    """The fatbins of an ``.nv_fatbin`` section, in order (zero padding between them)."""
    at = 0
    while at < len(section):
        if not any(section[at : at + 8]):
            at += 8
            continue
        magic, _, header_size, size = FATBIN_HEADER.unpack_from(section, at)
        if magic != FATBIN_MAGIC:
            raise ValueError(f"no fatbin at section offset {at}")
        entry, end = at + header_size, at + header_size + size
        entries = []
        while entry < end:
            kind, _, entry_header, payload = ENTRY_HEADER.unpack_from(section, entry)
            (arch,) = ARCH.unpack_from(section, entry + ARCH_AT)
            entries.append(Entry(kind, arch, entry, entry + entry_header + payload))
            entry += entry_header + payload
        if entry != end:
            raise ValueError(f"the fatbin at section offset {at} overruns its size")
        yield Fatbin(at, header_size, end, tuple(entries))
        at = end


def prune_section(section: memoryview, arch: int) -> Pruned:
    """Keep only ``arch``'s entries in each fatbin of ``section``, in place."""
    found: Counter[tuple[str, int]] = Counter()
    total = pruned = kept_bytes = freed_bytes = 0
    for fatbin in list(fatbins(section)):
        total += 1
        for e in fatbin.entries:
            found[KINDS.get(e.kind, str(e.kind)), e.arch] += e.end - e.start
        keep = b"".join(bytes(section[e.start : e.end]) for e in fatbin.entries if e.arch == arch)
        if not keep:
            continue
        body = fatbin.start + fatbin.header_size
        size = fatbin.end - body
        struct.pack_into("<Q", section, fatbin.start + 8, len(keep))
        section[body : fatbin.end] = keep + bytes(size - len(keep))
        pruned += 1
        kept_bytes += len(keep)
        freed_bytes += size - len(keep)
    return Pruned(total, pruned, kept_bytes, freed_bytes, found)


def prune_library(image: bytearray, arch: int) -> Pruned:
    """Prune the ``.nv_fatbin`` section of a shared library's bytes, in place."""
    start, size = elf_section(image, ".nv_fatbin")
    section = memoryview(image)[start : start + size]
    try:
        return prune_section(section, arch)
    finally:
        section.release()  # the bytearray can grow again


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.prune",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n")[2],
    )
    parser.add_argument("library", type=Path, help="the CUDA library to read")
    parser.add_argument("out", type=Path, help="where to write the pruned copy")
    parser.add_argument("--arch", type=int, default=90, help="the SM to keep (default: 90)")
    args = parser.parse_args(argv)
    image = bytearray(args.library.read_bytes())
    try:
        pruned = prune_library(image, args.arch)
    except (ValueError, IndexError, struct.error) as error:
        parser.exit(2, f"error: {args.library}: {error}\n")
    args.out.write_bytes(image)
    print(pruned.summary(args.arch))


if __name__ == "__main__":
    main()
