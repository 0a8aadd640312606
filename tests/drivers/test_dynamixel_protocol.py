"""Protocol 2.0 codec: CRC check vectors, byte stuffing, stream parsing; emulator bus behaviour on the raw pty."""
from __future__ import annotations

import os
import select

import pytest
from dynamixel_sdk import PacketHandler

from drivers.dynamixel import protocol as p

VECTORS = [
    ("FF FF FD 00 01 03 00 01", 0x4E19),  # ping ID 1
    ("FF FF FD 00 01 07 00 02 84 00 04 00", 0x151D),  # read ID 1, 132, 4
    ("FF FF FD 00 FE 09 00 82 84 00 04 00 01 02", 0xFACE),  # sync read IDs 1, 2
    ("FF FF FD 00 01 08 00 55 00 A6 00 00 00", 0xC08C),  # status with 4 data bytes
]


@pytest.mark.parametrize("hexstr,crc", VECTORS)
def test_crc_check_vectors(hexstr, crc):
    data = bytes.fromhex(hexstr)
    assert p.crc16(data) == crc
    assert PacketHandler(2.0).updateCRC(0, list(data), len(data)) == crc  # and the SDK agrees


def test_built_packets_match_reference_bytes():
    assert p.instruction_packet(1, p.PING) == bytes.fromhex("FF FF FD 00 01 03 00 01 19 4E")
    assert p.instruction_packet(1, p.READ, bytes([0x84, 0, 4, 0])) == bytes.fromhex(
        "FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")
    assert p.status_packet(1, 0, bytes([0xA6, 0, 0, 0])) == bytes.fromhex("FF FF FD 00 01 08 00 55 00 A6 00 00 00 8C C0")


def test_byte_stuffing_round_trip():
    body = bytes([p.WRITE, 0x70, 0x00, 0xFF, 0xFF, 0xFD, 0x00, 0xFF, 0xFF, 0xFD])
    stuffed = p.stuff(body)
    assert stuffed == bytes([p.WRITE, 0x70, 0x00, 0xFF, 0xFF, 0xFD, 0xFD, 0x00, 0xFF, 0xFF, 0xFD, 0xFD])
    assert p.unstuff(stuffed) == body
    pkt = p.instruction_packet(7, p.WRITE, body[1:])
    assert pkt[5] | pkt[6] << 8 == len(stuffed) + 2  # LEN counts the stuffed bytes
    (parsed,) = p.parse_packets(pkt)
    assert parsed.crc_ok and parsed.id == 7 and parsed.instruction == p.WRITE and parsed.params == body[1:]
    # the SDK stuffs the same way
    n = len(body) + 2
    raw = list(p.HEADER) + [7, n & 0xFF, n >> 8] + list(body) + [0, 0]
    sdk = PacketHandler(2.0).addStuffing(raw)
    assert bytes(sdk[:-2]) == pkt[:-2]


def test_parser_skips_garbage_and_reassembles_fragments():
    a, b = p.instruction_packet(1, p.PING), p.status_packet(2, 0, b"\x01\x02")
    stream = b"\x00\xff\x13\xff\xff" + a + b"\xff\xff\xfd\xfd" + b
    parser = p.PacketParser()
    out = []
    for k in range(0, len(stream), 3):
        out += parser.feed(stream[k:k + 3])
    assert [(x.id, x.instruction, x.crc_ok) for x in out] == [(1, p.PING, True), (2, p.STATUS, True)]
    assert out[1].data == b"\x01\x02"
    bad = bytearray(a)
    bad[-1] ^= 0xFF
    (x,) = p.parse_packets(bytes(bad))
    assert not x.crc_ok


def _exchange(fd: int, data: bytes, wait: float = 0.3) -> list[p.Packet]:
    os.write(fd, data)
    parser, out = p.PacketParser(), []
    while True:
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return out
        out += parser.feed(os.read(fd, 4096))
        wait = 0.05


def test_emulator_on_raw_pty(dxl_chains):
    """Garbage before a header, broadcast writes unanswered, sync read in list order, CRC errors reported."""
    chain, path = dxl_chains("vx300s")
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        (r,) = _exchange(fd, b"\x42\xff\x00" + p.instruction_packet(1, p.PING))
        assert (r.id, r.error, r.data) == (1, 0, bytes([1120 & 0xFF, 1120 >> 8, r.data[2]]))
        assert _exchange(fd, p.instruction_packet(p.BROADCAST_ID, p.WRITE, bytes([65, 0, 1])), wait=0.1) == []
        assert chain.servo(4).table[65] == 1  # LED on: the broadcast write was executed
        replies = _exchange(fd, p.instruction_packet(p.BROADCAST_ID, p.SYNC_READ, bytes([0, 0, 2, 0, 9, 1, 4])))
        assert [x.id for x in replies] == [9, 1, 4]
        assert [int.from_bytes(x.data, "little") for x in replies] == [1020, 1120, 1120]
        bad = bytearray(p.instruction_packet(2, p.PING))
        bad[-2] ^= 1
        (r,) = _exchange(fd, bytes(bad))
        assert r.error == p.ERR_CRC
        # a shadow executes writes to its Secondary ID but never answers for it
        chain.servo(3).set((12, 1), 2)
        (r,) = _exchange(fd, p.instruction_packet(2, p.WRITE, bytes([65, 0, 0])))
        assert r.id == 2 and chain.servo(3).table[65] == 0
    finally:
        os.close(fd)


def test_stuffed_values_survive_sdk_and_emulator(dxl_chains):
    """A value containing FF FF FD goes SDK -> emulator -> SDK intact (stuffing both ways)."""
    from drivers.dynamixel.bus import DynamixelBus
    from drivers.dynamixel.layout import default_layout

    chain, path = dxl_chains("vx300s")
    bus = DynamixelBus(path, default_layout("vx300s"), timeout_ms=30)
    bus.open()
    try:
        value = 0x00FDFFFF  # bytes FF FF FD 00
        bus.write(1, (112, 4), value)  # Profile Velocity
        assert chain.servo(1).get((112, 4)) == value
        assert bus.read(1, (112, 4)) == value
    finally:
        bus.close()


def test_fast_sync_read_and_bulk_read_through_the_sdk(dxl_chains):
    """Instructions the driver does not use today, checked against the SDK's own group classes."""
    from dynamixel_sdk import COMM_SUCCESS, GroupBulkRead, GroupSyncRead, PortHandler

    chain, path = dxl_chains("vx300s")
    chain.servo(4).set_present(3000)
    port = PortHandler(path)
    assert port.openPort()
    try:
        ph = PacketHandler(2.0)
        fast = GroupSyncRead(port, ph, 132, 4)
        for i in (1, 4, 9):
            fast.addParam(i)
        assert fast.fastSyncRead() == COMM_SUCCESS
        assert [fast.getData(i, 132, 4) for i in (1, 4, 9)] == [2048, 3000, 2048]
        bulk = GroupBulkRead(port, ph)
        bulk.addParam(1, 0, 2)
        bulk.addParam(4, 132, 4)
        assert bulk.txRxPacket() == COMM_SUCCESS
        assert bulk.getData(1, 0, 2) == 1120 and bulk.getData(4, 132, 4) == 3000
    finally:
        port.closePort()
