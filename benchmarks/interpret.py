"""Speed of the interpretation methods on MriNet at 58×70×58 (S3's model and grid), on this CPU.

1. Meaningful Perturbation with S3's settings (`PerturbationConfig()`: 10 jitters per step, at
   most 300 steps, σ0 = σm = 10, …): `neurocnn.interpret.meaningful_perturbation` (BatchNorm
   folded, no weight gradients, stop at convergence; the default — on a CPU the jitters one at a
   time —, the 10 jitters as one batch, and the network in bfloat16) against a sequential-jitter
   reference written here the seed's way (one
   forward/backward pass per jitter, weight gradients computed because the parameters keep
   requires_grad, the blur recomputed per jitter, all 300 steps). The reference is timed over
   ``--ref-steps`` steps and scaled to 300 (its steps all cost the same); ours runs to the end for
   every subject. One subject is also run for all 300 steps, to compare its mask with the stopped
   one.
2. Grad-CAM plus guided backprop for 100 subjects.

Targets (issue 6): Meaningful Perturbation ≤ 120 s per subject and ≥ 8× faster than the reference;
Grad-CAM + guided backprop for 100 subjects ≤ 60 s.

The model is the fold-0 MriNet of the ground-truth run (``benchmarks/interpret_ground_truth.py``)
when it exists, explaining its own test subjects, so that the optimisation behaves as on a trained
network (``--run``: any other trained run folder); otherwise a randomly initialised MriNet on
random volumes (stated in the output). ``--variants`` picks the configurations timed (the first
is also run for all 300 steps on ``--full-subjects`` subjects, to compare the stopped masks).

    .venv/bin/python benchmarks/interpret.py                  # writes benchmarks/results/interpret.md
    .venv/bin/python benchmarks/interpret.py --quick          # 1 subject, 2 reference steps, 20 maps
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurocnn.interpret import PerturbationConfig, grad_cam, guided_backprop, meaningful_perturbation
from neurocnn.interpret.perturbation import _tv
from neurocnn.interpret.separable import apply_separable, gaussian_blur, gaussian_matrix, upsample_matrix
from neurocnn.models import build

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "_work" / "interpret_gt" / "run"
RESULTS = ROOT / "benchmarks" / "results" / "interpret.md"
SHAPE = (58, 70, 58)


def load_model_and_inputs(n: int, run: Path = RUN) -> tuple[torch.nn.Module, torch.Tensor, str]:
    ckpt = run / "folds" / "r0_f0" / "best.ckpt"
    if ckpt.exists():
        from neurocnn.interpret.runs import load_run_models

        models, cache = load_run_models(run, folds=(0,))
        rows = models[0].test[:n] if n <= len(models[0].test) else models[0].test
        x = torch.from_numpy(np.asarray(cache.array()[rows], dtype=np.float32))
        if len(x) < n:  # more maps than test subjects: repeat them (the cost per map is the same)
            x = x.repeat(int(np.ceil(n / len(x))), 1, 1, 1, 1)[:n]
        where = ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt
        name = type(models[0].net).__name__
        return models[0].net, x, f"trained {name} ({where}, input {tuple(x.shape[2:])}), its test subjects"
    torch.manual_seed(0)
    return build("mrinet"), torch.rand(n, 1, *SHAPE), "randomly initialised MriNet, random volumes"


def sequential_reference(net: torch.nn.Module, x: torch.Tensor, cfg: PerturbationConfig, steps: int) -> float:
    """Seconds per step of the seed's way: each jitter its own pass, weight gradients included."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)  # the seed never froze the model: backward also fills weight grads
    spatial = tuple(x.shape[1:])
    low = tuple(s // cfg.scale for s in spatial)
    ops = [
        gaussian_matrix(s, cfg.sigma_mask, mode="nearest") @ upsample_matrix(s, d)
        for s, d in zip(spatial, low, strict=True)
    ]
    with torch.no_grad():
        target = int(net(x[None]).argmax(1))
    mask = torch.ones((1, 1, *low), requires_grad=True)
    optimiser = torch.optim.Adam([mask], lr=cfg.lr, betas=cfg.betas, amsgrad=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for it in range(steps):
        m_full = apply_separable(mask, ops)
        pred = 0.0
        for _ in range(cfg.jitters):
            k = rng.integers(0, cfg.jitter, 3)
            padded = F.pad(x, (0, cfg.jitter) * 3)
            xj = padded[:, k[0] : k[0] + spatial[0], k[1] : k[1] + spatial[1], k[2] : k[2] + spatial[2]][None]
            blurred = gaussian_blur(xj, cfg.sigma_image)
            prob = torch.softmax(net(xj * m_full + blurred * (1 - m_full)), 1)[0, target]
            pred = pred + F.relu(prob - cfg.floor)
        reg = cfg.l1 * (1 - mask).abs().mean() + cfg.tv * _tv(m_full, cfg.tv_beta)
        loss = pred / cfg.jitters + min(1.0, it / cfg.ramp) * reg
        optimiser.zero_grad()
        net.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            mask.clamp_(0, 1)
    return (time.perf_counter() - start) / steps


def cpu_seconds() -> float:
    return time.process_time()


def timed_mp(net: torch.nn.Module, x: torch.Tensor, cfg: PerturbationConfig) -> dict:
    """Meaningful Perturbation of the subjects in ``x``: wall and CPU seconds per subject, steps."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = meaningful_perturbation(net, x, config=cfg)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    n = len(x)
    return {
        "result": result,
        "wall": wall / n,
        "cpu": cpu / n,
        "steps": result.iterations,
        "cpu_per_step": cpu / sum(result.iterations),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--mp-subjects", type=int, default=2)
    p.add_argument("--ref-steps", type=int, default=5)
    p.add_argument("--maps", type=int, default=100, help="subjects for Grad-CAM + guided backprop")
    p.add_argument("--no-full", action="store_true", help="skip the full-length (300-step) comparison")
    p.add_argument("--full-subjects", type=int, default=1, help="subjects run for all 300 steps too")
    p.add_argument(
        "--variants",
        default="default,batch,bf16",
        help="Meaningful Perturbation configurations to time (default,batch,bf16; the first is the "
        "one compared with the full-length run)",
    )
    p.add_argument("--run", type=Path, default=RUN, help="a trained run folder (fold 0 is explained)")
    args = p.parse_args(argv)
    if args.quick:
        args.mp_subjects, args.ref_steps, args.maps, args.no_full = 1, 2, 20, True
    load_before = os.getloadavg()
    net, x, what = load_model_and_inputs(max(args.maps, args.mp_subjects), args.run)
    cfg = PerturbationConfig()
    print(f"model: {what}; torch threads {torch.get_num_threads()}; load {load_before}", flush=True)

    # --- Grad-CAM + guided backprop -------------------------------------------------------------
    c0, t0 = cpu_seconds(), time.perf_counter()
    grad_cam(net, x[: args.maps], batch_size=8)
    t_cam = time.perf_counter() - t0
    guided_backprop(net, x[: args.maps], batch_size=8)
    t_maps, c_maps = time.perf_counter() - t0, cpu_seconds() - c0
    print(
        f"Grad-CAM {t_cam:.1f} s + guided backprop {t_maps - t_cam:.1f} s for {args.maps} subjects",
        flush=True,
    )

    # --- Meaningful Perturbation ----------------------------------------------------------------
    xs = x[: args.mp_subjects]
    variants = {
        # at 58×70×58 the CPU default is 2 jitters per pass (the RESULTS rows before 2026-12-07: 1)
        "default": ("ours, default (float32; jitters per CPU pass by volume size)", cfg),
        "batch": ("ours, 10 jitters as one batch (float32)", cfg.model_copy(update={"jitter_batch": 10})),
        "bf16": ("ours, `precision='bfloat16'`", cfg.model_copy(update={"precision": "bfloat16"})),
    }
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in variants]
    if unknown or not chosen:
        p.error(f"--variants: unknown {unknown}; choose from {', '.join(variants)}")
    runs = dict(variants[v] for v in chosen)
    timed = {}
    for name, c in runs.items():
        timed[name] = timed_mp(net, xs, c)
        print(f"{name}: {timed[name]['wall']:.0f} s/subject, steps {timed[name]['steps']}", flush=True)
    ours = timed[next(iter(runs))]
    bf16 = timed.get(variants["bf16"][0])
    c0 = cpu_seconds()
    ref_step = sequential_reference(net, x[0], cfg, args.ref_steps)
    c_ref = (cpu_seconds() - c0) / args.ref_steps * cfg.max_iter
    ref_subject = ref_step * cfg.max_iter
    print(f"reference: {ref_step:.2f} s per step -> {ref_subject:.0f} s per subject", flush=True)
    full = None
    if not args.no_full:
        first = runs[next(iter(runs))]
        full = timed_mp(net, xs[: args.full_subjects], first.model_copy(update={"patience": 0}))
        print(f"full length: {full['wall']:.0f} s, best at {full['result'].best_iteration}", flush=True)
    load_after = os.getloadavg()

    given = argv if argv is not None else sys.argv[1:]
    env = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    best_name = min(timed, key=lambda k: timed[k]["wall"])
    best = timed[best_name]
    ok = {True: "yes", False: "**no**"}

    def row(name: str, r: dict) -> str:
        return (
            f"| {name} | {r['wall']:.0f} | {r['cpu']:.0f} | {r['cpu'] / 2:.0f} | {r['steps']} "
            f"| {r['cpu_per_step']:.2f} | {ref_subject / r['wall']:.1f}× / {c_ref / r['cpu']:.1f}× |"
        )

    lines = [
        f"# Interpretation speed on a {os.cpu_count()}-core CPU",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with",
        "",
        f"    {env}.venv/bin/python benchmarks/interpret.py {' '.join(given)}".rstrip(),
        "",
        f"on {platform.machine()} {platform.system()}, {os.cpu_count()} cores shared with other agents' jobs "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after), torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, Python {sys.version.split()[0]}. "
        f"Model: {what}. CPU seconds are this process's user + system time. On a machine this busy, wall "
        "time mostly measures the other jobs; CPU s / 2 estimates the wall time of an idle 2-core "
        "machine for work that keeps both threads busy. With OpenMP's default busy-waiting, small "
        "operations on an oversubscribed machine burn CPU while their threads wait for a core, inflating "
        "CPU seconds several-fold; `OMP_WAIT_POLICY=PASSIVE` (in the command when used) avoids that "
        "and leaves results unchanged.",
        "",
        "## Meaningful Perturbation, S3's settings (target ≤ 120 s per subject, ≥ 8× the reference)",
        "",
        "| run | wall s / subject | CPU s / subject | idle estimate s (CPU / 2) | steps | CPU s / step "
        "| speed-up vs reference (wall / CPU) |",
        "|---|---|---|---|---|---|---|",
        *(row(name, r) for name, r in timed.items()),
        f"| sequential reference (the seed's way), {cfg.max_iter} steps | {ref_subject:.0f} | {c_ref:.0f} "
        f"| {c_ref / 2:.0f} | {cfg.max_iter} (timed {args.ref_steps}) | {c_ref / cfg.max_iter:.2f} | 1× |",
        "",
        f"Targets with the fastest configuration ({best_name}): ≤ 120 s per subject — wall "
        f"{best['wall']:.0f} s "
        f"({ok[best['wall'] <= 120]}), idle estimate {best['cpu'] / 2:.0f} s ({ok[best['cpu'] / 2 <= 120]}); "
        f"≥ 8× the reference — {ref_subject / best['wall']:.1f}× wall, {c_ref / best['cpu']:.1f}× CPU "
        f"({ok[min(ref_subject / best['wall'], c_ref / best['cpu']) >= 8]}).",
        "",
        f"Explained-class probability before / after perturbation: "
        f"{[round(float(v), 3) for v in ours['result'].probability]} / "
        f"{[round(float(v), 3) for v in ours['result'].perturbed_probability]}; best mask at steps "
        f"{ours['result'].best_iteration}. The reference runs one forward/backward pass per jitter "
        "with weight gradients (the model's parameters keep requires_grad, as in the seed), "
        f"{args.ref_steps} steps timed and scaled to {cfg.max_iter}.",
    ]
    from neurocnn.interpret import dice, rank_correlation
    from neurocnn.interpret.group import binarize

    def agreement(first: torch.Tensor, second: torch.Tensor) -> list[tuple[float, float, float]]:
        return [
            (
                rank_correlation(a.numpy(), b.numpy()),
                dice(binarize(a.numpy(), 0.65), binarize(b.numpy(), 0.65)),
                float((a - b).abs().max()),
            )
            for a, b in zip(first, second, strict=False)
        ]

    if bf16 is not None and bf16 is not ours:
        agree = agreement(ours["result"].saliency, bf16["result"].saliency)
        lines += [
            "",
            "bfloat16 against float32 saliency, per subject: Spearman "
            f"{[round(r, 3) for r, _, _ in agree]}, Dice at 0.65 {[round(d, 3) for _, d, _ in agree]}, "
            f"largest difference {[round(m, 3) for _, _, m in agree]}; steps {bf16['steps']} against "
            f"{ours['steps']}.",
        ]
    if full is not None:
        k = len(full["steps"])
        agree = agreement(ours["result"].saliency[:k], full["result"].saliency)
        lines += [
            "",
            f"Stopping at convergence against running all 300 steps ({next(iter(runs))}, first {k} "
            f"subjects): stopped after {ours['steps'][:k]} steps with the best mask at steps "
            f"{ours['result'].best_iteration[:k]}; the full runs' best masks are at steps "
            f"{full['result'].best_iteration}; saliency maps differ by at most "
            f"{[round(m, 4) for _, _, m in agree]} (Spearman {[round(r, 4) for r, _, _ in agree]}, "
            f"Dice at 0.65 {[round(d, 3) for _, d, _ in agree]}); the full runs took "
            f"{full['wall']:.0f} s wall, {full['cpu']:.0f} CPU s per subject.",
        ]
    lines += [
        "",
        "## Grad-CAM + guided backprop (target ≤ 60 s for 100 subjects)",
        "",
        "| subjects | wall s | CPU s | idle estimate s (CPU / 2) | met (wall / idle estimate) |",
        "|---|---|---|---|---|",
        f"| {args.maps} | {t_maps:.1f} (Grad-CAM {t_cam:.1f}) | {c_maps:.1f} | {c_maps / 2:.1f} "
        f"| {ok[t_maps <= 60]} / {ok[c_maps / 2 <= 60]} |",
    ]
    text = "\n".join(lines) + "\n"
    if args.quick:
        print(text)
    else:
        print(text)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
