"""The streamed policy export (finetune.policy_export via train.export_policy): no second model, the hub key
layout, LoRA merged per weight, EMA averages, bf16 for pi0 whatever the base's config.json says; its peak memory
(a child process on a model of a few hundred MB); inference builds bf16 for pi0 unless fp32 is asked for."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from finetune import train as T
from finetune.checkpoint import TIED_ALIAS, build_model, inference_dtype, load_pi0, random_init_, save_pi0
from finetune.lora import merge_lora_
from finetune.model.pi0 import param_dtype, random_observation
from finetune.model_config import Pi0Config
from finetune.policy_folder import load_policy
from finetune.precision import OptimConfig
from finetune.synthetic_data import SyntheticData
from pi0_helpers import reference_hub_keys
from train_helpers import ROOT, env

# the tiny dims under another name: not one of the float32 CPU variants, so it is exported and loaded the way the
# full-size pi0 is (bf16), while staying small enough for a unit test
PI0_LIKE = Pi0Config.variant("pi0_tiny").replace(name="pi0_like")


def _cfg(out, **kw) -> T.TrainConfig:
    base = dict(dataset="synthetic", out=str(out), base="random", model="pi0_tiny", precision="bf16-amp",
                gradient_checkpointing=False, steps=1, batch_size=1, num_workers=0, val_every=0,
                optim=OptimConfig(warmup_steps=0, decay_steps=2))
    base.update(kw)
    return T.TrainConfig(**base)


def _trained_like(policy, seed: int) -> dict[str, torch.Tensor]:
    """Moves every trainable weight (adapters included: lora_B starts at 0) and returns EMA-like averages that
    differ from the weights, so the export must pick the averages."""
    g = torch.Generator().manual_seed(seed)
    shadow = {}
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.05)
                shadow[n] = p.detach().float() + torch.randn(p.shape, generator=g) * 0.02
    return shadow


def _actions(model, seed: int = 0) -> torch.Tensor:
    obs = random_observation(model.config, 1, generator=torch.Generator().manual_seed(seed))
    noise = torch.randn(1, model.config.action_horizon, model.config.action_dim,
                        generator=torch.Generator().manual_seed(seed + 1))
    return model.sample_actions(obs, noise=noise, num_steps=3).float()


@pytest.mark.parametrize("lora", [True, False])
def test_streamed_export_equals_merging_a_copy(tmp_path, lora):
    """The export of a LoRA + EMA training model (bf16 frozen base, fp32 trainable weights, base config float32)
    against today's way, done on a copy: EMA swapped in, peft's merge, cast to bf16."""
    cfg = _cfg(tmp_path / "run", lora=lora)
    policy = T.build_policy(cfg, None, PI0_LIKE, "bf16-amp", torch.device("cpu"))
    shadow = _trained_like(policy, seed=1)
    ref = copy.deepcopy(policy)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            if n in shadow:
                p.copy_(shadow[n])
    if lora:
        merge_lora_(ref)
    ref_fp32 = copy.deepcopy(ref).float()  # the merged weights before any bf16 rounding
    for n, p in ref.named_parameters():
        p.data = p.data.to(param_dtype(n, torch.bfloat16))
    seen = []
    out = T.export_policy(tmp_path / "run", policy, shadow, SyntheticData(policy.config, 1, 0), cfg, None, 5,
                          T.Dist(), seen.append, PI0_LIKE.dtype)

    stored = load_file(str(out / "model.safetensors"))
    assert set(stored) == set(reference_hub_keys(PI0_LIKE, with_expert_lm_head=False)) and TIED_ALIAS not in stored
    want = {k: v for k, v in ref.state_dict().items() if k != TIED_ALIAS}
    assert set(want) == set(stored)
    for k, v in want.items():
        assert stored[k].dtype == v.dtype and torch.equal(stored[k], v), k  # bit for bit today's merge, in bf16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = load_policy(out).model
    assert loaded.compute_dtype == torch.bfloat16 and loaded.config.name == "pi0_like"
    a, b = _actions(loaded), _actions(ref_fp32)
    assert (a - b).abs().max() < 0.05 * max(1.0, b.abs().max().item())  # bf16 against the fp32 merge
    assert not torch.equal(_actions(ref_fp32), _actions(copy.deepcopy(policy).float()))  # EMA, LoRA mattered
    assert any(type(e).__name__ == "PolicySaved" for e in seen)


def test_cpu_models_keep_float32_and_pi0_becomes_bf16(tmp_path):
    """inference_dtype: the float32 CPU variants stay float32; a float32 pi0 config (lerobot/pi0_base's) is built
    in bf16 for inference and export unless the caller asks for float32."""
    full = Pi0Config.variant("pi0").replace(dtype="float32")
    assert inference_dtype(full) == "bfloat16" and inference_dtype(full, "float32") == "float32"
    for v in ("pi0_tiny", "pi0_small", "pi0_dummy"):
        assert inference_dtype(Pi0Config.variant(v)) == "float32", v
    assert inference_dtype(Pi0Config.variant("pi0_tiny").replace(dtype="bfloat16")) == "bfloat16"
    assert inference_dtype(PI0_LIKE) == "bfloat16"  # another model's dims under a CPU variant's dtype
    bigger_tiny = Pi0Config.variant("pi0_tiny").replace(vocab_size=4096)
    assert inference_dtype(bigger_tiny) == "bfloat16"  # a known name does not make other dims a CPU model

    model = random_init_(build_model(PI0_LIKE, "meta"), "cpu", seed=2)  # stored as float32, like pi0_base
    save_pi0(model, tmp_path / "base")
    assert json.loads((tmp_path / "base" / "config.json").read_text())["dtype"] == "float32"
    assert load_pi0(tmp_path / "base").compute_dtype == torch.bfloat16
    lm = "paligemma_with_expert.paligemma.lm_head.weight"
    assert load_pi0(tmp_path / "base").state_dict()[lm].dtype == torch.bfloat16
    assert load_pi0(tmp_path / "base", dtype="float32").state_dict()[lm].dtype == torch.float32
    (tmp_path / "base" / "policy.json").write_text(json.dumps({"format": "aloha-workbench/policy", "version": 1}))
    assert load_policy(tmp_path / "base").model.compute_dtype == torch.bfloat16
    assert load_policy(tmp_path / "base", dtype="float32").model.compute_dtype == torch.float32
    # the trainer's view of such a base: its config is the bf16 one (training builds its own dtypes anyway)
    _, mc = T.resolve_base(_cfg(tmp_path / "run", base=str(tmp_path / "base")), lambda e: None)
    assert mc.dtype == "bfloat16" and mc.name == "pi0_like"
    _, tiny = T.resolve_base(_cfg(tmp_path / "run"), lambda e: None)
    assert tiny.dtype == "float32"


def test_trained_pi0_like_run_exports_bf16_from_a_float32_base(tmp_path):
    """Through train(): a float32 base config (pi0_base's case) gives a bf16 policy folder, LoRA merged."""
    model = random_init_(build_model(PI0_LIKE, "meta"), "cpu", seed=2)
    save_pi0(model, tmp_path / "base")
    out = T.train(_cfg(tmp_path / "run", base=str(tmp_path / "base"), lora=True, steps=2, save_every=2))
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    stored = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k or "base_layer" in k for k in stored)
    for k, v in stored.items():
        assert v.dtype == param_dtype(k, torch.bfloat16), k


CHILD = r"""
import json, sys, torch
from pathlib import Path
from finetune import train as T
from finetune.model_config import GemmaConfig, Pi0Config, SiglipConfig
from finetune.precision import OptimConfig
from finetune.synthetic_data import SyntheticData
import finetune.policy_export, finetune.policy_folder, peft.tuners.lora  # noqa: F401 - imported before measuring

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

out = Path(sys.argv[1])
# ~190 M parameters (0.44 GB in training): the model dominates the process. Its largest tensor is the frozen bf16
# embedding (96000 x 1024, 197 MB: it must be written as it is, not copied); its largest adapted weight a
# 4096 x 1024 MLP matrix (16 MB in fp32 while merged)
wide = Pi0Config(name="pi0_wide", vocab_size=96000,
                 paligemma=GemmaConfig(width=1024, depth=4, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=128),
                 expert=GemmaConfig(width=512, depth=4, mlp_dim=2048, num_heads=8, num_kv_heads=1, head_dim=128),
                 vision=SiglipConfig(width=384, depth=4, mlp_dim=1536, num_heads=6, image_size=56), dtype="float32")
cfg = T.TrainConfig(dataset="synthetic", out=str(out), base="random", model="pi0", lora=True, precision="bf16-amp",
                    gradient_checkpointing=False, steps=1, batch_size=1, num_workers=0,
                    optim=OptimConfig(warmup_steps=0, decay_steps=2))
policy = T.build_policy(cfg, None, wide, "bf16-amp", torch.device("cpu"))
ema = {n: p.detach().float().clone() for n, p in policy.named_parameters() if p.requires_grad}
model_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
model_bytes += sum(t.numel() * t.element_size() for t in ema.values())
Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on is the export's
before = status("VmRSS")
T.export_policy(out, policy, ema, SyntheticData(policy.config, 1, 0), cfg, None, 1, T.Dist(), lambda e: None,
                "float32")
print(json.dumps({"model_bytes": model_bytes, "before": before, "peak": status("VmHWM"),
                  "file_bytes": (out / "policy" / "model.safetensors").stat().st_size}))
"""


def test_export_adds_a_small_fraction_of_the_model_to_the_peak(tmp_path):
    """Memory, not time: a child process (its own VmHWM, reset right before the export) builds a LoRA training
    model of ~190 M parameters (bf16 base, fp32 trainable weights, an fp32 EMA) and exports it; the export's
    added peak must stay a small fraction of the model (merging into a second model adds about the whole model,
    twice that in fp32)."""
    # glibc's dynamic mmap threshold would keep freed 1-32 MB temporaries in the heap (RSS) and count them again
    # and again; pinned, every large block is returned on free and the peak is what the export holds at once
    res = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "run")],
                         env={**env(), "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}, cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    added = r["peak"] - r["before"]
    assert r["model_bytes"] > 400e6 and r["file_bytes"] > 350e6
    assert added < 0.15 * r["model_bytes"], (added / 1e6, r["model_bytes"] / 1e6)
