"""Attention with weight-decay schedules: the score matrix ``W_Q W_Kᵀ`` is a factorized ``U Vᵀ``
(docs/theory.md §6).

Two settings behind one Config (``setting=``):

``teacher`` (theory side)
    A single attention layer ``out(Z) = softmax(Z W_Q W_Kᵀ Zᵀ) Z`` (values fixed to the identity,
    so only the score matrix ``M = W_Q W_Kᵀ`` is learned) on sequences ``Z`` of ``tokens`` Gaussian
    tokens in ``R^dim``. The teacher has a rank-``teacher_rank`` score matrix ``M*``. Full-batch
    gradient descent in float64 on ``½ mean ‖out − out*‖²`` with coupled weight decay on both
    factors, batched over the schedules compared. Reports the test loss, the distance
    ``‖M − M*‖_F / ‖M*‖_F``, the nuclear/Frobenius ratio and effective rank of ``M`` and the
    balancedness ``‖W_QᵀW_Q − W_KᵀW_K‖_F`` (theory §6: ``∝ e^{−2a}``).

``vit`` (practice side)
    A small vision transformer (patch embedding, ``depth`` pre-norm blocks, class token) trained
    with AdamW on scikit-learn's digits (offline, 8×8) or CIFAR-10 through Hugging Face
    ``datasets`` (online only). The decay is scheduled by
    :class:`mirrorflow.schedules.WeightDecayScheduler`; per-layer nuclear/Frobenius ratios of
    ``W_Q,h W_K,hᵀ`` (mean over heads) come from :mod:`mirrorflow.schedules.diagnostics`.

Schedules use continuous time ``t = Σ η_k`` in both settings (for AdamW ``η_k`` is the learning
rate, and ``a = Σ η_k λ_k`` the integrated decoupled shrinkage, theory §1). ``wd`` and
``switch_at`` default per setting (see :data:`DEFAULTS`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass

from mirrorflow._progress import progress_bar
from mirrorflow._threads import torch_threads
from mirrorflow._validation import MirrorflowError, check_choice
from mirrorflow.dynamics.matrix import effective_rank
from mirrorflow.experiments.base import CONFIG, Experiment, ExperimentResult
from mirrorflow.report.figure import mark_switch, new_figure
from mirrorflow.schedules.continuous import Constant, NoDecay, Schedule, make_schedule

__all__ = [
    "DATASETS",
    "DEFAULTS",
    "Config",
    "Result",
    "TinyViT",
    "images_from_hf",
    "load_image_dataset",
    "patchify",
    "plot",
    "run",
    "score_ratios",
    "train_vit",
    "training_schedule",
]

#: Image datasets and their (channels, side) sizes.
DATASETS: dict[str, tuple[int, int]] = {"digits": (1, 8), "cifar10": (3, 32)}
#: Per-setting defaults of ``wd`` and ``switch_at`` (continuous time ``t = Σ η``).
DEFAULTS = {"teacher": {"wd": 0.05, "switch_at": 40.0}, "vit": {"wd": 1.0, "switch_at": 0.6}}
COMPARE_LABELS = ("none", "constant")


@pdataclass(frozen=True, config=CONFIG)
class Config:
    """Attention experiment. ``setting="teacher"`` (theory) or ``"vit"`` (digits / CIFAR-10)."""

    setting: Literal["teacher", "vit"] = "teacher"
    schedule: Literal["none", "constant", "switch-off", "budget"] = "switch-off"
    wd: float | None = Field(None, ge=0, allow_inf_nan=False, description="decay (None: per setting)")
    switch_at: float | None = Field(None, ge=0, allow_inf_nan=False, description="switch time t = Σ η")
    budget: float | None = Field(None, gt=0, allow_inf_nan=False, description="target a for 'budget'")
    compare: bool = Field(True, description="also train with 'none' and 'constant' decay")
    seed: int = Field(0, ge=0)
    # -- teacher setting
    dim: int = Field(8, ge=1, description="token dimension (teacher) / embedding width (vit)")
    teacher_rank: int = Field(1, ge=1, description="rank of the teacher score matrix")
    teacher_norm: float = Field(4.0, gt=0, allow_inf_nan=False, description="‖M*‖_F")
    tokens: int = Field(8, ge=2, description="sequence length (teacher)")
    n_train: int = Field(12, ge=1, description="training sequences (teacher)")
    n_test: int = Field(500, ge=1, description="test sequences (teacher)")
    init_scale: float = Field(1.0, gt=0, allow_inf_nan=False, description="W_Q, W_K entries N(0, s²/dim)")
    step: float = Field(0.5, gt=0, allow_inf_nan=False, description="GD step (teacher)")
    t_max: float = Field(300.0, gt=0, allow_inf_nan=False, description="training time (teacher)")
    # -- vit setting
    dataset: str = Field("digits", description="digits | cifar10")
    patch_size: int = Field(2, ge=1)
    depth: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(2, ge=1)
    lr: float = Field(2e-3, gt=0, allow_inf_nan=False, description="AdamW learning rate")
    steps: int = Field(600, ge=1, description="AdamW steps")
    batch_size: int = Field(128, ge=1)
    val_fraction: float = Field(0.25, gt=0, lt=1)
    max_samples: int | None = Field(None, ge=10, description="subsample the dataset")
    eval_every: int = Field(50, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.teacher_rank > self.dim:
            raise ValueError(f"teacher_rank ({self.teacher_rank}) must be <= dim ({self.dim})")
        if self.schedule == "budget" and self.budget is None:
            raise ValueError("schedule 'budget' needs budget=A (the target integrated decay)")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        side = DATASETS[self.dataset][1]
        if side % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide the {side}×{side} images "
                             f"of {self.dataset}; pick a divisor of {side}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        return self

    @property
    def decay(self) -> float:
        return DEFAULTS[self.setting]["wd"] if self.wd is None else self.wd

    @property
    def switch_time(self) -> float:
        return DEFAULTS[self.setting]["switch_at"] if self.switch_at is None else self.switch_at

    def make_schedule(self) -> Schedule:
        return make_schedule(self.schedule, self.decay, self.switch_time, self.budget)


@dataclass(frozen=True)
class Result(ExperimentResult):
    """Metrics of one run, with ``*_none`` / ``*_constant`` for the comparison runs.

    ``test_loss``: teacher test MSE, or ViT validation cross-entropy. ``accuracy``: ViT only.
    ``teacher_distance``: teacher only. ``nuclear_over_fro``: of ``W_Q W_Kᵀ`` (ViT: mean over
    layers of the per-layer mean over heads; per layer in ``nuclear_over_fro_per_layer``).
    ``curves``: ``time``, ``a``, ``test_loss``, ``nuclear_over_fro`` (S × layers), … per run label.
    """

    config: Config
    setting: str
    test_loss: float
    accuracy: float | None
    teacher_distance: float | None
    nuclear_over_fro: float
    nuclear_over_fro_per_layer: tuple[float, ...]
    effective_rank: float
    balancedness: float
    integrated_wd: float
    test_loss_none: float | None
    test_loss_constant: float | None
    accuracy_none: float | None
    accuracy_constant: float | None
    teacher_distance_none: float | None
    teacher_distance_constant: float | None
    nuclear_over_fro_none: float | None
    nuclear_over_fro_constant: float | None
    runtime_s: float
    curves: dict[str, Any] = field(repr=False, default_factory=dict)


def run(config: Config, progress: bool = False) -> Result:
    """Run one attention experiment (the comparison schedules included when ``compare``)."""
    t0 = time.perf_counter()
    scheds = [config.make_schedule()]
    if config.compare:
        scheds += [NoDecay(), Constant(config.decay)]
    if config.setting == "teacher":
        runs = _run_teacher(config, scheds, progress)
    else:
        runs = [train_vit(config, s, progress) for s in scheds]
    main = runs[0]
    get = (lambda i, k: runs[i][k]) if config.compare else (lambda i, k: None)
    curves: dict[str, Any] = {}
    for label, r in zip(["main", *COMPARE_LABELS], runs):
        prefix = "" if label == "main" else f"{label}/"
        curves.update({prefix + k: v for k, v in r["curves"].items()})
    return Result(
        config=config,
        setting=config.setting,
        test_loss=main["test_loss"],
        accuracy=main.get("accuracy"),
        teacher_distance=main.get("teacher_distance"),
        nuclear_over_fro=float(np.mean(main["ratios"])),
        nuclear_over_fro_per_layer=tuple(float(x) for x in main["ratios"]),
        effective_rank=main["effective_rank"],
        balancedness=main["balancedness"],
        integrated_wd=main["a"],
        test_loss_none=get(1, "test_loss"),
        test_loss_constant=get(2, "test_loss"),
        accuracy_none=get(1, "accuracy") if config.setting == "vit" else None,
        accuracy_constant=get(2, "accuracy") if config.setting == "vit" else None,
        teacher_distance_none=get(1, "teacher_distance") if config.setting == "teacher" else None,
        teacher_distance_constant=get(2, "teacher_distance") if config.setting == "teacher" else None,
        nuclear_over_fro_none=None if not config.compare else float(np.mean(runs[1]["ratios"])),
        nuclear_over_fro_constant=None if not config.compare else float(np.mean(runs[2]["ratios"])),
        runtime_s=time.perf_counter() - t0,
        curves=curves,
    )


# ============================================================================ teacher (theory)

def _nuc_over_fro(sv: np.ndarray) -> np.ndarray:
    fro = np.sqrt((sv**2).sum(-1))
    return sv.sum(-1) / np.where(fro > 0, fro, 1.0)


def attention_forward(Z: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """``softmax(Z M Zᵀ) Z`` row-wise; ``Z``: (n, T, d), ``M``: (..., d, d) → (..., n, T, d)."""
    scores = torch.einsum("nti,...ij,nsj->...nts", Z, M, Z)
    return torch.softmax(scores, dim=-1) @ Z


def make_teacher_problem(cfg: Config):
    """Draw ``(M*, Z_train, Z_test, W_Q0, W_K0)`` from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(cfg.seed)
    d, r = cfg.dim, cfg.teacher_rank
    M = rng.normal(size=(d, r)) @ rng.normal(size=(d, r)).T
    M *= cfg.teacher_norm / np.linalg.norm(M)
    Z_train = rng.normal(0, 1 / np.sqrt(d), size=(cfg.n_train, cfg.tokens, d))
    Z_test = rng.normal(0, 1 / np.sqrt(d), size=(cfg.n_test, cfg.tokens, d))
    sd = cfg.init_scale / np.sqrt(d)
    return M, Z_train, Z_test, rng.normal(0, sd, size=(d, d)), rng.normal(0, sd, size=(d, d))


