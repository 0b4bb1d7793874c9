"""The learned hasher: an autoencoder whose bottleneck is a binary code.

encoder MLP -> ``bits`` pre-activations -> sign (straight-through gradient) -> decoder MLP.
The code of a document is the sign pattern of its pre-activations, packed to uint8. The
module carries its own config (``config.json``) and weights (``model.safetensors``); it is
rebuilt with ``BinaryAutoencoder(**config)``, never unpickled.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from retrieval.codes import check_bits, pack

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(n_out), nn.GELU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def binarize(logits: torch.Tensor) -> torch.Tensor:
    """Codes in {-1, +1} whose gradient is that of tanh (the straight-through estimator)."""
    soft = torch.tanh(logits)
    hard = torch.where(logits > 0, 1.0, -1.0).to(soft.dtype)
    return soft + (hard - soft).detach()


class BinaryAutoencoder(nn.Module):
    """Embedding (input_dim) -> ``bits`` binary units -> reconstructed embedding."""

    config_keys = ("input_dim", "bits", "hidden_dim", "depth", "dropout")

    def __init__(
        self, input_dim: int, bits: int, hidden_dim: int = 512, depth: int = 1, dropout: float = 0.0
    ):
        super().__init__()
        if input_dim < 1 or hidden_dim < 1 or depth < 0:
            raise ValueError(
                f"input_dim={input_dim}, hidden_dim={hidden_dim} must be positive and "
                f"depth={depth} non-negative"
            )
        self.input_dim, self.bits = int(input_dim), check_bits(bits)
        self.hidden_dim, self.depth, self.dropout = int(hidden_dim), int(depth), float(dropout)
        hidden = [self.hidden_dim] * self.depth
        self.encoder = _mlp([self.input_dim, *hidden, self.bits], self.dropout)
        self.decoder = _mlp([self.bits, *hidden, self.input_dim], self.dropout)

    def get_config_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.config_keys}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (pre-activations, codes in {-1, +1}, reconstruction)."""
        logits = self.encoder(x)
        codes = binarize(logits)
        return logits, codes, self.decoder(codes)

    @torch.inference_mode()
    def logits(self, embeddings: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Pre-activations for float embeddings (n, input_dim), as float32 (puts the module
        in eval mode: encoding is inference)."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.input_dim:
            raise ValueError(
                f"embeddings must have shape (n, {self.input_dim}), got {embeddings.shape}"
            )
        if self.training:
            self.eval()
        device = next(self.parameters()).device
        out = np.zeros((len(embeddings), self.bits), np.float32)
        for lo in range(0, len(embeddings), batch_size):
            batch = torch.as_tensor(np.asarray(embeddings[lo : lo + batch_size], np.float32))
            out[lo : lo + batch_size] = self.encoder(batch.to(device)).float().cpu().numpy()
        return out

    def encode(self, embeddings: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Packed uint8 codes (n, bits // 8): bit j is set where pre-activation j is > 0."""
        return pack(self.logits(embeddings, batch_size))

    @torch.inference_mode()
    def reconstruction_error(self, embeddings: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Per-row squared distance between each embedding and its reconstruction from the
        binary code, both unit-normalised (the decoder is trained on direction, by a cosine
        loss): 2 - 2 cos, float32 (n,)."""
        if self.training:
            self.eval()
        device = next(self.parameters()).device
        out = np.zeros(len(embeddings), np.float32)
        for lo in range(0, len(embeddings), batch_size):
            x = torch.as_tensor(np.asarray(embeddings[lo : lo + batch_size], np.float32))
            x = x.to(device)
            _, _, recon = self(x)
            recon, x = F.normalize(recon.float(), dim=1), F.normalize(x.float(), dim=1)
            out[lo : lo + batch_size] = ((recon - x) ** 2).sum(dim=1).cpu().numpy()
        return out

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.get_config_dict(), indent=2))
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> BinaryAutoencoder:
        path = Path(path)
        config = json.loads((path / CONFIG_NAME).read_text())
        model = cls(**{key: config[key] for key in cls.config_keys})
        model.load_state_dict(load_file(str(path / WEIGHTS_NAME), device=device))
        return model.to(device).eval()
