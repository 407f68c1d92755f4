"""Unitree's messages as bytes: the CDR the DDS wire carries and the C layout the CRC covers.

A workaround, in this one place: cyclonedds-python (11.0.1) serialises an IdlStruct in pure Python,
1.2 ms for one LowState_, and the SDK's CRC (unitree_sdk2py.utils.crc) packs the message field by
field, 0.4 ms more. At 500 Hz each way that is more than a core of a 2-core machine. Unitree's
Go2 messages are fixed-size (@final, arrays only, no sequences or strings), so each one is a fixed
struct format: here the formats are derived once from the SDK's own IDL type annotations, a
message is a flat tuple of its fields in declaration order, and encoding or decoding is one
struct.pack / unpack (a few microseconds), and the bytes go to and come from cyclonedds's C layer
directly (write_raw, take_raw: on cyclonedds 11.0.1 only, the public slow path elsewhere; no
upstream issue asks for a faster Python serialiser). tests/test_robot_sdk.py checks the bytes
against cyclonedds's serialize() and the CRC against the SDK's, field for field.

CRC (Unitree's CRC32): the message in its C layout (natural alignment) as little-endian 32-bit
words, all but the last (the crc field itself), fed most significant bit first through the
polynomial 0x04C11DB7 from 0xFFFFFFFF, no reflection, no final xor: CRC-32/MPEG-2 over each word's
big-endian bytes.
"""
from __future__ import annotations

import struct
import sys
import typing

import numpy as np

PRIMITIVES = {"uint8": "B", "int8": "b", "uint16": "H", "int16": "h", "uint32": "I", "int32": "i",
              "uint64": "Q", "int64": "q", "float32": "f", "float64": "d", "bool": "?"}


def _fields(cls):
    """(name, annotation) of an IdlStruct's fields, in declaration order."""
    module = sys.modules[cls.__module__]
    root = sys.modules[cls.__module__.split(".")[0]]
    hints = typing.get_type_hints(cls, globalns={**vars(module), root.__name__: root}, include_extras=True)
    return [(name, hints[name]) for name in cls.__annotations__]


def _leaves(annotation, path):
    """Flatten one field: yields (path, struct code) primitives and ('struct', cls) markers."""
    from cyclonedds.idl.types import array
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        for e in extra:
            if isinstance(e, array):
                for k in range(e.length):
                    yield from _leaves(e.subtype, f"{path}[{k}]")
                return
            if isinstance(e, str) and e in PRIMITIVES:
                yield path, PRIMITIVES[e]
                return
        raise TypeError(f"unsupported IDL annotation at {path}: {annotation}")
    if isinstance(annotation, str) and annotation in PRIMITIVES:
        yield path, PRIMITIVES[annotation]
    elif isinstance(annotation, type):            # a nested struct
        yield path, annotation
    else:
        raise TypeError(f"unsupported IDL type at {path}: {annotation}")


class Layout:
    """One fixed-size message type: field names, CDR and C formats, and where each field sits."""

    def __init__(self, msg_type):
        self.msg_type = msg_type
        self.names: list[str] = []
        cdr, c_parts = [], []
        _, self.c_size, _ = self._walk(msg_type, "", cdr, c_parts, 0)
        self.cdr = struct.Struct("<" + "".join(cdr))
        self.c = struct.Struct("<" + "".join(c_parts))
        self.index = {n: i for i, n in enumerate(self.names)}

    def _walk(self, cls, prefix, cdr, c_parts, c_off):
        """Append cls's primitives: CDR aligns each to its size from the payload start, C aligns
        each to its size and pads a struct to its largest member's alignment."""
        start, align = c_off, 1
        for name, annotation in _fields(cls):
            for path, code in _leaves(annotation, prefix + name):
                if isinstance(code, type):
                    sub_align = self._struct_align(code)
                    pad = -c_off % sub_align
                    c_parts.append("x" * pad)
                    c_off += pad
                    _, c_off, a = self._walk(code, path + ".", cdr, c_parts, c_off)
                    align = max(align, a)
                    continue
                size = struct.calcsize(code)
                cdr_off = sum(struct.calcsize("<" + p) for p in cdr)
                cdr.append("x" * (-cdr_off % min(size, 8)) + code)
                pad = -c_off % size
                c_parts.append("x" * pad + code)
                c_off += pad + size
                align = max(align, size)
                self.names.append(path)
        pad = -(c_off - start) % align
        c_parts.append("x" * pad)
        return c_parts, c_off + pad, align

    def _struct_align(self, cls):
        best = 1
        for _, annotation in _fields(cls):
            for _, code in _leaves(annotation, ""):
                best = max(best, self._struct_align(code) if isinstance(code, type) else struct.calcsize(code))
        return best

    def slice(self, name: str, n: int) -> slice:
        """The n values of an array field (name[0] ... name[n-1]) in the flat tuple."""
        i = self.index[f"{name}[0]"]
        return slice(i, i + n)

    def values(self, msg) -> list:
        """An IdlStruct instance as the flat list of its fields (for tests and templates)."""
        out = []
        for path in self.names:
            obj = msg
            for part in path.replace("]", "").replace("[", ".").split("."):
                obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
            out.append(obj)
        return out