def _run_teacher(cfg: Config, scheds: list[Schedule], progress: bool) -> list[dict]:
    """Full-batch GD on ``(W_Q, W_K)`` for each schedule at once (float64, autograd)."""
    M_star, Ztr, Zte, Q0, K0 = make_teacher_problem(cfg)
    B = len(scheds)
    f64 = dict(dtype=torch.float64)
    Ztr_t, Zte_t, Ms = (torch.as_tensor(x, **f64) for x in (Ztr, Zte, M_star))
    Ytr = attention_forward(Ztr_t, Ms)
    Yte = attention_forward(Zte_t, Ms)
    Wq = torch.as_tensor(np.broadcast_to(Q0, (B, *Q0.shape)).copy(), **f64).requires_grad_(True)
    Wk = torch.as_tensor(np.broadcast_to(K0, (B, *K0.shape)).copy(), **f64).requires_grad_(True)
    total = math.ceil(cfg.t_max / cfg.step - 1e-9)
    record = set(np.unique(np.round(np.concatenate([
        np.linspace(0, total, 61), np.geomspace(1, total, 40)])).astype(int)).tolist())
    hist: dict[str, list] = {k: [] for k in ("time", "a", "test_loss", "train_loss", "teacher_distance",
                                              "nuclear_over_fro", "effective_rank", "balancedness")}
    a = np.zeros(B)

    def loss_per_run(Wq, Wk, Z, Y):
        out = attention_forward(Z, Wq @ Wk.transpose(1, 2))
        return 0.5 * ((out - Y) ** 2).sum((-1, -2)).mean(-1)  # (B,)

    def snapshot(k):
        with torch.no_grad():
            M = (Wq @ Wk.transpose(1, 2)).numpy()
            sv = np.linalg.svd(M, compute_uv=False)
            hist["time"].append(k * cfg.step)
            hist["a"].append(a.copy())
            hist["test_loss"].append(loss_per_run(Wq, Wk, Zte_t, Yte).numpy())
            hist["train_loss"].append(loss_per_run(Wq, Wk, Ztr_t, Ytr).numpy())
            hist["teacher_distance"].append(np.linalg.norm(M - M_star, axis=(1, 2)) / cfg.teacher_norm)
            hist["nuclear_over_fro"].append(_nuc_over_fro(sv))
            hist["effective_rank"].append(effective_rank(sv))
            D = Wq.transpose(1, 2) @ Wq - Wk.transpose(1, 2) @ Wk
            hist["balancedness"].append(torch.linalg.matrix_norm(D).numpy())

    with torch_threads(1), progress_bar(total, "attention (teacher)", progress) as advance:
        for k in range(total):
            if k in record:
                snapshot(k)
            alpha = torch.as_tensor([float(s.rate((k + 0.5) * cfg.step)) for s in scheds], **f64)
            loss = loss_per_run(Wq, Wk, Ztr_t, Ytr).sum()
            gq, gk = torch.autograd.grad(loss, (Wq, Wk))
            with torch.no_grad():
                al = alpha.view(B, 1, 1)
                Wq -= cfg.step * (gq + al * Wq)
                Wk -= cfg.step * (gk + al * Wk)
            a += cfg.step * alpha.numpy()
            advance()
        snapshot(total)
    arr = {k: np.asarray(v) for k, v in hist.items()}
    out = []
    for b in range(B):
        curves = {"time": arr["time"]} | {k: arr[k][:, b] for k in arr if k != "time"}
        curves["nuclear_over_fro"] = curves["nuclear_over_fro"][:, None]  # one layer
        out.append({
            "test_loss": float(arr["test_loss"][-1, b]),
            "teacher_distance": float(arr["teacher_distance"][-1, b]),
            "ratios": [float(arr["nuclear_over_fro"][-1, b])],
            "effective_rank": float(arr["effective_rank"][-1, b]),
            "balancedness": float(arr["balancedness"][-1, b]),
            "a": float(a[b]),
            "curves": curves,
        })
    return out


