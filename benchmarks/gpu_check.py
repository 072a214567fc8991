"""On a GPU: compiled equals eager for the core step (run by hand on a lent machine)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import functional_grads as fg  # noqa: E402

model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).cuda()
f, params = fg.functionalize(model)
X, S = torch.randn(512, 8, device="cuda"), torch.randn(512, 8, device="cuda")
loss = fg.losses.gradient_matching(f)
eager = fg.value_and_grad(loss)(params, X, S)
compiled = fg.value_and_grad(loss, compile=True)(params, X, S)
err = max((compiled[1][k] - eager[1][k]).abs().max().item() for k in params)
print(f"GPU {torch.cuda.get_device_name()}: compiled vs eager loss {eager[0].item():.6f} / {compiled[0].item():.6f}, max grad diff {err:.2e}")
