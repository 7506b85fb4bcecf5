"""LoRA fine-tuning of a character-level GPT-2 language model on held-out Shakespeare plays.

The paper's LoRA setting (GPT-2 fine-tuned with LoRA on Shakespeare language modelling), offline
and small: a GPT-2-architecture model with character tokens, pretrained once on other plays
(:mod:`mirrorflow.experiments.charlm`, cached by content hash), gets LoRA adapters
``W = W₀ + s·B A`` (PEFT ``LoraConfig`` on GPT-2's ``Conv1D`` projections, ``fan_in_fan_out``)
and is fine-tuned with AdamW, the decoupled decay of the LoRA factors scheduled by
:class:`mirrorflow.schedules.scheduler.WeightDecayScheduler`, on the plays of
:data:`~mirrorflow.experiments.charlm.FINETUNE_PLAYS`. ``a = Σ_k η_k λ_k`` (docs/theory.md §1).

Data: each fine-tuning play is cut into chunks of 2000 characters; chunk ``j`` is validation
when ``j mod 10 = 4``, test when ``j mod 10 = 9``, training otherwise (both held-out splits
spread through every play). Training batches are random windows inside the training chunks;
validation and test losses are the mean cross-entropy (nats per character) of every character
of non-overlapping windows of the held-out chunks (at most ``eval_chars`` of them, spread evenly).
The baseline is the unigram model of the training split (add-one smoothed character
frequencies), evaluated on the same characters: a run *learned* when its validation loss is
at least 5 % below it (``beats_baseline``, :class:`~mirrorflow.experiments.base.Baseline`).

Seeds are trained stacked: :func:`run_batch` trains all configs that differ only in seed and
schedule (``seed``, ``schedule``, ``wd``, ``switch_at``, ``budget``) as one model whose frozen
base weights are shared and whose LoRA factors carry a leading seed dimension (a hand-written
GPT-2 forward with batched ``A``/``B``; one AdamW over the stacked factors, each seed's decay
applied to its own slice from its own scheduler). Every seed has its own LoRA initialization
(PEFT's, seeded) and data order. :func:`fine_tune_peft` is the plain PEFT loop of one seed: the
reference the stacked path is tested against.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow._core.figure import new_figure, save_figure
from mirrorflow._core.limits import check_deadline
from mirrorflow._core.progress import progress_bar
from mirrorflow._core.threads import torch_threads
from mirrorflow._core.validation import MirrorflowError
from mirrorflow.experiments.base import (
    CONFIG,
    Baseline,
    Decay,
    Experiment,
    ExperimentResult,
    RunCost,
    ScheduleConfig,
    SwitchTime,
    TimeGrid,
    first_line,
    mark_switch,
    run_grouped,
)
from mirrorflow.experiments.charlm import FINETUNE_PLAYS, PRESETS
from mirrorflow.experiments.charlm import TUNED_LORA_LM as TUNED
from mirrorflow.experiments.charlm import TUNED_LORA_LM_SEEDS as _SEEDS

__all__ = ["Config", "FineTuneData", "Result", "fine_tune_peft", "load_data", "plot", "run",
           "run_batch", "setup", "stacked_forward", "train_stacked", "unigram_loss"]

import peft  # noqa: F401  (import errors keep the experiment unregistered)
import transformers  # noqa: F401

CHUNK = 2000  # characters per split chunk
_TARGETS = ("c_attn", "c_proj", "c_fc")
#: fields that may differ between the seeds of one stacked run
STACKABLE = ("seed", "schedule", "wd", "switch_at", "budget")


@pdataclass(frozen=True, config=CONFIG)
class Config(ScheduleConfig):
    """lora-lm experiment. ``switch_at`` is a time ``t = Σ lr``: at the constant learning rate
    the decay goes off at step ``ceil(switch_at / lr)`` (default ``0.5 / 1e-2`` = step 50)."""

    pretrain: Literal["full", "quick", "tiny"] = Field(
        "quick", description="pretrained model (charlm.PRESETS): 'full' (~10 min once), 'quick' "
                             "(~1 min once), 'tiny' (tests)")
    n_plays: int = Field(4, ge=1, le=len(FINETUNE_PLAYS), description="fine-tuning plays")
    rank: int = Field(4, ge=1, description="LoRA rank r")
    lora_alpha: float = Field(8.0, gt=0, allow_inf_nan=False, description="LoRA scale s = alpha/r")
    target_modules: str = Field("c_attn", description="comma-separated of c_attn, c_proj, c_fc")
    block: int | None = Field(None, ge=4, description="context length (None: the pretraining's)")
    steps: int = Field(300, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="sequences per mini-batch")
    lr: float = Field(1e-2, gt=0, allow_inf_nan=False, description="AdamW learning rate (constant)")
    wd: Decay = 1.0
    switch_at: SwitchTime = 0.5
    eval_every: int = Field(25, ge=1, description="steps between two validation points")
    eval_chars: int = Field(16000, ge=64, description="characters of validation / test scored")
    threads: int | None = Field(1, ge=1, description="torch threads during training (None: keep)")

    @model_validator(mode="after")
    def _check(self):
        if "wd" in self.schedule_cls.options and self.wd == 0:
            raise ValueError(f"schedule {self.schedule!r} needs wd > 0 (or use schedule 'none')")
        end = self.steps * self.lr
        if "switch_at" in self.schedule_cls.options and self.switch_at > end * (1 + 1e-12):
            raise ValueError(f"switch_at ({self.switch_at:g}) is after the end of training "
                             f"(t = steps·lr = {end:g}); switch_at is a time t = Σ lr, e.g. "
                             f"switch_at={0.4 * end:g} for step {round(0.4 * self.steps)}")
        targets = self.targets
        bad = sorted(set(targets) - set(_TARGETS))
        if bad or not targets:
            raise ValueError(f"target_modules: unknown module(s) {bad or ['(none)']}; use a "
                             f"comma-separated subset of {', '.join(_TARGETS)}")
        limit = PRESETS[self.pretrain].block
        if self.block is not None and self.block > limit:
            raise ValueError(f"block ({self.block}) exceeds the context of pretraining "
                             f"{self.pretrain!r} ({limit}); use block <= {limit}")
        return self

    decay_rule = "start"  # AdamW through WeightDecayScheduler: off from step ceil(T / lr)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.target_modules.split(",") if t.strip())

    @property
    def context(self) -> int:
        return self.block or PRESETS[self.pretrain].block

    @property
    def switch_step(self) -> int:
        return math.ceil(self.switch_at / self.lr - 1e-9)

    def time_grid(self) -> TimeGrid:
        return TimeGrid(self.lr, self.steps * self.lr, "steps·lr")

    def cost(self) -> RunCost:
        spec = PRESETS[self.pretrain]
        D, L, T, V = spec.n_embd, spec.n_layer, self.context, 100
        per_token = (16 * D + 4 * spec.n_head * T) * L + 2 * V
        act = 4 * per_token * (self.batch_size * T + min(self.eval_chars, 64 * T))
        return RunCost(steps=self.steps, memory=int(2 * act + 300 * 2**20), shared=300 * 2**20,
                       what=f"activations of windows of {T} characters")


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Final metrics (losses in nats per character); ``curves``: ``step`` (evaluation steps),
    ``val_loss``, ``a``, ``ratio`` / ``effective_rank`` / ``balancedness`` (means over LoRA
    pairs), ``ratio/<pair>``, and per optimizer step ``train_step``, ``train_loss``,
    ``wd_used``. ``pretrained_val_loss``: the validation loss before fine-tuning (step 0,
    ``B = 0``). ``runtime_s``: the stacked run's wall time divided by its number of seeds."""

    config: Config
    val_loss: float
    test_loss: float
    unigram_val: float
    unigram_test: float
    pretrained_val_loss: float
    beats_baseline: bool
    integrated_wd: float
    nuclear_over_fro: float
    effective_rank: float
    balancedness: float
    lora_pairs: int
    trainable_params: int
    pretrain_sha256: str
    runtime_s: float
    status: str = "ok"  # "diverged": the training loss stopped being finite (metrics are NaN)
    diverged_step: int | None = None
    curves: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def baseline(self) -> Baseline:
        """The unigram model of the fine-tuning training split on the validation characters
        (``unigram_val``); a run beats it 5 % below (``beats_baseline``)."""
        return _baseline(self.unigram_val)