# ============================================================================ ViT (practice)

def images_from_hf(ds, image_key: str = "img", label_key: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """Convert a Hugging Face ``datasets.Dataset`` (or any column mapping) of images to arrays.

    Returns float32 images ``(N, C, H, W)`` in ``[0, 1]`` and int64 labels. Images may be PIL
    images or arrays ``(H, W)`` / ``(H, W, C)`` of uint8.
    """
    try:
        imgs, labels = ds[image_key], ds[label_key]
    except (KeyError, TypeError):
        raise MirrorflowError(f"dataset has no columns {image_key!r} and {label_key!r}; pass "
                              "image_key= and label_key=") from None
    arrs = [np.asarray(im) for im in imgs]
    if not arrs:
        raise MirrorflowError("the dataset is empty; pass a dataset with at least one image")
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise MirrorflowError(f"images have different shapes {sorted(shapes)}; resize them first")
    X = np.stack(arrs).astype(np.float32)
    if X.ndim == 3:
        X = X[:, None]
    elif X.ndim == 4:
        X = X.transpose(0, 3, 1, 2)
    else:
        raise MirrorflowError(f"images must be (H, W) or (H, W, C), got {X.shape[1:]}")
    if X.max() > 1.0:
        X /= 255.0
    return X, np.asarray(labels, dtype=np.int64)


def load_image_dataset(name: str, *, max_samples: int | None = None,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, C, H, W)`` float32 in ``[0, 1]`` and labels for ``digits`` or ``cifar10``.

    ``digits``: scikit-learn's bundled 8×8 digits (offline). ``cifar10``: the training split of
    ``cifar10`` on the Hugging Face hub through ``datasets`` (needs the network or a local cache).
    ``max_samples``: a seeded random subset.
    """
    check_choice("dataset", name, list(DATASETS))
    if name == "digits":
        from sklearn.datasets import load_digits

        data = load_digits()
        X = (data.images / 16.0).astype(np.float32)[:, None]
        y = data.target.astype(np.int64)
    else:  # pragma: no cover - needs the network
        try:
            from datasets import load_dataset
        except ImportError:
            raise MirrorflowError("dataset 'cifar10' needs Hugging Face datasets: pip install datasets") from None
        try:
            ds = load_dataset("cifar10", split="train")
        except Exception as exc:
            raise MirrorflowError(f"could not load cifar10 from the Hugging Face hub ({type(exc).__name__}); "
                                  "check the network or use dataset=digits") from None
        X, y = images_from_hf(ds, "img", "label")
    if max_samples is not None and max_samples < len(y):
        idx = np.random.default_rng(seed).choice(len(y), size=max_samples, replace=False)
        X, y = X[np.sort(idx)], y[np.sort(idx)]
    return X, y


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, (H/p)(W/p), C p²)`` non-overlapping patches, row-major."""
    N, C, H, W = images.shape
    if H % patch or W % patch:
        raise MirrorflowError(f"patch size {patch} does not divide the {H}×{W} images; pick a divisor")
    x = images.reshape(N, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(N, (H // patch) * (W // patch), C * patch * patch)


class SelfAttention(torch.nn.Module):
    """Multi-head self-attention with separate ``query``/``key``/``value``/``out`` projections.

    Query and key have no bias, so head ``h``'s scores are ``x W_Q,hᵀ W_K,h xᵀ / sqrt(d_head)``:
    a factorized matrix ``U Vᵀ`` in the sense of theory §6.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.query = torch.nn.Linear(dim, dim, bias=False)
        self.key = torch.nn.Linear(dim, dim, bias=False)
        self.value = torch.nn.Linear(dim, dim)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        N, T, D = x.shape
        h = self.num_heads

        def split(t):
            return t.view(N, T, h, D // h).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // h), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(N, T, D))


class Block(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(torch.nn.Module):
    """Patch embedding + class token + learned positions + ``depth`` blocks + linear head."""

    def __init__(self, channels: int, side: int, patch: int, dim: int, depth: int, heads: int,
                 classes: int):
        super().__init__()
        if side % patch:
            raise MirrorflowError(f"patch size {patch} does not divide the image side {side}")
        self.patch = patch
        tokens = (side // patch) ** 2
        self.embed = torch.nn.Linear(channels * patch * patch, dim)
        self.cls = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = torch.nn.Parameter(0.02 * torch.randn(1, tokens + 1, dim))
        self.blocks = torch.nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, images):
        x = self.embed(patchify(images, self.patch))
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x[:, 0]))


def score_ratios(model: torch.nn.Module) -> list[float]:
    """Per attention layer: mean over heads of ``‖W_Q,h W_K,hᵀ‖_* / ‖W_Q,h W_K,hᵀ‖_F``.

    Uses :func:`mirrorflow.schedules.diagnostics.attention_pairs` (one pair per head).
    """
    from mirrorflow.schedules.diagnostics import attention_pairs, factor_diagnostics

    per_layer: dict[str, list[float]] = {}
    for pair in attention_pairs(model, per_head=True):
        layer = pair.name.rsplit(".head", 1)[0]
        per_layer.setdefault(layer, []).append(factor_diagnostics(pair).nuclear_over_fro)
    return [float(np.mean(v)) for v in per_layer.values()]


def training_schedule(schedule: Schedule, lr: float, total_steps: int | None = None):
    """Map a continuous-time schedule to a step-based one for :class:`WeightDecayScheduler`.

    ``None`` for no decay; constant → ``constant()``; switch-off at time ``T`` → off from step
    ``ceil(T / lr)`` (time ``t = Σ η_k = k·lr``; a switch at or beyond ``total_steps`` keeps the
    decay on for the whole run, as in continuous time); budget → ``budget(a)`` (exact in ``a``).
    """
    from mirrorflow.schedules import training
    from mirrorflow.schedules.continuous import Budget, SwitchOff

    if isinstance(schedule, NoDecay) or (isinstance(schedule, Constant) and schedule.wd == 0):
        return None
    if isinstance(schedule, Budget):
        return training.budget(schedule.target_a)
    if isinstance(schedule, SwitchOff):
        at = math.ceil(schedule.at / lr - 1e-9)
        if total_steps is not None and at >= total_steps:
            return training.constant()
        return training.switch_off(at)
    return training.constant()


def train_vit(cfg: Config, schedule: Schedule, progress: bool = False) -> dict:
    """Train a :class:`TinyViT` with AdamW under ``schedule``; returns metrics, curves, the model
    and the optimizer (its param groups show the decay actually used at the end)."""
    from mirrorflow.schedules.scheduler import WeightDecayScheduler

    X, y = load_image_dataset(cfg.dataset, max_samples=cfg.max_samples, seed=cfg.seed)
    C, side = X.shape[1], X.shape[2]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(y))
    n_val = max(1, round(cfg.val_fraction * len(y)))
    val, tr = perm[:n_val], perm[n_val:]
    Xtr, ytr = torch.as_tensor(X[tr]), torch.as_tensor(y[tr])
    Xva, yva = torch.as_tensor(X[val]), torch.as_tensor(y[val])
    classes = int(y.max()) + 1
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = TinyViT(C, side, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads, classes)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and n not in ("cls", "pos")]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and n not in ("cls", "pos"))]
    tsched = training_schedule(schedule, cfg.lr, cfg.steps)
    wd = 0.0 if tsched is None else cfg.decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = None if tsched is None else WeightDecayScheduler(opt, tsched, total_steps=cfg.steps)
    hist: dict[str, list] = {k: [] for k in ("time", "a", "weight_decay", "test_loss", "accuracy",
                                              "nuclear_over_fro", "train_loss")}
    lossf = torch.nn.functional.cross_entropy

    def evaluate(k, train_loss):
        model.eval()
        with torch.no_grad():
            logits = model(Xva)
            hist["test_loss"].append(float(lossf(logits, yva)))
            hist["accuracy"].append(float((logits.argmax(1) == yva).float().mean()))
        model.train()
        hist["time"].append(k * cfg.lr)
        hist["a"].append(0.0 if scheduler is None else scheduler.integrated)
        hist["weight_decay"].append(float(opt.param_groups[0]["weight_decay"]))
        hist["nuclear_over_fro"].append(score_ratios(model))
        hist["train_loss"].append(train_loss)

    order = torch.randperm(len(ytr), generator=gen)
    ptr, last = 0, float("nan")
    with torch_threads(1), \
            progress_bar(cfg.steps, f"ViT ({schedule.describe()})", progress) as advance:
        for k in range(cfg.steps):
            if k % cfg.eval_every == 0:
                evaluate(k, last)
            if ptr + cfg.batch_size > len(ytr):
                order, ptr = torch.randperm(len(ytr), generator=gen), 0
            idx = order[ptr:ptr + cfg.batch_size]
            ptr += cfg.batch_size
            loss = lossf(model(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last = float(loss.detach())
            advance()
        evaluate(cfg.steps, last)
    a = 0.0 if scheduler is None else scheduler.integrated
    if scheduler is not None:
        scheduler.remove()
    ratios = hist["nuclear_over_fro"][-1]
    from mirrorflow.schedules.diagnostics import attention_pairs, factor_diagnostics

    diags = [factor_diagnostics(p) for p in attention_pairs(model, per_head=True)]
    curves = {k: np.asarray(v) for k, v in hist.items()}
    return {
        "test_loss": hist["test_loss"][-1],
        "accuracy": hist["accuracy"][-1],
        "ratios": ratios,
        "effective_rank": float(np.mean([d.effective_rank for d in diags])),
        "balancedness": float(np.mean([d.balancedness for d in diags])),
        "a": float(a),
        "curves": curves,
        "model": model,
        "optimizer": opt,
    }


def plot(results: Sequence[Result], path: Path) -> None:
    """Loss / accuracy, distance or ratio, and nuclear/Frobenius ratio over time per schedule."""
    fig, axes = new_figure(1, 3, figsize=(14, 3.8))
    for r in results:
        c = r.config
        labels = {"": c.make_schedule().describe(), "none/": "none",
                  "constant/": f"constant(wd={c.decay:g})"}
        for prefix, lab in labels.items():
            if prefix + "time" not in r.curves:
                continue
            t = r.curves[prefix + "time"]
            (line,) = axes[0].plot(t, r.curves[prefix + "test_loss"], label=lab)
            second = "accuracy" if r.setting == "vit" else "teacher_distance"
            axes[1].plot(t, r.curves[prefix + second], color=line.get_color())
            ratios = np.atleast_2d(np.asarray(r.curves[prefix + "nuclear_over_fro"]))
            for j in range(ratios.shape[1]):
                axes[2].plot(t, ratios[:, j], color=line.get_color(), ls=["-", "--", ":", "-."][j % 4],
                             label=f"{lab}, layer {j}" if ratios.shape[1] > 1 else lab)
        mark_switch(axes, c)
    axes[0].set(xlabel="time t = Σ η", ylabel="loss", title="test / validation loss", yscale="log")
    axes[1].set(xlabel="time t = Σ η",
                ylabel="accuracy" if results and results[0].setting == "vit" else "‖M − M*‖_F / ‖M*‖_F",
                title="validation accuracy" if results and results[0].setting == "vit" else "distance to teacher")
    axes[2].set(xlabel="time t = Σ η", ylabel="‖W_Q W_Kᵀ‖_* / ‖·‖_F", title="nuclear / Frobenius")
    axes[2].legend(fontsize=7)
    fig.suptitle("attention: dotted line = weight decay switched off")
    fig.savefig(path, dpi=120)


EXPERIMENT = Experiment(
    name="attention",
    config_cls=Config,
    run=run,
    plot=plot,
    description="attention W_Q W_Kᵀ (theory §6): low-rank teacher (setting=teacher) or a tiny ViT on digits/CIFAR-10 (setting=vit)",
)

