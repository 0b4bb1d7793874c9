"""Fit a BinaryAutoencoder to a set of embeddings.

The loss has four parts, each weighted in ``TrainConfig``:

* reconstruction: the decoder must recover the embedding from the binary code (cosine loss);
* similarity: within a batch, each document's neighbour distribution by code similarity
  (softmax of (1 - 2 * hamming / bits) / code_temperature) must match its distribution by
  cosine (softmax of cosine / similarity_temperature), a cross-entropy that weighs the near
  neighbours most, so that Hamming order follows cosine order where retrieval looks;
* balance: every bit is on for about half the documents (no wasted bits);
* decorrelation: bits carry different information.

Training is seeded (deterministic on CPU), stops early on a held-out part of the data, and
runs on CUDA with bfloat16 autocast when available, then Apple MPS, then CPU.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from retrieval.codes import check_bits
from retrieval.hasher import BinaryAutoencoder

Device = Literal["auto", "cpu", "cuda", "mps"]


@dataclass
class TrainConfig:
    """Training settings. ``None`` means: derive from the data (see ``resolved``)."""

    bits: int = 64
    hidden_dim: int | None = None
    depth: int = 1
    dropout: float = 0.0
    batch_size: int | None = None
    max_epochs: int | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    reconstruction_weight: float = 1.0
    similarity_weight: float = 1.0
    similarity_temperature: float | None = None
    code_temperature: float | None = None
    balance_weight: float = 0.1
    decorrelation_weight: float = 0.1
    input_noise: float = 0.0
    validation_fraction: float = 0.1
    patience: int = 10
    # Train on a seeded sample of at most this many rows (None: all): past a million
    # documents more rows add time, not quality.
    max_rows: int | None = 1_000_000
    seed: int = 0
    device: Device = "auto"

    def resolved(self, embeddings: np.ndarray) -> TrainConfig:
        """Fill the data-dependent settings from the embeddings.

        Batches of up to 512 rows; about 1,500 optimiser steps in all (so a small corpus gets
        many epochs, a large one few), at most 200 epochs; a hidden layer as wide as the input;
        a similarity temperature of half the spread (std) of cosines between random pairs,
        so that models whose cosines crowd together are treated like those that spread out;
        a code temperature of 0.8 times the spread of code similarity between random codes
        (1 / sqrt(bits)).
        """
        check_bits(self.bits)
        n, dim = embeddings.shape
        config = copy.copy(self)
        if config.similarity_temperature is None:
            config.similarity_temperature = round(0.5 * _cosine_spread(embeddings, config.seed), 4)
        if config.code_temperature is None:
            config.code_temperature = round(0.8 / math.sqrt(config.bits), 4)
        if config.hidden_dim is None:
            config.hidden_dim = max(dim, 2 * config.bits)
        if config.batch_size is None:
            config.batch_size = int(min(512, max(32, n)))
        if config.max_epochs is None:
            steps_per_epoch = max(1, math.ceil(n / config.batch_size))
            config.max_epochs = int(min(200, max(5, math.ceil(1500 / steps_per_epoch))))
        return config


def _cosine_spread(embeddings: np.ndarray, seed: int, rows: int = 2000) -> float:
    """Standard deviation of the cosine between distinct rows of a random sample."""
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(embeddings), size=min(len(embeddings), rows), replace=False))
    sample = np.asarray(embeddings[pick], np.float32)
    cosine = sample @ sample.T
    return max(float(cosine[~np.eye(len(sample), dtype=bool)].std()), 1e-3)


@dataclass
class TrainResult:
    model: BinaryAutoencoder
    config: TrainConfig
    device: str
    best_epoch: int
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "config": asdict(self.config),
            "device": self.device,
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "final": self.history[self.best_epoch - 1] if self.history else {},
        }


def pick_device(device: Device = "auto") -> torch.device:
    """CUDA if present, then Apple MPS, then CPU (or exactly what is asked for)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    return torch.device(device)