def _baseline(unigram_val: float) -> Baseline:
    return Baseline("val_loss", unigram_val, "unigram model of the training split (add-one "
                                             "smoothed character frequencies)")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FineTuneData:
    """Token ids of the fine-tuning plays: training window starts, held-out windows, baseline."""

    train: Any  # 1-D LongTensor: the training chunks, concatenated
    starts: Any  # LongTensor: valid window starts in ``train`` (inside one run of chunks)
    val: Any  # [n, block + 1] windows
    test: Any
    unigram_val: float
    unigram_test: float
    vocab_size: int


def unigram_loss(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats) on ``eval_ids`` of the add-one smoothed character frequencies of
    ``train_ids``: ``−mean log((n_c + 1) / (N + V))``."""
    counts = np.bincount(np.asarray(train_ids), minlength=vocab_size).astype(np.float64)
    logq = np.log((counts + 1.0) / (counts.sum() + vocab_size))
    return float(-logq[np.asarray(eval_ids)].mean())


def _windows(ids, block: int, limit: int):
    """Non-overlapping windows of ``block + 1`` ids (consecutive windows share one id), at most
    ``limit // block`` of them, spread evenly."""
    import torch

    rows = [ids[i:i + block + 1] for i in range(0, len(ids) - block, block)]
    if not rows:
        return torch.empty(0, block + 1, dtype=torch.long)
    keep = max(1, limit // block)
    if len(rows) > keep:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, keep).round().astype(int)]
    return torch.stack(rows)


