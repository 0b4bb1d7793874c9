"""The learned hasher: determinism, persistence, devices, loss terms."""

import numpy as np
import pytest
import torch
from helpers import make_embeddings

from indexer.train import TrainConfig, hashing_loss, pick_device, train_hasher
from retrieval.hasher import BinaryAutoencoder, binarize

FAST = {"max_epochs": 8, "device": "cpu"}


def test_same_seed_gives_identical_codes():
    x, _ = make_embeddings(300)
    a = train_hasher(x, TrainConfig(bits=32, seed=3, **FAST)).model.encode(x)
    b = train_hasher(x, TrainConfig(bits=32, seed=3, **FAST)).model.encode(x)
    c = train_hasher(x, TrainConfig(bits=32, seed=4, **FAST)).model.encode(x)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_save_load_round_trip(tmp_path):
    x, _ = make_embeddings(200)
    model = train_hasher(x, TrainConfig(bits=16, **FAST)).model
    model.save(tmp_path / "h")
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = BinaryAutoencoder.load(tmp_path / "h")
    assert loaded.get_config_dict() == model.get_config_dict()
    assert np.array_equal(loaded.encode(x), model.encode(x))


def test_codes_have_the_asked_shape_and_are_balanced():
    x, _ = make_embeddings(600)
    result = train_hasher(x, TrainConfig(bits=24, **FAST))
    codes = result.model.encode(x)
    assert codes.shape == (600, 3) and codes.dtype == np.uint8
    share = np.unpackbits(codes, axis=1).mean(axis=0)
    assert 0.2 < share.mean() < 0.8
    assert result.history and result.best_epoch >= 1


def test_early_stopping_ends_before_max_epochs():
    x, _ = make_embeddings(200)
    result = train_hasher(x, TrainConfig(bits=16, max_epochs=500, patience=3, device="cpu"))
    assert len(result.history) < 500


def test_settings_are_derived_from_the_data():
    small = TrainConfig(bits=64).resolved(make_embeddings(150, dim=384)[0])
    large = TrainConfig(bits=64).resolved(make_embeddings(100_000, dim=96)[0])
    assert small.batch_size == 150 and small.hidden_dim == 384
    assert large.batch_size == 512 and large.hidden_dim == 128
    assert small.max_epochs > large.max_epochs
    # The similarity temperature follows the spread of the data's cosines.
    x, _ = make_embeddings(500, dim=32)
    crowded = x + 3.0 / np.sqrt(32)
    crowded /= np.linalg.norm(crowded, axis=1, keepdims=True)
    spread = TrainConfig().resolved(x).similarity_temperature
    assert TrainConfig().resolved(crowded).similarity_temperature < spread


def test_straight_through_binarisation():
    logits = torch.tensor([-2.0, -0.1, 0.0, 0.3], requires_grad=True)
    codes = binarize(logits)
    assert codes.tolist() == [-1.0, -1.0, -1.0, 1.0]
    codes.sum().backward()
    assert torch.allclose(logits.grad, 1 - torch.tanh(logits.detach()) ** 2)


def test_similarity_term_rewards_codes_that_follow_cosine():
    x = torch.nn.functional.normalize(
        torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    )
    model = BinaryAutoencoder(16, 16)
    config = TrainConfig(bits=16).resolved(x.numpy())
    terms = hashing_loss(model, x, config, None)
    assert set(terms) == {"reconstruction", "similarity", "balance", "decorrelation", "loss"}
    assert all(torch.isfinite(v) for v in terms.values())


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert pick_device("auto").type == "cuda"
    else:
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_mixed_precision():
    x, _ = make_embeddings(2000, dim=64)
    result = train_hasher(x, TrainConfig(bits=32, max_epochs=5, device="cuda"))
    assert result.device == "cuda"
    assert result.model.encode(x).shape == (2000, 4)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 embeddings"):
        train_hasher(np.zeros((1, 8), np.float32))
    with pytest.raises(ValueError, match="multiple of 8"):
        train_hasher(make_embeddings(10)[0], TrainConfig(bits=20))


def test_trains_from_a_memory_mapped_file_as_from_memory(tmp_path):
    x, _ = make_embeddings(600, dim=32)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    config = TrainConfig(bits=16, max_epochs=5, device="cpu")
    from_file = train_hasher(mapped, config).model.encode(x)
    assert np.array_equal(from_file, train_hasher(x, config).model.encode(x))


def test_large_inputs_train_on_a_seeded_sample(tmp_path):
    x, _ = make_embeddings(3000, dim=32)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    config = TrainConfig(bits=16, max_epochs=3, device="cpu", max_rows=400, batch_size=None)
    result = train_hasher(mapped, config)
    assert result.config.batch_size == 400  # resolved from the sample, not the file
    again = train_hasher(x, config)
    assert np.array_equal(result.model.encode(x), again.model.encode(x))