def hashing_loss(
    model: BinaryAutoencoder, x: torch.Tensor, config: TrainConfig, noise: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The weighted loss terms for one batch of L2-normalised embeddings."""
    logits, codes, recon = model(x if noise is None else x + noise)
    terms = {"reconstruction": 1 - F.cosine_similarity(recon.float(), x.float(), dim=1).mean()}
    codes = codes.float()
    if config.similarity_weight and len(x) > 1:
        self_pairs = torch.eye(len(x), dtype=torch.bool, device=x.device)
        cosine = (x @ x.T).float() / config.similarity_temperature
        target = F.softmax(cosine.masked_fill(self_pairs, -torch.inf), dim=1)
        code_similarity = (codes @ codes.T / model.bits) / config.code_temperature
        log_q = F.log_softmax(code_similarity.masked_fill(self_pairs, -torch.inf), dim=1)
        terms["similarity"] = -(target * log_q.masked_fill(self_pairs, 0.0)).sum(dim=1).mean()
    soft = torch.tanh(logits.float())
    if config.balance_weight:
        terms["balance"] = (soft.mean(dim=0) ** 2).mean()
    if config.decorrelation_weight and len(x) > 1:
        centred = soft - soft.mean(dim=0)
        cov = centred.T @ centred / len(x)
        off_diagonal = cov - torch.diag(torch.diagonal(cov))
        terms["decorrelation"] = (off_diagonal**2).sum() / (model.bits * (model.bits - 1))
    weights = {
        "reconstruction": config.reconstruction_weight,
        "similarity": config.similarity_weight,
        "balance": config.balance_weight,
        "decorrelation": config.decorrelation_weight,
    }
    terms["loss"] = sum(weights[name] * value for name, value in terms.items())
    return terms


# Validation rows beyond this many add cost, not information.
_MAX_VALIDATION_ROWS = 8192


def _split(n: int, fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (train, validation) row indices; no validation set below 20 rows."""
    perm = torch.randperm(n, generator=generator).numpy()
    n_val = min(round(n * fraction), _MAX_VALIDATION_ROWS) if n >= 20 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _sample(embeddings: np.ndarray, size: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """A seeded sample of ``size`` rows, read in file order a chunk at a time (one pass over
    a memory-mapped file, never all of it in memory), as float32."""
    rows = np.sort(np.random.default_rng(seed).choice(len(embeddings), size, replace=False))
    out = np.empty((size, embeddings.shape[1]), np.float32)
    for lo in range(0, size, chunk):
        out[lo : lo + chunk] = embeddings[rows[lo : lo + chunk]]
    return out


def _rows(embeddings: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """Gather rows (works on memory-mapped arrays: only these rows are read)."""
    return torch.as_tensor(np.asarray(embeddings[np.sort(rows)], np.float32), device=device)


def train_hasher(
    embeddings: np.ndarray, config: TrainConfig | None = None, show_progress: bool = False
) -> TrainResult:
    """Train a BinaryAutoencoder on L2-normalised float embeddings (n, dim).

    A memory-mapped array (``np.load(path, mmap_mode="r")``) is never loaded whole: up to
    ``config.max_rows`` rows each batch reads only its rows; past that a seeded sample of
    ``max_rows`` is read in one pass and trained on, so the file may be far larger than
    memory."""
    embeddings = np.asarray(embeddings)  # a memory-mapped array stays mapped, not loaded
    if embeddings.ndim != 2 or len(embeddings) < 2:
        raise ValueError(f"need at least 2 embeddings of shape (n, dim), got {embeddings.shape}")
    config = config or TrainConfig()
    if config.max_rows and len(embeddings) > config.max_rows:
        embeddings = _sample(embeddings, config.max_rows, config.seed)
    n, dim = embeddings.shape
    config = config.resolved(embeddings)
    device = pick_device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = BinaryAutoencoder(dim, config.bits, config.hidden_dim, config.depth, config.dropout)
    model.to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    train_rows, val_rows = _split(n, config.validation_fraction, generator)
    steps_per_epoch = math.ceil(len(train_rows) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.learning_rate, total_steps=config.max_epochs * steps_per_epoch
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    best_loss, best_epoch, best_state, history = math.inf, 0, None, []
    bar = tqdm(
        range(1, config.max_epochs + 1), desc="train", unit="epoch", disable=not show_progress
    )
    for epoch in bar:
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        totals: dict[str, float] = {}
        for lo in range(0, len(order), config.batch_size):
            x = _rows(embeddings, order[lo : lo + config.batch_size], device)
            noise = None
            if config.input_noise:
                noise = torch.randn(x.shape, generator=generator).to(device) * config.input_noise
            with autocast:
                terms = hashing_loss(model, x, config, noise)
            optimiser.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimiser.step()
            scheduler.step()
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value.item() * len(x) / len(order)
        record = {"epoch": epoch, **{f"train_{k}": v for k, v in totals.items()}}
        if len(val_rows):
            model.eval()
            val: dict[str, float] = {}
            with torch.no_grad(), autocast:
                for lo in range(0, len(val_rows), config.batch_size):
                    x = _rows(embeddings, val_rows[lo : lo + config.batch_size], device)
                    for name, value in hashing_loss(model, x, config, None).items():
                        val[name] = val.get(name, 0.0) + float(value) * len(x) / len(val_rows)
            record.update({f"val_{k}": v for k, v in val.items()})
        history.append(record)
        monitored = record.get("val_loss", record["train_loss"])
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", val=f"{monitored:.4f}")
        if monitored < best_loss - 1e-5:
            best_loss, best_epoch = monitored, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model.cpu(), config, device.type, best_epoch, history)
