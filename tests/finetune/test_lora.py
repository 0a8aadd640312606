"""LoRA (peft): openpi's ranks and freeze set, base weights untouched by training, exact merge."""

from __future__ import annotations

import torch

from finetune.lora import FROZEN_PREFIXES, apply_lora, base_name, is_lora, lora_ranks, merge_lora_
from pi0_helpers import tiny_model, tiny_obs


def _train(model, steps: int = 3):
    obs = tiny_obs(model.config, batch=2)
    g = torch.Generator().manual_seed(0)
    actions, noise, t = torch.randn(2, 50, 32, generator=g), torch.randn(2, 50, 32, generator=g), torch.rand(2, generator=g)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model.compute_loss(obs, actions, noise, t).backward()
        opt.step()
    return obs, actions, noise, t


def test_ranks_and_freeze_set_follow_openpi():
    model = apply_lora(tiny_model())
    ranks = lora_ranks(model)
    depth = model.config.paligemma.depth
    assert len(ranks) == 2 * depth * 7  # q, k, v, o, gate, up, down in every layer of both stacks
    assert {r for n, r in ranks.items() if ".language_model." in n} == {16}
    assert {r for n, r in ranks.items() if ".gemma_expert." in n} == {32}
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.dtype == torch.float32, name
        elif name.startswith(FROZEN_PREFIXES):
            assert not p.requires_grad, name  # both Gemma stacks, embedding and norms included
        else:
            assert p.requires_grad, name  # vision tower, projector, state/action projections
    assert is_lora(model) and not is_lora(tiny_model())


def test_training_leaves_base_weights_untouched_and_merge_is_exact():
    model = apply_lora(tiny_model())
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    obs, actions, noise, t = _train(model)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    model.eval()
    with torch.no_grad():
        before = model.compute_loss(obs, actions, noise, t, reduction="none")
        sampled = model.sample_actions(obs, noise=noise, num_steps=3)
    merge_lora_(model)
    assert not is_lora(model)
    assert set(model.state_dict()) == set(tiny_model().state_dict())  # hub keys again
    with torch.no_grad():
        after = model.compute_loss(obs, actions, noise, t, reduction="none")
        merged_sampled = model.sample_actions(obs, noise=noise, num_steps=3)
    assert (before - after).abs().max() < 1e-4
    assert (sampled - merged_sampled).abs().max() < 1e-5
    # the merge really changed the frozen base (the adapters are in it now)
    changed = [n for n, p in model.state_dict().items()
               if base_name(n) in {base_name(k) for k in frozen} and not torch.equal(p, frozen.get(
                   n.replace(".weight", ".base_layer.weight"), p))]
    assert changed
