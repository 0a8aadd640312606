"""Protocol 2.0 packet codec: CRC-16, byte stuffing, instruction/status packet building and a stream parser.

Used by the emulator (the driver talks through dynamixel-sdk, which has its own codec); kept independent of the
SDK so the emulator is a second, separately written implementation that cross-checks the SDK.
"""
from __future__ import annotations

from dataclasses import dataclass

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 252
STATUS = 0x55

# Instructions
PING, READ, WRITE, REG_WRITE, ACTION, FACTORY_RESET, REBOOT, CLEAR = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x10
SYNC_READ, SYNC_WRITE, FAST_SYNC_READ = 0x82, 0x83, 0x8A
BULK_READ, BULK_WRITE, FAST_BULK_READ = 0x92, 0x93, 0x9A

# Error byte (low 7 bits are a code; bit 7 is the hardware alert flag)
ERR_RESULT_FAIL, ERR_INSTRUCTION, ERR_CRC, ERR_DATA_RANGE, ERR_DATA_LENGTH, ERR_DATA_LIMIT, ERR_ACCESS = 1, 2, 3, 4, 5, 6, 7
ERR_HARDWARE_ALERT = 0x80
ERROR_NAMES = {
    ERR_RESULT_FAIL: "result fail",
    ERR_INSTRUCTION: "instruction error",
    ERR_CRC: "CRC error",
    ERR_DATA_RANGE: "data range error",
    ERR_DATA_LENGTH: "data length error",
    ERR_DATA_LIMIT: "data limit error",
    ERR_ACCESS: "access error",
}

MAX_LENGTH = 1024  # largest LEN we accept; anything bigger is garbage that happens to look like a header


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _make_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16/BUYPASS (poly 0x8005, init 0, not reflected, no final XOR) as Protocol 2.0 uses it."""
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFF00) ^ table[(crc >> 8) ^ b]
    return crc


def stuff(body: bytes) -> bytes:
    """Insert an extra 0xFD after every FF FF FD inside INST..PARAMS, so a header never appears in a payload."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)
    return body.replace(b"\xff\xff\xfd", b"\xff\xff\xfd\xfd")


def unstuff(body: bytes) -> bytes:
    if b"\xff\xff\xfd\xfd" not in body:
        return bytes(body)
    return body.replace(b"\xff\xff\xfd\xfd", b"\xff\xff\xfd")


def _frame(dxl_id: int, body: bytes) -> bytes:
    body = stuff(body)
    n = len(body) + 2
    pkt = HEADER + bytes((dxl_id, n & 0xFF, n >> 8)) + body
    c = crc16(pkt)
    return pkt + bytes((c & 0xFF, c >> 8))


def instruction_packet(dxl_id: int, instruction: int, params: bytes = b"") -> bytes:
    return _frame(dxl_id, bytes((instruction,)) + bytes(params))


def status_packet(dxl_id: int, error: int, params: bytes = b"") -> bytes:
    return _frame(dxl_id, bytes((STATUS, error)) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """One decoded packet. For a status packet `instruction` is 0x55 and `params` starts with the error byte."""

    id: int
    instruction: int
    params: bytes
    crc_ok: bool = True

    @property
    def error(self) -> int:
        return self.params[0] if self.instruction == STATUS and self.params else 0

    @property
    def data(self) -> bytes:
        return self.params[1:] if self.instruction == STATUS else self.params


class PacketParser:
    """Incremental decoder for a byte stream: skips garbage before a header, checks CRC, removes stuffing.

    Packets whose CRC fails are still returned (crc_ok=False) so a servo can answer with a CRC error.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        buf = self._buf
        buf += data
        out: list[Packet] = []
        while True:
            i = buf.find(b"\xff\xff\xfd")
            if i < 0:
                # keep a possible partial header at the end
                keep = 2 if buf.endswith(b"\xff\xff") else 1 if buf.endswith(b"\xff") else 0
                del buf[: len(buf) - keep]
                return out
            if i:
                del buf[:i]
            if len(buf) < 7:
                return out
            if buf[3] != 0x00:  # FF FF FD FD is stuffing, not a header; anything else is not a header either
                del buf[:1]
                continue
            n = buf[5] | (buf[6] << 8)
            if n < 3 or n > MAX_LENGTH:
                del buf[:1]
                continue
            total = 7 + n
            if len(buf) < total:
                return out
            raw = bytes(buf[:total])
            del buf[:total]
            crc_ok = crc16(raw[:-2]) == (raw[-2] | (raw[-1] << 8))
            body = unstuff(raw[7:-2])
            out.append(Packet(raw[4], body[0], body[1:], crc_ok))


def parse_packets(data: bytes) -> list[Packet]:
    return PacketParser().feed(data)
