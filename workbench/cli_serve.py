"""`workbench serve POLICY`: serve a policy folder over openpi's websocket protocol (serving.server).

POLICY is a trained policy folder, a hub id, or a replay folder (a recorded episode's actions served as chunks):
serving.policies decides what is served. `--port 0` binds a free port; `--ready-file PATH` then tells a supervising
process (workbench.deploy.policy_launcher.LocalPolicyServer) where: once the socket is bound, PATH is written
atomically with {"host", "port", "url", "pid", "policy"} as JSON. `--exit-with-parent` ends the server when its stdin
closes, so a child server never outlives the app that started it. `--tls-cert CERT --tls-key KEY` serves `wss://`
(TLS): off loopback the api key and the actions then no longer travel in clear.

A policy trained elsewhere is served too (finetune.foreign_policy): a LeRobot pi0 folder as it is, an openpi PyTorch
checkpoint (`<step>/model.safetensors` + `assets/`) with `--config NAME` naming how it was trained
(`workbench serve ckpts/run/30000 --config pi0_aloha_sim`); `--tokenizer`, `--asset-id` and `--camera-map` say
what such a checkpoint does not.
"""
from __future__ import annotations

import argparse

from workbench.cli_help import DefaultsHelp
import asyncio
import json
import logging
import os
import sys
import threading
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a policy to openpi clients (websocket + msgpack)",
        description="Serve a trained policy folder (or hub id, or a replay folder) with openpi's remote inference "
                    "protocol; GET /healthz answers 200. Any host but a loopback address needs --api-key "
                    "(or WORKBENCH_API_KEY); clients then send `Authorization: Api-Key <key>` (an address sending "
                    "5 wrong keys within a minute is refused for 5 minutes). Off loopback, serve TLS "
                    "(--tls-cert/--tls-key: wss://), or the key and the actions travel in clear.",
        formatter_class=DefaultsHelp)
    p.add_argument("policy", metavar="POLICY", help="policy folder (runs/NAME/policy), hub id, or replay folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (see --ready-file)")
    p.add_argument("--api-key", default=None, help="required unless --host is loopback [env WORKBENCH_API_KEY]")
    p.add_argument("--tls-cert", default=None, metavar="CERT",
                   help="PEM certificate (chain): serve wss:// (clients verify it; for a self-signed lab "
                        "certificate they trust its CA: WORKBENCH_TLS_CA=lab-ca.pem)")
    p.add_argument("--tls-key", default=None, metavar="KEY", help="the PEM private key of --tls-cert")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--rig", help="preset or rig TOML: refuse a policy trained for a different rig (cameras, joint "
                                 "layout, control rate, gripper constants); without it nothing is checked here, "
                                 "clients check the announced metadata on their side")
    p.add_argument("--num-steps", type=int, default=None, help="denoising steps [default: the model's]")
    g = p.add_argument_group("a policy trained elsewhere (LeRobot pi0 folder, openpi PyTorch checkpoint)")
    g.add_argument("--config", default=None, metavar="NAME",
                   help="how an openpi checkpoint was trained: an openpi config (pi0_aloha, pi0_aloha_sim, ...) or "
                        "one of ours (pi0, tiny, a model variant); for a LeRobot folder, the model architecture")
    g.add_argument("--tokenizer", default=None, metavar="PATH",
                   help="the SentencePiece tokenizer.model [default: the checkpoint's, else PaliGemma's from the hub]")
    g.add_argument("--asset-id", default=None, metavar="ID",
                   help="which assets/<ID>/norm_stats.json of an openpi checkpoint [default: the only one]")
    g.add_argument("--camera-map", default=None, metavar="POLICY=RIG,...",
                   help="policy camera -> rig camera pairs where the names do not say it (e.g. top=cam_high)")
    p.add_argument("--ready-file", default=None, metavar="PATH",
                   help="once listening, write {host, port, url, pid, policy} as JSON to PATH (atomically)")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="exit when stdin reaches end of file (the supervising process is gone)")
    p.set_defaults(func=_run)


def _write_ready(path: str, host: str, port: int, policy: str, scheme: str = "ws") -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".partial")
    tmp.write_text(json.dumps({"host": host, "port": port, "url": f"{scheme}://{host}:{port}", "pid": os.getpid(),
                               "policy": policy}) + "\n")
    os.replace(tmp, target)


def _watch_stdin() -> None:
    def run() -> None:
        try:  # os.read, not sys.stdin: a daemon thread blocked in a buffered read aborts interpreter shutdown
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):
                pass
        except (OSError, ValueError):
            pass
        logging.getLogger(__name__).warning("stdin closed (the parent process is gone): exiting")
        os._exit(0)

    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def _run(args: argparse.Namespace) -> int:
    from serving.server import PolicyServer, ServeConfig

    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)  # `serving ... on ws://...` and refused clients are worth seeing
    if not root.handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.exit_with_parent:
        _watch_stdin()
    config = ServeConfig(host=args.host, port=args.port, api_key=args.api_key or os.environ.get("WORKBENCH_API_KEY"),
                         tls_cert=args.tls_cert, tls_key=args.tls_key)
    try:
        config.check()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        runtime = _load(args)
    except Exception as e:  # one readable line for the supervisor (LocalPolicyServer shows it), -v: the traceback
        if getattr(args, "verbose", False):
            raise
        print(f"error: cannot serve {args.policy}: {e}", file=sys.stderr)
        return 2
    server = PolicyServer(runtime, config)
    on_ready = None
    if args.ready_file:
        def on_ready(port: int) -> None:
            _write_ready(args.ready_file, args.host, port, str(args.policy), config.scheme)
    try:
        asyncio.run(server.serve(on_ready=on_ready))
    except KeyboardInterrupt:
        pass
    return 0


def _load(args: argparse.Namespace):
    from serving.policies import load_served_policy

    rig = None
    if args.rig:
        from workbench.config import load_rig_config

        rig = load_rig_config(args.rig)
    else:
        logging.getLogger(__name__).warning(
            "rig NOT checked here (no --rig): this server does not compare %s with a rig; clients check it on their "
            "side from the metadata it announces (cameras, joint names, control rate, backend, gripper constants)",
            args.policy)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from finetune.foreign_policy import ForeignOptions

    foreign = ForeignOptions(config=args.config, tokenizer=args.tokenizer, asset_id=args.asset_id,
                             camera_map=ForeignOptions.parse_camera_map(args.camera_map))
    return load_served_policy(args.policy, device=device, rig=rig, num_steps=args.num_steps, foreign=foreign)
