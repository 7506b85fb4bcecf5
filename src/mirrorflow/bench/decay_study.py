"""Measurements behind docs/training.md: what weight decay leaves behind under SGD, Adam, AdamW.

Two studies, each a plain function and one command, so every number in the docs can be
regenerated:

* :func:`factorization_balancedness` — ``X = U Vᵀ`` with ``U = 0`` (30×5), ``V`` random (25×5),
  loss ``½‖U Vᵀ − Y‖_F²`` with a rank-3 target ``Y``; returns the balancedness ratio
  ``‖UᵀU − VᵀV‖_F / ‖U₀ᵀU₀ − V₀ᵀV₀‖_F`` after training with a given optimizer and decay, next to
  the gradient-flow prediction ``e^{−2a}`` (docs/theory.md §6). ``python -m
  mirrorflow.bench.decay_study table`` prints the table of docs/training.md.
* :func:`run_study` — the LoRA and ViT experiments under AdamW at several ``(lr, λ, switch
  point)`` reaching the *same* integrated decay ``a``, and at *different* ``a``, over seeds;
  :func:`summarize_study` turns the stored runs into the effect-size tables of the docs
  (differences of means with 95 % t-intervals over seeds, paired by seed).
  ``python -m mirrorflow.bench.decay_study lora --out lora.jsonl`` (then ``report lora.jsonl``).
  Runs already in the file are skipped, so an interrupted study resumes.

Not a ``bench_*`` module: ``mirrorflow bench`` does not run it (it takes minutes to an hour).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "LORA_STUDY",
    "VIT_STUDY",
    "balancedness_table",
    "factorization_balancedness",
    "run_study",
    "summarize_study",
]


# --------------------------------------------------------------------- the factorization toy


def factorization_balancedness(optimizer: str, lr: float, wd: float, steps: int,
                               switch_step: int | None = None, momentum: float = 0.0,
                               seed: int = 0) -> dict[str, float]:
    """Balancedness ratio of ``X = U Vᵀ`` after ``steps`` optimizer steps (float64).

    ``optimizer``: ``"sgd"`` (coupled L2, optional ``momentum``), ``"adam"`` (coupled L2),
    ``"adamw"`` (decoupled) or ``"adafactor"`` (Hugging Face, fixed ``lr``, no relative step or
    parameter scaling: decoupled). Decay ``wd`` on both factors for steps ``< switch_step``
    (default: all), scheduled by :class:`~mirrorflow.schedules.WeightDecayScheduler`, which
    also gives ``a = Σ η_k λ_k``. Returns ``ratio``, ``a``, ``exp_minus_2a`` and the final loss.
    """
    from mirrorflow.schedules import WeightDecayScheduler, training

    g = torch.Generator().manual_seed(seed)
    U = torch.nn.Parameter(torch.zeros(30, 5, dtype=torch.float64))
    V = torch.nn.Parameter(torch.randn(25, 5, generator=g, dtype=torch.float64))
    Y = (torch.randn(30, 3, generator=g, dtype=torch.float64)
         @ torch.randn(3, 25, generator=g, dtype=torch.float64)) / math.sqrt(3)
    params = [{"params": [U, V], "weight_decay": wd}]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr)
    elif optimizer == "adafactor":
        from transformers.optimization import Adafactor

        opt = Adafactor(params, lr=lr, relative_step=False, scale_parameter=False,
                        warmup_init=False)
    else:  # pragma: no cover - caller error
        raise ValueError(f"unknown optimizer {optimizer!r}")
    sched = None
    if wd > 0:
        schedule = training.constant() if switch_step is None else training.switch_off(switch_step)
        sched = WeightDecayScheduler(opt, schedule)

    def imbalance():
        with torch.no_grad():
            return float(torch.linalg.matrix_norm(U.T @ U - V.T @ V))

    d0 = imbalance()
    loss = float("nan")
    for _ in range(steps):
        opt.zero_grad()
        lo = 0.5 * ((U @ V.T - Y) ** 2).sum()
        lo.backward()
        opt.step()
        loss = float(lo.detach())
    a = sched.integrated if sched is not None else 0.0
    if sched is not None:
        sched.remove()
    return {"ratio": imbalance() / d0, "a": a, "exp_minus_2a": math.exp(-2 * a), "loss": loss}


#: The rows of the docs table: (label, kwargs of :func:`factorization_balancedness`).
TABLE_ROWS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("SGD, λ=0.5", dict(optimizer="sgd", lr=1e-3, wd=0.5, steps=4000)),
    ("SGD, λ=0.5, switch-off at step 2000", dict(optimizer="sgd", lr=1e-3, wd=0.5, steps=4000,
                                                 switch_step=2000)),
    ("SGD+momentum 0.9, λ=0.5", dict(optimizer="sgd", lr=1e-4, wd=0.5, steps=4000, momentum=0.9)),
    ("Adam (coupled L2), λ=0.5", dict(optimizer="adam", lr=1e-2, wd=0.5, steps=400)),
    ("AdamW, lr 1e-2, λ=0.5", dict(optimizer="adamw", lr=1e-2, wd=0.5, steps=400)),
    ("AdamW, lr 1e-3, λ=0.1", dict(optimizer="adamw", lr=1e-3, wd=0.1, steps=2000)),
    ("AdamW, no decay", dict(optimizer="adamw", lr=1e-2, wd=0.0, steps=400)),
    ("Adafactor, lr 1e-2, λ=0.5", dict(optimizer="adafactor", lr=1e-2, wd=0.5, steps=400)),
)


def balancedness_table(rows=TABLE_ROWS) -> str:
    """The markdown table of docs/training.md (seed 0)."""
    lines = ["| optimizer | a | balancedness ratio | e^{−2a} |", "|---|---|---|---|"]
    for label, kw in rows:
        r = factorization_balancedness(**kw)
        lines.append(f"| {label} | {r['a']:.3g} | {r['ratio']:.4g} | {r['exp_minus_2a']:.4g} |")
    return "\n".join(lines)


# --------------------------------------------------------------------- LoRA / ViT under AdamW

#: LoRA (defaults: 200 AdamW steps, lr 2e-3, 2 MiniLM blocks, rank 4). ``same-a/*`` all reach
#: ``a = 0.8`` (``a = lr·λ·switch step``); ``a=*`` vary ``a`` at lr 2e-3, λ = 5.
LORA_STUDY: dict[str, dict[str, Any]] = {
    "same-a/λ5 switch t0.16": {"wd": 5.0, "switch_at": 0.16},
    "same-a/λ10 switch t0.08": {"wd": 10.0, "switch_at": 0.08},
    "same-a/λ2.5 switch t0.32": {"wd": 2.5, "switch_at": 0.32},
    "same-a/lr4e-3 100 steps λ5 t0.16": {"lr": 4e-3, "steps": 100, "wd": 5.0, "switch_at": 0.16},
    "a=0 (none)": {"schedule": "none"},
    "a=0.2": {"wd": 5.0, "switch_at": 0.04},
    "a=1.6": {"wd": 5.0, "switch_at": 0.32},
    "a=2 (constant)": {"schedule": "constant", "wd": 5.0},
}

#: ViT on digits (defaults: 600 AdamW steps, lr 2e-3). ``same-a/*`` reach ``a = 0.6``.
VIT_STUDY: dict[str, dict[str, Any]] = {
    "same-a/λ1 switch t0.6": {"wd": 1.0, "switch_at": 0.6},
    "same-a/λ2 switch t0.3": {"wd": 2.0, "switch_at": 0.3},
    "same-a/λ0.5 constant": {"schedule": "constant", "wd": 0.5},
    "same-a/lr4e-3 300 steps λ1 t0.6": {"lr": 4e-3, "steps": 300, "wd": 1.0, "switch_at": 0.6},
    "a=0 (none)": {"schedule": "none"},
    "a=0.3": {"wd": 1.0, "switch_at": 0.3},
    "a=1.2 (constant)": {"schedule": "constant", "wd": 1.0},
    "a=2.4 (constant)": {"schedule": "constant", "wd": 2.0},
}

STUDIES = {"lora": LORA_STUDY, "vit": VIT_STUDY}
_BASE: dict[str, dict] = {"vit": {}, "lora": {}}
METRICS = ("integrated_wd", "nuclear_over_fro", "effective_rank", "balancedness", "val_loss",
           "val_accuracy")


def run_study(experiment: str, out: str | Path, seeds: Sequence[int] = (0, 1, 2),
              configs: Mapping[str, Mapping[str, Any]] | None = None,
              progress: Callable[[str], None] | None = print) -> list[dict]:
    """Run every ``(config label, seed)`` of the study not yet in the JSON-lines file ``out``.

    Each line: ``{"label", "seed", "config", <METRICS>, "balancedness_initial"}`` (the last for
    LoRA: the mean balancedness over pairs at step 0). Returns all records in the file.
    """
    from mirrorflow.experiments import get_experiment

    exp = get_experiment(experiment)
    configs = STUDIES[experiment] if configs is None else configs
    out = Path(out)
    done = {(r["label"], r["seed"]) for r in _read(out)}
    for label, overrides in configs.items():
        for seed in seeds:
            if (label, seed) in done:
                continue
            cfg = exp.make_config({**_BASE.get(experiment, {}), **overrides, "seed": seed})
            res = exp.run(cfg)
            rec = {"label": label, "seed": seed, "config": dict(overrides)}
            rec.update({k: float(getattr(res, k)) for k in METRICS})
            bal = res.curves.get("balancedness") if isinstance(res.curves, dict) else None
            if bal is not None and len(bal):
                rec["balancedness_initial"] = float(bal[0])
            with out.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if progress:
                progress(f"{experiment} {label} seed {seed}: " +
                         ", ".join(f"{k}={rec[k]:.4g}" for k in METRICS))
    return _read(out)


def _read(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _t95(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def mean_ci(x) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), _t95(len(x)) * float(x.std(ddof=1)) / math.sqrt(len(x))


def paired_diff(records: list[dict], a: str, b: str, metric: str) -> tuple[float, float, int]:
    """Mean of ``metric[a] − metric[b]`` over the seeds both have, its 95 % CI half-width, n."""
    by = {(r["label"], r["seed"]): r[metric] for r in records}
    seeds = sorted({s for (lab, s) in by if lab == a} & {s for (lab, s) in by if lab == b})
    d = [by[(a, s)] - by[(b, s)] for s in seeds]
    if not d:
        return float("nan"), float("nan"), 0
    m, h = mean_ci(d)
    return m, h, len(d)


def summarize_study(path: str | Path, metrics: Sequence[str] = ("nuclear_over_fro", "effective_rank",
                                                                 "balancedness", "val_loss",
                                                                 "val_accuracy")) -> str:
    """Markdown: per-config means ± 95 % CI, then paired differences against the first
    ``same-a`` config (how ``a`` was reached) and against ``a=0`` (whether decay mattered)."""
    recs = _read(Path(path))
    labels = list(dict.fromkeys(r["label"] for r in recs))
    head = "| config | n | a | " + " | ".join(metrics) + " |"
    lines = [head, "|" + "---|" * (3 + len(metrics))]
    for lab in labels:
        rs = [r for r in recs if r["label"] == lab]
        cells = []
        for m in metrics:
            mu, h = mean_ci([r[m] for r in rs])
            cells.append(f"{mu:.4g} ± {h:.2g}")
        a = np.mean([r["integrated_wd"] for r in rs])
        lines.append(f"| {lab} | {len(rs)} | {a:.3g} | " + " | ".join(cells) + " |")
    same = [lab for lab in labels if lab.startswith("same-a/")]
    zero = next((lab for lab in labels if lab.startswith("a=0 ")), None)
    lines += ["", "Paired differences (mean ± 95 % CI over seeds):", "",
              "| difference | " + " | ".join(metrics) + " |", "|" + "---|" * (1 + len(metrics))]
    pairs = [(lab, same[0]) for lab in same[1:]]
    if zero is not None:
        pairs += [(lab, zero) for lab in labels if lab != zero]
    for a, b in pairs:
        cells = []
        for m in metrics:
            d, h, n = paired_diff(recs, a, b, m)
            tag = "" if not math.isfinite(h) else (" *" if abs(d) > h else "")
            cells.append(f"{d:+.3g} ± {h:.2g}{tag}")
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("`*`: the 95 % interval excludes 0; otherwise inconclusive at this number of seeds.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - a command
    p = argparse.ArgumentParser(prog="python -m mirrorflow.bench.decay_study",
                                description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["table", "lora", "vit", "report"])
    p.add_argument("path", nargs="?", help="JSON-lines file (report)")
    p.add_argument("--out", help="JSON-lines file to append runs to (lora, vit)")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    if args.what == "table":
        print(balancedness_table())
    elif args.what == "report":
        print(summarize_study(args.path))
    else:
        out = args.out or f"{args.what}_study.jsonl"
        run_study(args.what, out, seeds=range(args.seeds))
        print(summarize_study(out))


if __name__ == "__main__":  # pragma: no cover
    main()