def load_data(cfg: Config, vocab) -> FineTuneData:
    """Split the fine-tuning plays (module docstring) and compute the unigram baselines."""
    import torch

    from mirrorflow.experiments.charlm import play_text

    T = cfg.context
    train_parts, val_parts, test_parts = [], [], []
    for play in FINETUNE_PLAYS[:cfg.n_plays]:
        ids = vocab.encode(play_text(play))
        chunks = [ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)]
        run: list[np.ndarray] = []
        for j, c in enumerate(chunks):
            if j % 10 in (4, 9):
                (val_parts if j % 10 == 4 else test_parts).append(c)
                if run:
                    train_parts.append(np.concatenate(run))
                run = []
            else:
                run.append(c)
        if run:
            train_parts.append(np.concatenate(run))
    train_parts = [p for p in train_parts if len(p) > T + 1]
    if not train_parts or not val_parts or not test_parts:
        raise MirrorflowError("the fine-tuning plays give no training, validation or test text; "
                              "use more plays (n_plays) or a shorter block")
    starts, offset = [], 0
    for p in train_parts:
        starts.append(np.arange(offset, offset + len(p) - T))
        offset += len(p)
    train = np.concatenate(train_parts)
    val = _windows(torch.from_numpy(np.concatenate(val_parts)), T, cfg.eval_chars)
    test = _windows(torch.from_numpy(np.concatenate(test_parts)), T, cfg.eval_chars)
    return FineTuneData(
        train=torch.from_numpy(train), starts=torch.from_numpy(np.concatenate(starts)),
        val=val, test=test,
        unigram_val=unigram_loss(train, val[:, 1:].numpy().ravel(), vocab.size),
        unigram_test=unigram_loss(train, test[:, 1:].numpy().ravel(), vocab.size),
        vocab_size=vocab.size)


# --------------------------------------------------------------------------- models


def _pretrained(cfg: Config, progress: bool = False):
    from mirrorflow.experiments.charlm import load_or_pretrain

    pre = load_or_pretrain(cfg.pretrain, progress=progress)
    for p in pre.model.parameters():
        p.requires_grad_(False)
    return pre


def _lora_targets(cfg: Config, n_layer: int) -> list[str]:
    """Module names (``transformer.h.{i}.attn.c_attn`` …) that get LoRA, in model order."""
    names = []
    for i in range(n_layer):
        for mod in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            if mod.split(".")[1] in cfg.targets:
                names.append(f"transformer.h.{i}.{mod}")
    return names


