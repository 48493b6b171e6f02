"""Give a trained SA-Swin a SACA block at a finer stage, without changing what it predicts.

Why: attention maps are made of the finest SACA stage (docs/attention.md). A model with SACA
only at the bottleneck has 2 x 2 x 2 tokens per 64^3 window, so its map is constant. A new,
randomly initialised SACA block at stage 2 perturbs every feature the decoder was trained on,
and 40 fine-tuning steps left its attention at the chance level (docs/attention.md, "tiny").

So the new block starts as:

- **an identity on the residual stream**: the attention output projection and the MLP's last
  layer are zero, so ``x + 0 + 0 = x`` and the network's output is exactly the trained
  network's (checked here on random input before anything is written);
- **a mirror-position prior in its attention**: ``SACABlock.set_mirror_prior`` (queries and
  keys carry the shared sine-cosine position code, so each token attends most to its own
  mirror token, plus a share of content). This is an initialisation, stated in the model
  card; fine-tuning then changes it like any other weight, and
  ``Benchmarks/attention_benchmark.py`` measures what it became.

Existing SACA stages get a learned position code too (the setting is per network); their
projection starts at zero, so their inputs are unchanged.

Run:
    python Training/scripts/add_saca_stage.py \\
        --checkpoint runs/bundled_glioma_polish/checkpoints/last.pt \\
        --card SymmetryAwareCore/data/models/glioma_phantom_saswin_f12.json \\
        --stage 2 --output runs/init/v030_saca24.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def graft_saca_stage(network, stage: int, sharpness: float, content: float):
    """A copy of ``network`` (SASwinUNETR) with SACA also at ``stage``, same predictions.

    Returns the new network (eval mode, float32). The kwargs gain ``stage`` in
    ``saca_stages`` and ``saca_position_encoding="learned"``.
    """
    from SymmetryAwareCore.models.sa_swin_unetr import SASwinUNETR

    kwargs = dict(network.init_kwargs)
    stages = sorted(set(int(s) for s in kwargs["saca_stages"]) | {int(stage)})
    if int(stage) in network.saca_stages:
        raise SystemExit(f"the network already has SACA at stage {stage}")
    kwargs.update(saca_stages=stages, saca_position_encoding="learned")
    grafted = SASwinUNETR(**kwargs)
    missing, unexpected = grafted.load_state_dict(network.state_dict(), strict=False)
    fresh_prefixes = (f"saca.stage{stage}.",) + tuple(f"saca.stage{s}.pos_proj." for s in network.saca_stages)
    if unexpected or any(not k.startswith(fresh_prefixes) for k in missing):
        raise SystemExit(f"unexpected key mismatch: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        for s in network.saca_stages:
            block = grafted.saca[f"stage{s}"]
            block.pos_proj.weight.zero_()
            block.pos_proj.bias.zero_()
        block = grafted.saca[f"stage{stage}"]
        block.set_mirror_prior(sharpness=sharpness, content=content)
        # Identity on the residual stream: nothing the decoder learned is disturbed at step 0.
        for layer in (block.attn.out_proj, block.mlp.linear2):
            layer.weight.zero_()
            layer.bias.zero_()
    return grafted.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", required=True, type=Path, help="the trained model's card (architecture, kwargs)")
    parser.add_argument("--checkpoint", type=Path, help="fp32 training checkpoint to take the weights from "
                        "(default: the card's own weights)")
    parser.add_argument("--stage", type=int, default=2)
    parser.add_argument("--sharpness", type=float, default=10.0)
    parser.add_argument("--content", type=float, default=0.2)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args()

    from safetensors.torch import save_file

    from SymmetryAwareCore.models.model_card import load_model
    from SymmetryAwareTraining.tasks import load_init_weights

    network, _card = load_model(args.card)
    network = network.float()
    if args.checkpoint:
        load_init_weights(network, str(args.checkpoint))
    network.eval()
    grafted = graft_saca_stage(network, args.stage, args.sharpness, args.content)

    torch.manual_seed(0)
    x = torch.randn(1, network.in_channels, 64, 64, 64)
    c = torch.randn_like(x)
    with torch.no_grad():
        before = network(x, c)
        after, attention = grafted(x, c, return_attention=True)
    gap = float((before - after).abs().max())
    if gap > 1e-4:
        raise SystemExit(f"the grafted network's output differs by {gap:g}; not written")
    tokens = attention.shape[-1]
    mirror_share = float(attention.mean(1)[0].diagonal().mean())
    print(f"output unchanged (max |diff| {gap:.2e}); stage {args.stage}: {tokens} tokens per window, "
          f"mean attention on the own mirror token {mirror_share:.3f} (uniform {1 / tokens:.4f})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in grafted.state_dict().items()}, str(args.output))
    print(f"wrote {args.output}; kwargs: saca_stages={grafted.init_kwargs['saca_stages']}, "
          f"saca_position_encoding={grafted.init_kwargs['saca_position_encoding']}")


if __name__ == "__main__":
    main()
