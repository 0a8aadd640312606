"""`workbench rig ...`: presets, validation (and the devices: absent vs wrong), a starter file, servo status and
reboot, and the first day with a real ALOHA: detect, udev, calibrate (logic in workbench.rig_setup)."""
from __future__ import annotations

import sys
from pathlib import Path

from workbench.config import PRESETS, load_rig_config, preset_text


def register(sub) -> None:
    p = sub.add_parser("rig", help="rig presets, validation, status, reboot",
                       description="Inspect and validate rig configurations, check servo health, reboot a faulted servo.")
    rs = p.add_subparsers(dest="rig_command", metavar="ACTION", required=True)
    rs.add_parser("presets", help="list the built-in rigs").set_defaults(func=_presets)
    c = rs.add_parser("check", help="validate a rig file or preset, then look for its devices",
                      description="Exit 0: valid and every device answers as described. 2: the file is wrong (or a "
                                  "device is another arm / camera than it says). 3: valid, but devices are absent.")
    c.add_argument("rig")
    c.add_argument("--no-devices", action="store_true", help="validate the file only")
    c.set_defaults(func=_check)
    d = rs.add_parser("detect", help="find the arms' buses and the cameras, and propose a rig file",
                      description="List USB serial adapters and ping the Dynamixel servos on each (leader wx250s / "
                                  "follower vx300s), list RealSense and V4L2 cameras, then ask you to move one arm "
                                  "(left / right) and wave in front of each camera (its name), and write a rig file "
                                  "with stable device paths.")
    d.add_argument("--port", action="append", default=[], help="also try this serial device (repeatable)")
    d.add_argument("--camera", action="append", default=[], help="also offer this camera device or video file")
    d.add_argument("--virtual", action="store_true",
                   help="detect the emulated virtual rig (its emulated operator moves the arms when asked)")
    d.add_argument("--out", type=Path, help="write the proposed rig file here (default: print it)")
    d.add_argument("--force", action="store_true", help="overwrite --out")
    d.add_argument("--name", default="aloha", help="rig name in the file")
    d.add_argument("--seconds", type=float, default=10.0, help="how long each move / wave step waits")
    d.set_defaults(func=_detect)
    u = rs.add_parser("udev", help="write udev rules naming each bus and camera by serial number",
                      description="Rules for the rig file's serial ports and V4L2 cameras (ttyDXL_<arm>, CAM_<NAME>), "
                                  "with the FTDI latency timer at 1 ms; prints the one install command. --check: do "
                                  "the names exist now?")
    u.add_argument("--rig", required=True)
    u.add_argument("--out", type=Path, default=Path("99-aloha-workbench.rules"))
    u.add_argument("--check", action="store_true", help="only check that the names exist (after installing)")
    u.set_defaults(func=_udev)
    k = rs.add_parser("calibrate", help="measure the grippers' open / closed readings into the rig's [gripper] table",
                      description="Leaders: squeeze and release each gripper when asked. Followers: each gripper "
                                  "closes and opens slowly (current-limited, through the safety layer). Inconsistent "
                                  "values are refused. Writes the [gripper] table into --out (default: the rig file).")
    k.add_argument("--rig", required=True)
    k.add_argument("--out", type=Path, help="write the calibrated rig file here (default: update --rig in place)")
    k.add_argument("--leader-seconds", type=float, default=6.0)
    k.add_argument("--followers-only", action="store_true")
    k.set_defaults(func=_calibrate)
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
    from workbench.rig_setup.device_check import check_devices

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
    if args.no_devices or cfg.backend != "dynamixel":
        return 0
    report = check_devices(cfg)
    for f in report.findings:
        print(f"  {f.status.upper():6s} {f.what}: {f.detail}")
    if report.wrong:
        print(f"error: the file is valid but wrong for what is plugged in ({len(report.wrong)} device(s)); "
              f"`workbench rig detect` proposes a file for this rig", file=sys.stderr)
        return 2
    if report.absent:
        print(f"devices absent: {len(report.absent)} (the file itself is valid): plug them in / power the arms, "
              f"then check again", file=sys.stderr)
        return 3
    return 0


def _ask(text: str) -> None:
    print(text, flush=True)
    if sys.stdin.isatty():
        input("  press Enter when ready, then do it ")


