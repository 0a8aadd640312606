"""`workbench serve POLICY`: serve a policy folder over openpi's websocket protocol (finetune.serve)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a policy to openpi clients (websocket + msgpack)",
        description="Serve a trained policy folder (or hub id) with openpi's remote inference protocol; "
                    "GET /healthz answers 200. Any host but a loopback address needs --api-key "
                    "(or WORKBENCH_API_KEY); clients then send `Authorization: Api-Key <key>`.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("policy", metavar="POLICY", help="policy folder (runs/NAME/policy) or hub id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=None, help="required unless --host is loopback [env WORKBENCH_API_KEY]")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    p.add_argument("--rig", help="preset or rig TOML: refuse a policy trained for a different rig")
    p.add_argument("--num-steps", type=int, default=None, help="denoising steps [default: the model's]")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    from finetune.runtime import PolicyRuntime
    from finetune.serve import PolicyServer, ServeConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = ServeConfig(host=args.host, port=args.port, api_key=args.api_key or os.environ.get("WORKBENCH_API_KEY"))
    try:
        config.check()
    except ValueError as e:
        print(f"error: {e}")
        return 2
    rig = None
    if args.rig:
        from workbench.config import load_rig_config

        rig = load_rig_config(args.rig)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    runtime = PolicyRuntime.load(args.policy, device=device, rig=rig, num_steps=args.num_steps)
    server = PolicyServer(runtime, config)
    try:
        asyncio.run(server.serve())
    except KeyboardInterrupt:
        pass
    return 0
