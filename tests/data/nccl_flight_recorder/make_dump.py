"""Dump NCCL's flight-recorder ring after a short 1-rank DDP job to $OUT.

Run with TORCH_FR_BUFFER_SIZE=2000 and TORCH_NCCL_ENABLE_TIMING=1 in the environment, plus
RANK=0 WORLD_SIZE=1 MASTER_ADDR MASTER_PORT (or `torchrun --nproc-per-node 1`).

The script that made ``nccl_fr_dump_h200.json`` (only reformatted for the linter).
"""

import json
import os

import torch
import torch.distributed as dist
from torch import nn
from torch._C._distributed_c10d import _dump_nccl_trace_json

dist.init_process_group("nccl", device_id=torch.device("cuda", 0))
m = nn.parallel.DistributedDataParallel(
    nn.Sequential(nn.Linear(2048, 2048), nn.GELU(), nn.Linear(2048, 2048)).cuda(),
    device_ids=[0],
    bucket_cap_mb=4,
)
opt = torch.optim.SGD(m.parameters(), lr=1e-3)
for _ in range(6):
    loss = m(torch.randn(512, 2048, device="cuda")).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
x = torch.ones(1 << 16, device="cuda")
dist.all_gather_into_tensor(torch.empty(1 << 16, device="cuda"), x)
dist.broadcast(x, 0)
dist.barrier()
torch.cuda.synchronize()
d = json.loads(_dump_nccl_trace_json(includeCollectives=True, onlyActive=False))
out = os.environ["OUT"]
with open(f"{out}/nccl_fr_dump_h200.json", "w") as f:
    json.dump(d, f, indent=1)
n = len(d.get("entries", []))
print("entries", n, "keys", sorted(d.keys()), "versions", d.get("version"), torch.__version__)
dist.destroy_process_group()
