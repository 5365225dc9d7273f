"""Why the training loss rises above ln(classes) in the first epoch from scratch (calibration
record, not a published number): the engine's optimiser and data at the proxy profile, one step at
a time, printing the loss, the gradient norm (clipped at 20 as in the engine), the mean |feature|
fed to fc, the logits' spread and the norm of fc's weight.

    python tools/calibration/first_steps.py MODEL LR STEPS [SEED] > runs/calibration/first_steps.txt
"""
import sys

import torch

from stm_lib.config import Config
from stm_lib.data import build_dataset
from stm_lib.engine.optim import build_optimizer
from stm_lib.models import build_model

if __name__ == "__main__":
    torch.set_num_threads(1)
    name, lr, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    cfg = Config().update("model", name=name, frames=8, width_mult=0.25, num_classes=10)
    cfg = cfg.update("data", dataset="proxy-temporal", input_size=64, num_workers=0)
    torch.manual_seed(seed)
    data = build_dataset(cfg.data, split="train", frames=8, train=True)
    model = build_model(cfg.model).train()
    opt = build_optimizer(model, lr, 0.9, 5e-4, 1.0)   # the engine's groups, fc lr x1 (from scratch)
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    feats = {}
    model.fc.register_forward_hook(lambda mod, i, o: feats.__setitem__("f", i[0].detach()))
    print(f"# {name} lr {lr} batch 16 seed {seed}")
    for step, (x, y) in enumerate(loader):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 20)
        opt.step()
        print(f"{step:3d} loss {loss.item():6.3f} grad-norm {gn.item():6.2f} |feature| {feats['f'].abs().mean():.3f} "
              f"logit-std {out.std():.3f} |fc.weight| {model.fc.weight.norm():.3f}", flush=True)
        if step + 1 >= steps:
            break
