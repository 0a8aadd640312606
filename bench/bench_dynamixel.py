"""Bus round trips on the virtual rig (4 emulated buses x 9 servos, emulator in its own process).

Prints, per bus: median / p99 of one DynamixelArm.read() (one SYNC READ of 10 bytes from 7 servos, decoded to
ALOHA space) and of one DynamixelArm.command() (one SYNC WRITE of 7 goals; no reply on the bus, so this is the
time to encode and hand the packet to the port). Then a teleop-shaped tick at 50 Hz (read 4 arms, command the 2
followers) and, for comparison, the SDK's stock GroupSyncRead (busy-polling PortHandler) on the same pty.

    python bench/bench_dynamixel.py [--n 500] [--seconds 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _stats(samples: list[float]) -> str:
    a = np.asarray(samples) * 1e3
    return f"median {np.median(a):6.3f} ms   p99 {np.percentile(a, 99):6.3f} ms   max {a.max():6.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500, help="round trips per bus and kind")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the 50 Hz teleop-shaped run")
    args = ap.parse_args()

    from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler

    from drivers.arm import START_POSE
    from drivers.dynamixel import control_table as ct
    from drivers.dynamixel_arm import DynamixelArm
    from drivers.errors import DriverError
    from drivers.virtual import VirtualRig

    with VirtualRig(hand_motion=True) as rig:
        arms = {n: DynamixelArm(c) for n, c in rig.arm_configs().items()}
        for arm in arms.values():
            arm.connect()
        print(f"virtual rig: {len(arms)} buses x 9 servos, emulator pid {rig._proc.pid}")
        goal = np.r_[START_POSE, 0.5]
        for name, arm in arms.items():
            reads, writes = [], []
            for _ in range(args.n):
                t0 = time.perf_counter()
                arm.read()
                reads.append(time.perf_counter() - t0)
            for k in range(args.n):
                g = goal.copy()
                g[0] = 0.2 * np.sin(k / 50)
                t0 = time.perf_counter()
                arm.command(g)
                writes.append(time.perf_counter() - t0)
                arm.read()  # keep the bus in the teleop rhythm (write then read)
            print(f"{name:15s} sync read  {_stats(reads)}")
            print(f"{'':15s} sync write {_stats(writes)}")

        # teleop-shaped: per tick read 4 arms, command both followers with the leaders' pose
        leaders = [arms["leader_left"], arms["leader_right"]]
        followers = [arms["follower_left"], arms["follower_right"]]
        for leader in leaders:
            leader.set_torque(False)
        dt, work, errors = 0.02, [], []
        t_next = time.monotonic()
        t_end = t_next + args.seconds
        while t_next < t_end:
            t0 = time.perf_counter()
            try:
                ql = [a.read().position for a in leaders]
                for f in followers:
                    f.read()
                for f, q in zip(followers, ql):
                    f.command(q)
            except DriverError as exc:
                errors.append(str(exc))
            work.append(time.perf_counter() - t0)
            t_next += dt
            time.sleep(max(0.0, t_next - time.monotonic()))
        print(f"teleop tick (4 reads + 2 writes) at 50 Hz, {len(work)} ticks: {_stats(work)}")
        print(f"communication errors during the run: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))

        for arm in arms.values():
            arm.disconnect()

        # stock SDK (busy-polling port, default 34 ms timeout) on one of the same ptys, for comparison
        port = PortHandler(rig.paths["follower_left"])
        port.openPort()
        port.setBaudRate(1_000_000)
        ph = PacketHandler(2.0)
        gsr = GroupSyncRead(port, ph, ct.PRESENT_BLOCK[0], ct.PRESENT_BLOCK[1])
        for i in (1, 2, 4, 6, 7, 8, 9):
            gsr.addParam(i)
        stock = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            assert gsr.txRxPacket() == COMM_SUCCESS
            stock.append(time.perf_counter() - t0)
        port.closePort()
        print(f"{'stock SDK':15s} sync read  {_stats(stock)}  (GroupSyncRead, raw bytes only)")


if __name__ == "__main__":
    main()
