"""USB serial adapters through pyserial's list_ports: vendor / product ids, serial number, the stable path.

`/dev/ttyUSB0`-style names depend on plug order and change between boots; `/dev/serial/by-id/...` (made by
udev from the adapter's vendor, product and serial) and our own udev names (`workbench rig udev`) do not.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Iterable

# Adapters a Dynamixel bus sits behind: the ROBOTIS U2D2 is an FTDI FT232H (0403:6014); other FTDI chips and
# the ROBOTIS OpenRB / U2D2 PHB clones show up with these ids too.
DYNAMIXEL_ADAPTERS: dict[tuple[int, int], str] = {
    (0x0403, 0x6014): "FTDI FT232H (ROBOTIS U2D2)",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x2F5D, 0x2202): "ROBOTIS OpenRB-150",
}
BY_ID_DIR = "/dev/serial/by-id"


@dataclass(frozen=True)
class SerialAdapter:
    device: str  # what the kernel named it now (/dev/ttyUSB0) or a candidate path given by the user
    by_id: str | None  # /dev/serial/by-id/usb-FTDI_..._FT6Z5XXX-if00-port0, stable across boots
    vid: int | None
    pid: int | None
    serial: str | None  # the USB serial number udev rules key on
    manufacturer: str | None = None
    product: str | None = None

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "-"

    @property
    def kind(self) -> str:
        if self.vid is None:
            return "not a USB adapter (given as a candidate)"
        return DYNAMIXEL_ADAPTERS.get((self.vid, self.pid), self.product or "USB serial adapter")

    @property
    def stable_path(self) -> str:
        """The path a rig file should name until udev rules exist: by-id when there is one."""
        return self.by_id or self.device

    def describe(self) -> str:
        serial = self.serial or "no serial"
        return f"{self.device}  {self.usb_id}  {self.kind}  serial {serial}  stable path {self.stable_path}"


def by_id_links(directory: str = BY_ID_DIR) -> dict[str, str]:
    """Resolved device -> its by-id symlink."""
    out: dict[str, str] = {}
    for link in sorted(glob.glob(os.path.join(directory, "*"))):
        out.setdefault(os.path.realpath(link), link)
    return out


def list_serial_adapters(candidates: Iterable[str] = (), *, usb_only: bool = True) -> list[SerialAdapter]:
    """Every USB serial adapter pyserial sees (built-in ttyS ports are left out), plus each `candidates` path
    (e.g. the virtual rig's or an emulator's pseudo-terminals) with whatever pyserial knows about it."""
    from serial.tools import list_ports

    links = by_id_links()
    ports = {os.path.realpath(p.device): p for p in list_ports.comports()}
    out: list[SerialAdapter] = []
    seen: set[str] = set()

    def add(device: str, info) -> None:
        real = os.path.realpath(device)
        if real in seen:
            return
        seen.add(real)
        out.append(SerialAdapter(
            device=device, by_id=links.get(real), vid=getattr(info, "vid", None), pid=getattr(info, "pid", None),
            serial=getattr(info, "serial_number", None), manufacturer=getattr(info, "manufacturer", None),
            product=getattr(info, "product", None)))

    for real, info in sorted(ports.items()):
        if usb_only and info.vid is None:
            continue
        add(info.device, info)
    for path in candidates:
        add(path, ports.get(os.path.realpath(path)))
    return out


NOTHING_FOUND = ("no USB serial adapter found: plug in each arm's U2D2 (USB) and power the arms; `dmesg | tail` "
                 "should show 'FTDI USB Serial Device converter now attached to ttyUSB0'")
