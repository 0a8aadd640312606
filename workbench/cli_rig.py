"""`workbench rig ...`: presets, validation, a starter file, servo status and reboot."""
from __future__ import annotations

import sys
from pathlib import Path

from workbench.config import PRESETS, load_rig_config, preset_text


def register(sub) -> None:
    p = sub.add_parser("rig", help="rig presets, validation, status, reboot",
                       description="Inspect and validate rig configurations, check servo health, reboot a faulted servo.")
    rs = p.add_subparsers(dest="rig_command", metavar="ACTION", required=True)
    rs.add_parser("presets", help="list the built-in rigs").set_defaults(func=_presets)
    c = rs.add_parser("check", help="validate a rig file or preset and print what it describes")
    c.add_argument("rig")
    c.set_defaults(func=_check)
    i = rs.add_parser("init", help="write a rig TOML file to edit, starting from a preset")
    i.add_argument("path", type=Path)
    i.add_argument("--from", dest="preset", default="aloha", choices=PRESETS)
    i.add_argument("--force", action="store_true", help="overwrite an existing file")
    i.set_defaults(func=_init)
    s = rs.add_parser("status", help="connect and print per-servo torque, temperature, voltage and errors")
    s.add_argument("--rig", required=True)
    s.set_defaults(func=_status)
    r = rs.add_parser("reboot", help="reboot one servo to clear a hardware error (overload...)")
    r.add_argument("--rig", required=True)
    r.add_argument("--arm", required=True, help="e.g. follower_left")
    r.add_argument("--joint", required=True, help="e.g. gripper")
    r.set_defaults(func=_reboot)


def _presets(args) -> int:
    for name in PRESETS:
        cfg = load_rig_config(name)
        print(f"{name:20s} backend={cfg.backend:9s} cameras={','.join(c.name for c in cfg.cameras)}")
    return 0


def _check(args) -> int:
    cfg = load_rig_config(args.rig)
    print(f"{cfg.source}: OK — {cfg.name} ({cfg.backend}) at {cfg.control_hz:g} Hz, gripper constants {cfg.gripper_set}")
    for a in cfg.arms:
        extra = " ".join(f"{k}={v}" for k, v in a.settings.items())
        print(f"  arm {a.name:15s} {a.role:8s} {a.side:5s} {extra}")
    for c in cfg.cameras:
        extra = " ".join(f"{k}={v}" for k, v in c.settings.items())
        print(f"  camera {c.name:15s} {c.kind:9s} {c.width}x{c.height}@{c.fps} {extra}")
    s = cfg.safety
    print(f"  safety: step {s.max_joint_step} rad/tick, gripper {s.max_gripper_step}/tick, e-stop {s.estop_action}")
    return 0


def _init(args) -> int:
    if args.path.exists() and not args.force:
        print(f"error: {args.path} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    args.path.write_text(preset_text(args.preset))
    load_rig_config(args.path)
    print(f"wrote {args.path} from preset {args.preset}; edit ports, cameras and limits, then `workbench rig check {args.path}`")
    return 0


def _status(args) -> int:
    from workbench.backends import build_rig

    with build_rig(load_rig_config(args.rig)) as rig:
        for st in rig.arm_status():
            print(f"{st.name} ({st.role}) {'connected' if st.connected else 'DISCONNECTED'}")
            for j in st.joints:
                err = f" ERROR: {j.message}" if j.hardware_error else ""
                print(f"  {j.name:14s} id={j.servo_id} torque={j.torque} temp={j.temperature_c}C volt={j.voltage_v}V{err}")
    return 0


def _reboot(args) -> int:
    from workbench.backends import build_rig

    with build_rig(load_rig_config(args.rig)) as rig:
        rig.reboot(args.arm, args.joint)
        print(f"rebooted {args.arm}.{args.joint}")
    return 0