def _wrap_lora(base, cfg: Config):
    """A PEFT model around a copy of ``base``, LoRA initialized from ``torch.manual_seed(seed+1)``
    (PEFT's init: ``A`` Kaiming-uniform, ``B = 0``)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(base)
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.targets), fan_in_fan_out=True)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                category=FutureWarning)  # transformers' notice, inside PEFT
        torch.manual_seed(cfg.seed + 1)
        return get_peft_model(model, lcfg)


def _lora_of(peft_model, names: list[str]):
    """``{name: (A [r, in], B [out, r])}`` of a PEFT model, in the order of ``names``."""
    mods = dict(peft_model.get_base_model().named_modules())
    return {n: (mods[n].lora_A["default"].weight, mods[n].lora_B["default"].weight) for n in names}


def _base_weights(model) -> dict[str, Any]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def stacked_forward(base: dict, lora: dict, scaling: float, ids, n_head: int):
    """Logits ``[S, B, T, V]`` of GPT-2 (``base``: a ``GPT2LMHeadModel`` state dict) with LoRA
    factors stacked over a leading seed dimension: ``lora[name] = (A [S, r, in], B [S, out, r])``;
    ``ids``: ``[S, B, T]``. The frozen weights are shared: every projection is one matmul over
    all seeds' tokens, plus ``s·(x Aᵀ) Bᵀ`` per seed (batched)."""
    import torch
    import torch.nn.functional as F

    from mirrorflow.experiments._fused import gelu_tanh

    S, Bn, T = ids.shape
    wte = base["transformer.wte.weight"]
    D = wte.shape[1]
    x = (wte[ids] + base["transformer.wpe.weight"][:T]).reshape(S, Bn * T, D)
    n_layer = sum(1 for k in base if k.endswith(".ln_1.weight"))

    def proj(h, name):
        W, b = base[f"{name}.weight"], base[f"{name}.bias"]
        out = torch.addmm(b, h.reshape(-1, h.shape[-1]), W).view(S, h.shape[1], W.shape[1])
        if name in lora:
            A, B = lora[name]
            out = out + scaling * torch.bmm(torch.bmm(h, A.transpose(1, 2)), B.transpose(1, 2))
        return out

    def norm(h, name):
        return F.layer_norm(h, (D,), base[f"{name}.weight"], base[f"{name}.bias"], eps=1e-5)

    dh = D // n_head
    for i in range(n_layer):
        p = f"transformer.h.{i}"
        q, k, v = proj(norm(x, f"{p}.ln_1"), f"{p}.attn.c_attn").split(D, dim=-1)

        def heads(t):
            return t.reshape(S * Bn, T, n_head, dh).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        x = x + proj(y.transpose(1, 2).reshape(S, Bn * T, D), f"{p}.attn.c_proj")
        # GPT-2's tanh GELU, one vectorized pass each way (torch's CPU kernel for the tanh
        # form is a scalar loop: a third of the step before; docs/benchmarks.md)
        m = gelu_tanh(proj(norm(x, f"{p}.ln_2"), f"{p}.mlp.c_fc"))
        x = x + proj(m, f"{p}.mlp.c_proj")
    x = norm(x, "transformer.ln_f")
    return (x @ wte.T).view(S, Bn, T, -1)


# --------------------------------------------------------------------------- training


class _Decay:
    """One seed's decay: a :class:`WeightDecayScheduler` on a parameter-free AdamW (one dummy
    tensor, never given a gradient) gives ``λ_k`` and ``a`` exactly as on a real optimizer."""

    def __init__(self, cfg: Config):
        import torch

        from mirrorflow.schedules import training
        from mirrorflow.schedules.scheduler import WeightDecayScheduler

        self.used: list[float] = []
        tsched = training.from_continuous(cfg.make_schedule(), cfg.lr, cfg.steps)  # None: no decay
        self.opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=cfg.lr,
                                     weight_decay=cfg.wd if tsched is not None else 0.0)
        self.sched = None
        if tsched is not None:
            self.sched = WeightDecayScheduler(self.opt, tsched, total_steps=cfg.steps)
        self.opt.register_step_pre_hook(
            lambda o, a, k: self.used.append(float(o.param_groups[0]["weight_decay"])))

    def next(self) -> float:
        """``λ_k`` of the coming step (and count the step into ``a``)."""
        self.opt.step()
        return self.used[-1]

    @property
    def integrated(self) -> float:
        return self.sched.integrated if self.sched is not None else 0.0


def _group_key(cfg: Config):
    return tuple(getattr(cfg, f.name) for f in Config.__dataclass_fields__.values()
                 if f.name not in STACKABLE)


def run_batch(configs: Sequence[Config], progress: bool = False) -> list[Result]:
    """Run configs, stacking those that differ only in seed and schedule (``STACKABLE``)."""
    return run_grouped(list(configs), _group_key, lambda cs, p: _train_stacked(cs, p), progress)


