"""Why S1's models do not learn a cohort: a plain training loop that watches their units.

    python benchmarks/s1_probe.py CACHE [--model sequential_2] [--lr 1e-3] [--optimizer adam|adadelta|sgd]
        [--batch-norm] [--centre] [--no-dropout] [--epochs 12]

Trains an S1 model (sequential_2 unless ``--model``; one branch per modality when the cache has
several) on 120 random subjects of a prepared cohort and prints, per epoch: the training loss, the
share of active ReLU units in the last trunk block (sequential_2's second conv_pool, an inception
model's 1³ reduce conv) and in the FC128 head (on the training subjects, eval mode), the SD of the
logit difference over the training subjects, and the AUC on the training subjects and on the rest.
A dead network shows as a logit SD near 0; a memorising one as a training AUC near 1 with a
held-out AUC near 0.5. Used for RESULTS.md, "S1's models do not train here" (demo cohort:
`/tmp/fulldemo/cache`, written by `neurocnn demo --out /tmp/fulldemo`).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from neurocnn.data.cache import open_cache
from neurocnn.models import build


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cache")
    p.add_argument("--model", default="sequential_2", help="an S1 model (sequential_n, inception_n, …)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=["adam", "adadelta", "sgd"], default="adam")
    p.add_argument("--batch-norm", action="store_true", help="the model's batch_norm option")
    p.add_argument("--centre", action="store_true", help="subtract the training subjects' mean image")
    p.add_argument("--no-dropout", action="store_true")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--train", type=int, default=120, help="training subjects (the rest are held out)")
    args = p.parse_args()

    torch.manual_seed(0)
    cache = open_cache(args.cache)
    x = torch.tensor(np.asarray(cache.array()), dtype=torch.float32)
    y = torch.tensor(cache.labels())
    labelled = y >= 0  # subjects without a label (-1) are left out
    x, y = x[labelled], y[labelled]
    order = torch.randperm(len(y))
    train, held_out = order[: args.train], order[args.train :]
    if args.centre:
        sd = x[train].std(dim=(0, 2, 3, 4), keepdim=True)
        x = (x - x[train].mean(0, keepdim=True)) / sd
    channels = x.shape[1]
    model = build(
        args.model,
        modalities=channels if channels > 1 else None,
        input_shape=tuple(x.shape[2:]),
        batch_norm=args.batch_norm,
    )
    if args.no_dropout:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    optimisers = {"adam": torch.optim.Adam, "adadelta": torch.optim.Adadelta, "sgd": torch.optim.SGD}
    extra = {"momentum": 0.9} if args.optimizer == "sgd" else {}
    opt = optimisers[args.optimizer](model.parameters(), lr=args.lr, **extra)

    # the last trunk block (conv_pool2 of sequential_2, the 1³ reduce conv of inception models)
    last = list(getattr(model, "gradcam_layers", [model.gradcam_layer]))
    active: dict[str, list[float]] = {"trunk": [], "head": []}

    def watch(group: str):  # a forward hook counting the group's active units
        return lambda _m, _i, out: active[group].append((out > 0).float().mean().item())

    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU) and (any(name.startswith(t) for t in last) or name.startswith("head")):
            m.register_forward_hook(watch("head" if name.startswith("head") else "trunk"))

    block = last[0].rsplit(".", 1)[-1]
    columns = ["epoch", "train loss", f"{block} active", "head active", "logit-difference SD"]
    print("| " + " | ".join([*columns, "train AUC", "held-out AUC"]) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for epoch in range(args.epochs):
        model.train()
        total = 0.0
        shuffled = train[torch.randperm(len(train))]
        for i in range(0, len(train), 8):
            batch = shuffled[i : i + 8]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        model.eval()
        for values in active.values():
            values.clear()
        with torch.no_grad():
            logits = model(x[train])
            seen = {k: float(np.mean(v)) if v else float("nan") for k, v in active.items()}
            d_train = (logits[:, 1] - logits[:, 0]).numpy()
            held = model(x[held_out])
            d_held = (held[:, 1] - held[:, 0]).numpy()
        print(
            f"| {epoch} | {total / len(train):.3f} | {seen['trunk']:.0%} | {seen['head']:.0%} | "
            f"{d_train.std():.3f} | {roc_auc_score(y[train], d_train):.3f} | "
            f"{roc_auc_score(y[held_out], d_held):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