def _detect(args) -> int:
    from workbench.rig_setup import setup
    from workbench.rig_setup.assign import AssignmentError
    from workbench.rig_setup.rig_file import CameraPlan

    virtual = None
    ports = list(args.port)
    if args.virtual:
        from drivers.virtual import VirtualRig

        virtual = VirtualRig(hand_motion=False)
        ports += list(virtual.start().values())
    try:
        det = setup.detect(tuple(ports), tuple(args.camera), timeout_ms=50.0 if virtual else 10.0,
                           progress=lambda m: print(f"  {m}", flush=True))
        for line in det.lines():
            print(line)
        problems = det.problems()
        if problems:
            print("cannot propose a rig file yet:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        session = setup.SetupSession(det, backend="virtual" if virtual else "dynamixel", name=args.name)
        names = {p: n for n, p in virtual.paths.items()} if virtual else {}
        for role in ("leader", "follower"):
            if not session.ports(role):
                continue
            _ask(f"Move the LEFT {role} arm by hand (any joint, a few centimetres) within {args.seconds:.0f} s"
                 + (" (followers: torque is off, support the arm)" if role == "follower" else ""))
            with session.arm_watch(role, timeout_ms=50.0 if virtual else 10.0) as watch:
                watch.baseline()
                if virtual:  # the emulated operator takes the left arm of this role
                    virtual.grab(f"{role}_left", "waist", rad=0.6)
                try:
                    changes = watch.watch(args.seconds)
                finally:
                    if virtual:
                        virtual.release_grab(f"{role}_left", "waist")
            try:
                port = session.assign_moved(role, "left", changes)
            except AssignmentError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"  {role}_left = {port}" + (f" (emulated {names[port]})" if port in names else ""))
        extra = ()
        if virtual:
            extra = tuple(CameraPlan(n, "synthetic", {"seed": i}, fps=50)
                          for i, n in enumerate(("cam_high", "cam_left_wrist", "cam_right_wrist")))
        elif det.cameras:
            rc = _wave(session, args.seconds)
            if rc:
                return rc
        plan = session.plan(extra_cameras=extra)
        text = plan.to_toml()
        plan.config(str(args.out or "<proposed rig>"))
        if args.out is None:
            print(text)
        else:
            setup.save(plan, args.out, overwrite=args.force)
            print(f"wrote {args.out}; next: `workbench rig calibrate --rig {args.out}`"
                  + ("" if virtual else f", `workbench rig udev --rig {args.out}`"))
        return 0
    finally:
        if virtual is not None:
            virtual.stop()


def _wave(session, seconds: float) -> int:
    import time

    from workbench.rig_setup.assign import AssignmentError
    from workbench.rig_setup.cameras import CameraWatch
    from workbench.rig_setup.rig_file import CAMERA_NAMES

    cams = session.unnamed_cameras()
    with CameraWatch(cams) as watch:
        for name in CAMERA_NAMES[:len(cams)]:
            if len(session.unnamed_cameras()) == 1:
                last = session.unnamed_cameras()[0]
                session.name_camera(last.ident, name)
                print(f"  {name} = {last.ident} (the last one)")
                break
            watch.take_baseline()
            _ask(f"Wave a hand close in front of the camera that is {name}, within {seconds:.0f} s")
            best: dict[str, float] = {}
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                for k, v in watch.changes().items():
                    best[k] = max(best.get(k, 0.0), v)
                time.sleep(0.1)
            try:
                ident = session.assign_changed_camera(name, best)
            except AssignmentError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"  {name} = {ident}")
    return 0


def _udev(args) -> int:
    from workbench.rig_setup import udev
    from workbench.rig_setup.cameras import list_v4l2
    from workbench.rig_setup.serial_ports import list_serial_adapters

    cfg = load_rig_config(args.rig)
    ports = [a.settings["port"] for a in cfg.arms if a.settings.get("port")]
    devices, skipped = udev.devices_for_rig(cfg, list_serial_adapters(ports), list_v4l2())
    for line in skipped:
        print(f"  skipped {line}")
    if args.check:
        names = [udev.NamedDevice(udev.serial_name(a.name), "tty", "") for a in cfg.arms] + \
                [udev.NamedDevice(udev.camera_name(c.name), "video4linux", "") for c in cfg.cameras if c.kind == "opencv"]
        missing = udev.missing_names(names)
        for n in names:
            print(f"  {'MISSING' if n.path in missing else 'ok     '} {n.path}")
        if missing:
            print(f"error: {len(missing)} name(s) missing: install the rules (`workbench rig udev --rig {args.rig}`), "
                  f"replug the devices, then check again", file=sys.stderr)
            return 1
        return 0
    if not devices:
        print("error: none of the rig file's devices is plugged in now: plug in the U2D2s and cameras first",
              file=sys.stderr)
        return 1
    try:
        text = udev.rules_text(devices)
    except udev.UdevError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(text)
    print(text, end="")
    print(f"wrote {args.out}; install with:\n  {udev.install_command(str(args.out))}\n"
          f"then replug the devices, `workbench rig udev --rig {args.rig} --check`, and use the /dev/ttyDXL_* and "
          f"/dev/CAM_* names in the rig file")
    return 0


def _calibrate(args) -> int:
    from workbench.backends import build_rig
    from workbench.config import parse_rig_config
    from workbench.rig_setup import gripper_calibration as gc
    from workbench.rig_setup.rig_file import replace_gripper

    cfg = load_rig_config(args.rig)
    if cfg.backend == "sim":
        print("error: a simulated rig's grippers are the model's; nothing to calibrate", file=sys.stderr)
        return 2
    probe = parse_rig_config(replace_gripper(cfg.text, gc.widened(cfg.gripper), "calibration search range"),
                             cfg.source)
    rig = build_rig(probe)
    rig.connect(progress=lambda m: print(f"  {m}", flush=True))
    try:
        ms = gc.measure_all(rig, leader_s=args.leader_seconds, leaders=not args.followers_only,
                            prompt=lambda t: _ask(t))
        for m in ms:
            print(f"  {m.describe()}")
        g = gc.combine(cfg.gripper, ms)
    except gc.CalibrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        rig.disconnect()
    out = args.out or Path(cfg.source)
    text = replace_gripper(cfg.text, g)
    parse_rig_config(text, str(out))
    out.write_text(text)
    print(f"wrote the measured [gripper] table to {out}")
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