def _table() -> list:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_TABLE = _table()


def crc32_py(words_be: bytes) -> int:
    """CRC-32/MPEG-2 of a byte string (words already in big-endian order)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in words_be:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ b]
    return crc


def _sdk_core():
    """The SDK's compiled CRC core (crc32_core over uint32 words), or None: a speed-up only."""
    try:
        import ctypes
        from unitree_sdk2py.utils.crc import CRC
        lib = getattr(CRC(), "crc_lib", None)
        if lib is None:
            return None
        def core(c_bytes: bytes) -> int:
            n = len(c_bytes) // 4 - 1                  # every word but the crc field itself
            return int(lib.crc32_core((ctypes.c_uint32 * n).from_buffer_copy(c_bytes), n))
        return core
    except Exception:   # any platform without the shipped .so: the pure-Python CRC is exact, only slower
        return None


class Codec:
    """Encode/decode one message type; crc() of a flat tuple as the robot computes it."""

    def __init__(self, msg_type, header: bytes):
        self.layout = Layout(msg_type)
        self.header = header                     # the 4-byte CDR encapsulation header
        self._core = _sdk_core()

    def encode(self, values) -> bytes:
        data = self.header + self.layout.cdr.pack(*values)
        return data + b"\0" * (-len(data) % 4)

    def decode(self, data: bytes) -> tuple:
        if data[:4] != self.header:
            raise ValueError(f"unexpected CDR header {data[:4].hex()}")
        return self.layout.cdr.unpack_from(data, 4)

    def crc(self, values) -> int:
        c_bytes = self.layout.c.pack(*values)
        if self._core is not None:
            return self._core(c_bytes)
        return crc32_py(np.frombuffer(c_bytes, "<u4")[:-1].astype(">u4").tobytes())


def header_of(msg) -> bytes:
    """The encapsulation header cyclonedds writes for this message type (XCDR1 little endian)."""
    return bytes(msg.serialize()[:4])


# write_raw / take_raw call the private C layer under DataWriter.write / DataReader.take (the same
# calls minus the Python (de)serialisation), checked on this version only; any other version takes
# the public, slow path, with the same bytes in and out.
FAST_IO_VERSION = "11.0.1"


def _fast_io() -> bool:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("cyclonedds") == FAST_IO_VERSION
    except PackageNotFoundError:
        return False


FAST_IO = _fast_io()


def write_raw(writer, data: bytes) -> None:
    """Publish already-serialised CDR bytes on a cyclonedds DataWriter (its write() minus serialise)."""
    if not FAST_IO:
        writer.write(writer.data_type.deserialize(data))
        return
    from cyclonedds._clayer import ddspy_write
    from cyclonedds.core import DDSException
    ret = ddspy_write(writer._ref, data)
    if ret < 0:
        raise DDSException(ret, "while writing a sample")


def take_raw(reader, n: int = 64) -> list[bytes]:
    """The serialised samples waiting on a cyclonedds DataReader, oldest first (its take() minus
    deserialise)."""
    if not FAST_IO:
        from cyclonedds.internal import InvalidSample
        return [bytes(s.serialize()) for s in reader.take(N=n) if not isinstance(s, InvalidSample)]
    from cyclonedds._clayer import ddspy_take
    from cyclonedds.core import DDSException, InstanceState, SampleState, ViewState
    ret = ddspy_take(reader._ref, SampleState.Any | ViewState.Any | InstanceState.Any, n)
    if isinstance(ret, int):
        raise DDSException(ret, "while taking samples")
    return [data for data, info in ret if info.valid_data]