def run(config: Config, progress: bool = False) -> Result:
    """One fine-tuning (the stacked path with one seed)."""
    return _train_stacked([config], progress)[0]


def _train_stacked(cfgs: list[Config], progress: bool) -> list[Result]:
    return train_stacked(cfgs, progress)[0]


def setup(cfg: Config, progress: bool = False):
    """``(pretrained model, fine-tuning data)`` of ``cfg`` (what every run reads first)."""
    pre = _pretrained(cfg, progress)
    return pre, load_data(cfg, pre.vocab)


def train_stacked(cfgs: Sequence[Config], progress: bool = False, prepared=None
                  ) -> tuple[list[Result], dict]:
    """Train ``cfgs`` (equal but for :data:`STACKABLE` fields) as one stacked model; return the
    results and the final factors ``{module name: (A [S, r, in], B [S, out, r])}``.
    ``prepared``: :func:`setup` of the configs, when already at hand."""

    cfgs = list(cfgs)
    keys = {_group_key(c) for c in cfgs}
    if len(keys) != 1:
        raise MirrorflowError(f"stacked configs may differ only in {', '.join(STACKABLE)}; "
                              "use run_batch to group them")
    with torch_threads(cfgs[0].threads):
        return _train(cfgs, progress, prepared)


def init_lora(cfgs: list[Config], base_model):
    """Stacked LoRA factors ``{name: (A [S, r, in], B [S, out, r])}`` (leaf tensors with
    gradients) from each config's PEFT initialization."""
    import torch

    names = _lora_targets(cfgs[0], base_model.config.n_layer)
    per_seed = [_lora_of(_wrap_lora(base_model, c), names) for c in cfgs]
    return {n: tuple(torch.stack([s[n][j].detach() for s in per_seed]).requires_grad_(True)
                     for j in (0, 1)) for n in names}


def evaluate_stacked(base: dict, lora: dict, scaling: float, windows, n_head: int,
                     chunk: int = 32):
    """Mean next-character cross-entropy of every seed on ``windows`` ``[n, T + 1]``: ``[S]``."""
    import torch
    import torch.nn.functional as F

    S = next(iter(lora.values()))[0].shape[0]
    total = torch.zeros(S, dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for i in range(0, len(windows), chunk):
            w = windows[i:i + chunk]
            ids = w[:, :-1].unsqueeze(0).expand(S, -1, -1)
            logits = stacked_forward(base, lora, scaling, ids, n_head)
            tgt = w[:, 1:].reshape(1, -1).expand(S, -1).reshape(-1)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt, reduction="none")
            total += ce.view(S, -1).double().sum(1)
            count += tgt.numel() // S
    return (total / count).numpy()


