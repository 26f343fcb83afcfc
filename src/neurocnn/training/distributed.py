"""Which process am I? Ranks for Lightning's DDP launcher, torchrun and SLURM.

Launching several processes (all run the same `neurocnn cv` command; only rank 0 writes the run
folder, the others train):

- one machine: ``neurocnn cv ... --accelerator gpu --devices 4 --strategy ddp`` (CPU:
  ``--accelerator cpu --devices 2 --strategy ddp``, gloo); Lightning starts processes 1..N-1 by
  running the command again with ``LOCAL_RANK`` set.
- torchrun: ``torchrun --nproc-per-node 4 --nnodes 2 --node-rank N --master-addr HOST
  $(which neurocnn) cv ... --devices 4 --num-nodes 2 --strategy ddp``.
- SLURM: ``srun neurocnn cv ... --devices 4 --num-nodes 2 --strategy ddp`` from an sbatch script
  with ``--nodes=2 --ntasks-per-node=4 --gpus-per-node=4``.

``--batch-size`` is the global batch (each process takes batch / processes). With DDP, BatchNorm
statistics are synchronised on GPUs (SyncBatchNorm); on CPU each process normalises its own part.
"""

from __future__ import annotations

import os

PLAN_ENV = "NEUROCNN_FOLD_PLAN"
"""Rank 0 puts the folds it will train here; processes started by Lightning inherit it."""


def process_rank() -> int:
    """This process's rank when launched by Lightning, torchrun or SLURM (0 when alone)."""
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    return int(local) + int(node) if local.isdigit() and node.isdigit() else 0


def devices_per_node(devices: int | str, accelerator: str = "cpu") -> int:
    """Processes per machine that Lightning starts for ``devices``: a count, a list of GPU
    indices ("0,1"), or every GPU (-1, "auto"; one process on the CPU)."""
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    if text.lstrip("-").isdigit() and int(text) != -1:
        return int(text)
    if accelerator in ("gpu", "cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return torch.cuda.device_count()
    return 1


def world_size(devices: int | str, num_nodes: int, accelerator: str = "cpu") -> int:
    """Processes a configuration asks for."""
    return devices_per_node(devices, accelerator) * num_nodes