def _train(cfgs: list[Config], progress: bool, prepared=None) -> tuple[list[Result], dict]:
    import torch
    import torch.nn.functional as F

    from mirrorflow.schedules.diagnostics import FactorPair, diagnose, summarize

    t0 = time.perf_counter()
    c0 = cfgs[0]
    S = len(cfgs)
    pre, data = setup(c0, progress) if prepared is None else prepared
    base = _base_weights(pre.model)
    n_head = pre.spec.n_head
    scaling = c0.lora_alpha / c0.rank
    lora = init_lora(cfgs, pre.model)
    params = [t for pair in lora.values() for t in pair]
    opt = torch.optim.AdamW(params, lr=c0.lr, weight_decay=0.0)
    decays = [_Decay(c) for c in cfgs]
    gens = [torch.Generator().manual_seed(c.seed) for c in cfgs]
    T, Bn = c0.context, c0.batch_size
    offsets = torch.arange(T + 1)
    short = {n: n.removeprefix("transformer.") for n in lora}
    curves: list[dict[str, list]] = [
        {k: [] for k in ("step", "val_loss", "a", "ratio", "effective_rank", "balancedness",
                         *(f"ratio/{short[n]}" for n in lora))} for _ in cfgs]
    train_loss = np.full((c0.steps, S), np.nan)
    diverged: list[int | None] = [None] * S

    def diagnostics(s: int):
        pairs = [FactorPair(short[n], B[s], A[s].T, scaling, "lora") for n, (A, B) in lora.items()]
        return diagnose(pairs)

    def evaluate(step: int):
        vl = evaluate_stacked(base, lora, scaling, data.val, n_head)
        for s, c in enumerate(curves):
            if diverged[s] is not None:
                continue
            d = diagnostics(s)
            means = summarize(d, prefix="")  # pairs with B = 0 (step 0) are undefined, not 0
            c["step"].append(step)
            c["val_loss"].append(float(vl[s]))
            c["a"].append(decays[s].integrated)
            for key, name in (("ratio", "nuclear_over_fro"), ("effective_rank", "effective_rank"),
                              ("balancedness", "balancedness")):
                c[key].append(means.get(f"{name}_mean", float("nan")))
            for name, x in d.items():
                c[f"ratio/{name}"].append(x.nuclear_over_fro)

    eval_at = {*range(0, c0.steps + 1, c0.eval_every), c0.steps}
    for c in cfgs:  # also evaluate where a decay ends
        if c.make_schedule().breakpoints:
            eval_at.add(min(math.ceil(c.make_schedule().settle_time / c.lr - 1e-9), c0.steps))
    label = f"lora-lm ({S} seed{'s' if S > 1 else ''})"
    with progress_bar(c0.steps, label, progress) as advance:
        for step in range(c0.steps):
            if step in eval_at:
                evaluate(step)
            idx = torch.stack([data.starts[torch.randint(len(data.starts), (Bn,), generator=g)]
                               for g in gens])  # [S, B]: each seed its own data order
            batch = data.train[idx[..., None] + offsets]  # [S, B, T + 1]
            logits = stacked_forward(base, lora, scaling, batch[..., :-1], n_head)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                 batch[..., 1:].reshape(-1), reduction="none")
            losses = ce.view(S, -1).mean(1)  # each seed's own mean: gradients never mix
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            with torch.no_grad():  # AdamW's decoupled decay, per seed, before its update
                factor = torch.tensor([1.0 - c0.lr * d.next() for d in decays],
                                      dtype=torch.float32)
                for p in params:
                    p.mul_(factor.view(-1, *([1] * (p.ndim - 1))))
            opt.step()
            lv = losses.detach().numpy()
            train_loss[step] = lv
            for s in range(S):
                if diverged[s] is None and not np.isfinite(lv[s]):
                    diverged[s] = step + 1
            advance(1)
            if all(d is not None for d in diverged):
                break
            check_deadline(f"lora-lm at step {step + 1} of {c0.steps}")
        else:
            evaluate(c0.steps)
    test = evaluate_stacked(base, lora, scaling, data.test, n_head)
    runtime = (time.perf_counter() - t0) / S
    nan = float("nan")
    results = []
    trainable = sum(p[0].numel() for p in params)
    for s, c in enumerate(cfgs):
        ok = diverged[s] is None
        means = summarize(diagnostics(s), prefix="") if ok else {}
        cv = curves[s]
        n_steps = c0.steps if diverged[s] is None else diverged[s]
        val = cv["val_loss"][-1] if ok else nan
        results.append(Result(
            config=c, val_loss=val, test_loss=float(test[s]) if ok else nan,
            unigram_val=data.unigram_val, unigram_test=data.unigram_test,
            pretrained_val_loss=cv["val_loss"][0] if cv["val_loss"] else nan,
            beats_baseline=_baseline(data.unigram_val).beaten_by({"val_loss": val}),
            integrated_wd=decays[s].integrated,
            nuclear_over_fro=means.get("nuclear_over_fro_mean", nan),
            effective_rank=means.get("effective_rank_mean", nan),
            balancedness=means.get("balancedness_mean", nan),
            lora_pairs=len(lora), trainable_params=trainable,
            pretrain_sha256=pre.weights_hash, runtime_s=runtime,
            status="ok" if ok else "diverged", diverged_step=diverged[s],
            curves={**{k: np.asarray(v, dtype=np.float64) for k, v in cv.items()},
                    "train_step": np.arange(n_steps, dtype=np.float64),
                    "train_loss": train_loss[:n_steps, s].copy(),
                    "wd_used": np.asarray(decays[s].used[:n_steps], dtype=np.float64)}))
    return results, {n: (A.detach(), B.detach()) for n, (A, B) in lora.items()}


def fine_tune_peft(cfg: Config, steps: int | None = None, evaluate: bool = True, prepared=None):
    """The reference loop for one seed: the PEFT model (``GPT2LMHeadModel`` + LoRA) trained by
    ``torch.optim.AdamW`` with the :class:`WeightDecayScheduler` on the real optimizer, the same
    initialization and data order as the stacked path. Returns ``(model, train_losses, wd_used,
    a, val_loss)`` (``val_loss`` None unless ``evaluate``); ``prepared`` as in
    :func:`train_stacked`."""
    import torch
    import torch.nn.functional as F

    from mirrorflow.schedules import training
    from mirrorflow.schedules.scheduler import WeightDecayScheduler

    steps = cfg.steps if steps is None else steps
    with torch_threads(cfg.threads):
        pre, data = setup(cfg) if prepared is None else prepared
        model = _wrap_lora(pre.model, cfg)
        params = [p for n, p in model.named_parameters() if p.requires_grad]
        tsched = training.from_continuous(cfg.make_schedule(), cfg.lr, cfg.steps)  # None: no decay
        opt = torch.optim.AdamW(params, lr=cfg.lr,
                                weight_decay=cfg.wd if tsched is not None else 0.0)
        sched = None
        if tsched is not None:
            sched = WeightDecayScheduler(opt, tsched, total_steps=cfg.steps)
        used: list[float] = []
        opt.register_step_pre_hook(lambda o, a, k: used.append(float(o.param_groups[0]["weight_decay"])))
        gen = torch.Generator().manual_seed(cfg.seed)
        offsets = torch.arange(cfg.context + 1)
        losses = []
        model.train()
        for _ in range(steps):
            idx = data.starts[torch.randint(len(data.starts), (cfg.batch_size,), generator=gen)]
            batch = data.train[idx[:, None] + offsets]
            logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        val = None
        if evaluate:
            model.eval()
            with torch.no_grad():
                w = data.val
                logits = model(input_ids=w[:, :-1]).logits
                val = float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            w[:, 1:].reshape(-1)))
    a = sched.integrated if sched is not None else 0.0
    return model, np.asarray(losses), np.asarray(used), a, val


# --------------------------------------------------------------------------- figure


_COLORS = {"none": "tab:blue", "constant": "tab:red", "switch-off": "tab:green",
           "budget": "tab:purple"}


_DASHES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = (".", "x", "^", "s")


def _setting_name(c: Config, several_lr: bool) -> str:
    """``schedule (wd=…, t=…, lr=…)``: the fields that tell a sweep's settings apart (the
    tuned cases vary λ, the switch point and, for no decay, the learning rate)."""
    options = c.schedule_cls.options
    parts = [f"wd={c.wd:g}"] if "wd" in options else []
    if "switch_at" in options:
        parts.append(f"t={c.switch_at:g}")
    if "budget" in options:
        parts.append(f"a={c.budget:g}")
    if several_lr:
        parts.append(f"lr={c.lr:g}")
    return c.schedule + (f" ({', '.join(parts)})" if parts else "")


def plot(results: Sequence[Result], path: Path) -> None:
    """Training and validation loss (unigram baseline dashed) and the mean nuclear/Frobenius
    ratio of the LoRA updates against the step, one line per run, coloured by schedule, dash
    and marker by setting within the schedule (:func:`_setting_name`)."""
    fig, axes = new_figure(1, 3, figsize=(15, 4))
    seen: set[str] = set()
    several_lr = len({r.config.lr for r in results}) > 1
    styles: dict[str, dict[str, str]] = {}  # setting -> dash and marker (colour: schedule)
    for r in results:
        c = r.config
        key = _setting_name(c, several_lr)
        color = _COLORS.get(c.schedule, "k")
        if key not in styles:
            i = sum(k.split(" ")[0] == c.schedule for k in styles)
            styles[key] = {"ls": _DASHES[i % len(_DASHES)], "marker": _MARKERS[i % len(_MARKERS)]}
        st = styles[key]
        label = None if key in seen else f"{key}, a={r.integrated_wd:.3g}"
        seen.add(key)
        tl = r.curves.get("train_loss", np.array([]))
        if len(tl):
            k = max(1, len(tl) // 15)
            smooth = np.convolve(tl, np.ones(k) / k, mode="valid")
            axes[0].plot(np.arange(len(smooth)) + k - 1, smooth, color=color, alpha=0.6, lw=1,
                         ls=st["ls"], label=label)
        axes[1].plot(r.curves["step"], r.curves["val_loss"], color=color, alpha=0.7, lw=1,
                     ls=st["ls"], marker=st["marker"], ms=4, label=label)
        axes[2].plot(r.curves["step"], r.curves["ratio"], color=color, alpha=0.7, lw=1,
                     ls=st["ls"], marker=st["marker"], ms=4, label=label)
        mark_switch(axes, c, per_unit=1.0 / c.lr)
    if results:
        uni, pre = results[0].unigram_val, results[0].pretrained_val_loss
        lo = min(float(np.nanmin(r.curves["val_loss"])) for r in results)
        hi = max(float(np.nanmax(r.curves["val_loss"])) for r in results)  # every run on the axis
        top = max(pre, lo, hi) + 0.15 * (max(pre, hi) - lo + 1e-3)
        if uni <= top:
            axes[1].axhline(uni, color="k", ls="--", lw=1, label=f"unigram baseline {uni:.3f}")
        else:  # far above: keep the scale on the runs and say where it is
            axes[1].set_ylim(lo - 0.05 * (pre - lo + 1e-3), top)
            axes[1].annotate(f"unigram baseline: {uni:.3f} (above the axis)", (0.02, 0.97),
                             xycoords="axes fraction", va="top", fontsize=8)
    axes[0].set(xlabel="step", ylabel="nats / character", title="training loss (moving mean)")
    axes[1].set(xlabel="step", ylabel="nats / character",
                title="validation loss (step 0: pretrained)")
    axes[2].set(xlabel="step", ylabel="‖sBA‖_* / ‖sBA‖_F (mean over layers)",
                title="LoRA update: nuclear / Frobenius")
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:  # below the panels: inside, it covers the curves or the baseline's note
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(handles)),
                   fontsize=7)
    fig.suptitle("lora-lm: char-level GPT-2, LoRA on held-out plays; dotted = decay switched off")
    save_figure(fig, path)


# --------------------------------------------------------------------------- sweeps

_MAIN = {"zip": {"schedule": ["none", "constant", "switch-off"]}}
def _tuned_cases(which: str) -> list[dict[str, Any]]:
    """The sweep cases of :data:`TUNED` (``which``: quick / full): one per family, the
    switch-off (λ, t) pairs zipped, the other grids as they are (seeds: the sweep's)."""
    t = TUNED[which]
    return [{"base": {"schedule": "switch-off"}, "zip": dict(t["switch-off"])},
            {"base": {"schedule": "constant"}, "grid": {**_SEEDS[which], **t["constant"]}},
            {"base": {"schedule": "none"}, "grid": {**_SEEDS[which], **t["none"]}}]


SWEEPS = {
    "quick": {
        "base": {"pretrain": "quick"},
        "grid": _SEEDS["quick"],
        "case": [_MAIN, *_tuned_cases("quick")],
    },
    # full: the 'full' pretrained model (4 blocks of width 128), 20 seeds per arm (issue 22:
    # decisive verdicts) within the full report's hour on 2 cores, so context 64, batch 8 and
    # 200 steps (about 14 s a run; 600 steps of batch 16 at context 128 took about 150 s)
    "full": {
        "base": {"pretrain": "full", "block": 64, "steps": 200, "batch_size": 8,
                 "switch_at": 1.0, "eval_every": 50, "eval_chars": 16000},
        "grid": _SEEDS["full"],
        "case": [_MAIN, *_tuned_cases("full")],
    },
}

def prepare(configs: Sequence[Config]) -> None:
    """Pretrain (or find cached) the model of every ``pretrain`` spec among ``configs``: the
    one-time part of lora-lm's runs (:func:`~mirrorflow.experiments.charlm.load_or_pretrain`,
    under its lock, so runs started meanwhile wait for it instead of repeating it)."""
    from mirrorflow.experiments.charlm import load_or_pretrain

    for name in sorted({c.pretrain for c in configs}):
        load_or_pretrain(name)


EXPERIMENT = Experiment(
    name="lora-lm",
    config_cls=Config,
    result_cls=Result,
    run=run,
    run_batch=run_batch,
    plot=plot,
    description=first_line(__doc__),
    sweeps=SWEEPS,
    prepare=prepare,
    batch=8,  # seeds stacked per task (bench: 1.2-1.4x at 8 seeds, no more at 16)
    smoke={"pretrain": "tiny", "steps": 4, "eval_every": 2, "switch_at": 0.02, "batch_size": 4,
           "eval_chars": 256, "n_plays": 1},
)
