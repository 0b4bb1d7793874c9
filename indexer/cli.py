"""The ``hashdex`` command line: each command parses, calls one library function, prints.

Errors are one line on stderr with exit status 1 (set HASHDEX_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap

import click

DIR = click.Path(exists=True, file_okay=False)
# Options shared by several commands.
SEED = click.option("--seed", default=0, show_default=True, help="Training seed.")
DEVICE = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda", "mps"]),
    default="auto",
    show_default=True,
    help="Where to train the hasher.",
)
TEXT_FIELD = click.option(
    "--text-field", default="text", show_default=True, help="Field holding the text."
)
ID_FIELD = click.option("--id-field", default="id", show_default=True, help="Field holding the id.")
MODEL = click.option(
    "--model",
    default="all-MiniLM-L6-v2",
    show_default=True,
    help="sentence-transformers model name or local folder.",
)


class _Group(click.Group):
    """Turns any library error into one line on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if os.environ.get("HASHDEX_DEBUG"):
                raise
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise click.ClickException(message) from error


@click.group(cls=_Group)
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr: no progress, no log.")
@click.version_option(package_name="hashdex")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """hashdex: semantic-hashing document retrieval.

    Index a corpus into short learned binary codes, then find similar documents by Hamming
    distance.
    """
    ctx.obj = {"progress": not quiet}
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("hashdex")
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


@main.command("index")
@click.argument("corpus", type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(), help="Index directory to write.")
@click.option("--bits", default=64, show_default=True, help="Code length: 16..256, multiple of 8.")
@MODEL
@TEXT_FIELD
@ID_FIELD
@click.option("--skip-invalid", is_flag=True, help="Index the valid documents, report the rest.")
@click.option(
    "--store-url",
    default=None,
    help="SQLAlchemy URL of the document store (default: a SQLite file in the index directory).",
)
@SEED
@DEVICE
@click.option(
    "--no-embeddings",
    is_flag=True,
    help="Do not keep float16 embeddings (smaller index; no re-ranking).",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index at --out.")
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="auto|local|ADDRESS",
    help="Embed and encode on a Ray cluster (auto: the running one; local: start one here).",
)
@click.option(
    "--ray-workers", type=int, default=None, help="Model actors (default: a GPU or CPU each)."
)
@click.pass_obj
def index_command(
    obj,
    corpus,
    out,
    bits,
    model,
    text_field,
    id_field,
    skip_invalid,
    store_url,
    seed,
    device,
    no_embeddings,
    no_cache,
    overwrite,
    ray_address,
    ray_workers,
):
    """Embed, hash and store the documents of CORPUS (.jsonl, .json, .csv, .tsv or a folder)."""
    from indexer.build import build_index
    from indexer.train import TrainConfig

    index = build_index(
        out,
        corpus,
        bits=bits,
        model=model,
        config=TrainConfig(seed=seed, device=device),
        store_url=store_url,
        keep_embeddings=not no_embeddings,
        text_field=text_field,
        id_field=id_field,
        skip_invalid=skip_invalid,
        cache=not no_cache,
        overwrite=overwrite,
        show_progress=obj["progress"],
        ray=ray_address,
        ray_workers=ray_workers,
    )
    build = index.manifest["build"]
    stages = ", ".join(f"{name} {sec:.1f}s" for name, sec in build["seconds"].items())
    click.echo(f"indexed {len(index)} documents into {out} ({index.bits} bits): {stages}")
    if build["skipped"]:
        click.echo(f"skipped {len(build['skipped'])} invalid records (see the log above)")
    if build.get("truncated"):
        click.echo(f"{build['truncated']} documents were truncated to the model's window")


@main.command("add")
@click.argument("index_dir", type=DIR)
@click.argument("corpus", type=click.Path(exists=True))
@TEXT_FIELD
@ID_FIELD
@click.option("--skip-invalid", is_flag=True, help="Add the valid documents, report the rest.")
def add_command(index_dir, corpus, text_field, id_field, skip_invalid):
    """Add the documents of CORPUS to INDEX_DIR (an existing id is replaced)."""
    from retrieval import Index

    with Index.open(index_dir) as index:
        before = len(index)
        written = index.add(
            corpus, text_field=text_field, id_field=id_field, skip_invalid=skip_invalid
        )
        click.echo(
            f"wrote {written} documents ({len(index) - before} new, "
            f"{written - (len(index) - before)} replaced); the index has {len(index)}"
        )


@main.command("retrain")
@click.argument("index_dir", type=DIR)
@SEED
@DEVICE
@click.pass_obj
def retrain_command(obj, index_dir, seed, device):
    """Retrain the hasher of INDEX_DIR on its current documents and re-encode them."""
    from indexer.train import TrainConfig
    from indexer.update import retrain_index
    from retrieval import Index

    with Index.open(index_dir) as index:
        retrain_index(index, TrainConfig(seed=seed, device=device), obj["progress"])
        training = index.manifest["training"]
        click.echo(
            f"retrained on {len(index)} documents: {training['epochs_run']} epochs on "
            f"{training['device']}"
        )


@main.command("delete")
@click.argument("index_dir", type=DIR)
@click.argument("ids", nargs=-1, required=True)
def delete_command(index_dir, ids):
    """Delete the documents with these IDS from INDEX_DIR."""
    from retrieval import Index

    with Index.open(index_dir) as index:
        missing = index.delete(list(ids))
        click.echo(f"deleted {len(ids) - len(missing)} documents; the index has {len(index)}")
        if missing:
            click.echo(f"not found: {' '.join(missing)}", err=True)


@main.command("query")
@click.argument("index_dir", type=DIR)
@click.argument("texts", nargs=-1, required=True)
@click.option("-k", default=10, show_default=True, help="How many documents per query.")
@click.option("--radius", type=int, default=None, help="Only documents within this many bits.")
@click.option(
    "--rescore",
    type=int,
    default=None,
    help="Re-rank the top N Hamming candidates by cosine (N >= k).",
)
@click.option(
    "--where",
    "filters",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only documents whose metadata KEY equals VALUE (repeat a key for any of).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per query.")
def query_command(index_dir, texts, k, radius, rescore, filters, as_json):
    """Find the documents of INDEX_DIR (an index or a sharded directory) nearest to each of
    TEXTS."""
    from retrieval import Index
    from retrieval.shards import ShardedIndex, is_sharded

    where = _parse_where(filters)
    options = {"k": k, "radius": radius, "where": where}
    if is_sharded(index_dir):
        if rescore is not None:
            raise click.UsageError("--rescore is not offered over shards")
        opened = ShardedIndex.open(index_dir)
    else:
        opened = Index.open(index_dir)
        options["rescore"] = rescore
    with opened as index:
        results = index.search(list(texts), **options)
        for i, text in enumerate(texts):
            hits = results.hits(i)
            if as_json:
                payload = {
                    "query": text,
                    "order": results.order,
                    "hits": [hit._asdict() for hit in hits],
                }
                click.echo(json.dumps(payload, ensure_ascii=False))
                continue
            click.echo(f"query: {text}  ({results.order} order)")
            if not hits:
                click.echo("  no documents found")
            for rank, hit in enumerate(hits, start=1):
                snippet = textwrap.shorten(" ".join(hit.text.split()), 70, placeholder="…")
                click.echo(
                    f"{rank:3d}. {hit.id:<20} d={hit.distance:<3d} score={hit.score:.3f}  {snippet}"
                )


def _parse_where(filters: tuple[str, ...]) -> dict | None:
    """``("topic=a", "topic=b", "year=2020")`` -> ``{"topic": ["a", "b"], "year": 2020}``;
    values that parse as JSON numbers or booleans are taken as such."""
    where: dict[str, list] = {}
    for item in filters:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--where")
        try:
            value = json.loads(raw)
            if not isinstance(value, (int, float, bool)):
                value = raw
        except json.JSONDecodeError:
            value = raw
        where.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in where.items()} or None


@main.command("serve")
@click.argument("index_dir", type=DIR)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to bind (loopback unless told otherwise).",
)
@click.option("--port", default=8000, show_default=True)
@click.option(
    "--api-key",
    envvar="HASHDEX_API_KEY",
    default=None,
    help="Require this key on every route but /health (or set HASHDEX_API_KEY).",
)
def serve_command(index_dir, host, port, api_key):
    """Serve INDEX_DIR over HTTP (POST /search, /neighbourhood, /documents; GET/DELETE
    /documents/{id}; GET /stats), with a search page at /."""
    try:
        import uvicorn

        from retrieval.server import create_app
    except ImportError as error:
        raise click.ClickException(
            f"hashdex serve needs the serve extra: pip install -e '.[serve]' ({error})"
        ) from error
    uvicorn.run(create_app(index_dir, api_key=api_key), host=host, port=port, log_level="info")


@main.command("shard")
@click.argument("index_dir", type=DIR)
@click.option("--shards", "count", type=int, required=True, help="How many shards.")
@click.option("--out", required=True, type=click.Path(), help="The sharded directory to write.")
@click.option("--store-url", default=None, help="SQLAlchemy URL for the shards' stores.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def shard_command(index_dir, count, out, store_url, overwrite):
    """Split INDEX_DIR into shards by document range (each a whole index that can be served
    on its own); `hashdex query OUT` searches them as one."""
    from indexer.shard import split_index

    sizes = split_index(index_dir, out, count, store_url=store_url, overwrite=overwrite)
    click.echo(f"wrote {out}: {len(sizes)} shards of {', '.join(map(str, sizes))} documents")


@main.command("export")
@click.argument("index_dir", type=DIR)
@click.option(
    "--format", "fmt", type=click.Choice(["npy", "parquet"]), default="npy", show_default=True
)
@click.option("--out", required=True, type=click.Path(), help="A folder (npy) or a file (parquet).")
def export_command(index_dir, fmt, out):
    """Write the ids, codes and metadata of INDEX_DIR for other binary-vector backends."""
    from indexer.export import export_index
    from retrieval import Index

    with Index.open(index_dir) as index:
        export_index(index, out, fmt)
        click.echo(f"exported {len(index)} documents ({index.bits}-bit codes) to {out}")


@main.command("verify")
@click.argument("index_dir", type=DIR)
def verify_command(index_dir):
    """Check every file of INDEX_DIR against the checksums in its manifest."""
    from retrieval import Index

    with Index.open(index_dir) as index:
        problems = index.verify()
    if problems:
        raise click.ClickException(f"{len(problems)} problems: " + "; ".join(problems))
    click.echo(f"{index_dir}: intact ({len(index.manifest['files'])} files checked)")


@main.command("info")
@click.argument("index_dir", type=DIR)
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
def info_command(index_dir, as_json):
    """Bits, counts, model, bit balance and bucket occupancy of INDEX_DIR."""
    from retrieval import Index

    with Index.open(index_dir) as index:
        info = index.info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    embedder = info["embedder"]["name"] if info["embedder"] else "none (own embeddings)"
    balance, buckets = info["bit_balance"], info["buckets"]
    training = info["training"] or {}
    rerank = "float16 embeddings kept" if info["float_embeddings"] else "not available"
    click.echo(
        f"index       {info['path']} (format {info['format_version']})\n"
        f"documents   {info['documents']}\n"
        f"bits        {info['bits']}\n"
        f"model       {embedder}\n"
        f"store       {info['store']}\n"
        f"re-ranking  {rerank}\n"
        f"bit balance mean {balance['mean']:.3f}, min {balance['min']:.3f}, "
        f"max {balance['max']:.3f} (share of documents with each bit set)\n"
        f"buckets     {buckets['count']} distinct codes, largest {buckets['largest']}, "
        f"mean {buckets['mean_size']:.2f} documents, {buckets['singletons']} singletons\n"
        f"training    {training.get('epochs_run', '?')} epochs on {training.get('device', '?')}, "
        f"best epoch {training.get('best_epoch', '?')}"
    )
    drift = info["drift"]
    line = f"drift       {drift['added_since_training']} documents added since training"
    if "bit_balance_shift" in drift:
        line += (
            f"; bit balance shift {drift['bit_balance_shift']:.3f}; nearest trained code "
            f"{drift['new_to_nearest_trained']:.1f} bits away for them, "
            f"{drift['trained_to_nearest_trained']:.1f} for trained ones"
        )
    click.echo(line)


@main.command("outliers")
@click.argument("index_dir", type=DIR)
@click.option("-n", default=10, show_default=True, help="How many documents.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per document.")
def outliers_command(index_dir, n, as_json):
    """The documents of INDEX_DIR that the hasher reconstructs worst: the unusual ones."""
    from retrieval import Index

    with Index.open(index_dir) as index:
        for rank, outlier in enumerate(index.outliers(n), start=1):
            if as_json:
                click.echo(json.dumps(outlier._asdict(), ensure_ascii=False))
                continue
            snippet = textwrap.shorten(" ".join(outlier.text.split()), 70, placeholder="…")
            click.echo(f"{rank:3d}. {outlier.id:<20} error={outlier.error:.3f}  {snippet}")


@main.command("eval")
@click.option(
    "--dataset",
    type=click.Choice(["wiki-vital", "wiki-vital-titles"]),
    default=None,
    help="The development corpus, as summaries or as bare titles (needs the bench extra).",
)
@click.option(
    "--corpus", type=click.Path(exists=True), default=None, help="Or a labelled corpus of your own."
)
@click.option(
    "--label-field",
    default="topic",
    show_default=True,
    help="Metadata field holding each document's label (with --corpus).",
)
@TEXT_FIELD
@MODEL
@click.option(
    "--bits",
    "bit_budgets",
    default="16,32,64,128",
    show_default=True,
    help="Comma-separated code lengths.",
)
@click.option("--seeds", default=3, show_default=True, help="How many seeds to average.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="benchmarks/results",
    show_default=True,
    help="Where the table (.md) and plot (.png) go.",
)
@click.pass_obj
def eval_command(obj, dataset, corpus, label_field, text_field, model, bit_budgets, seeds, out_dir):
    """P@100 and recall@10 of hashdex against float cosine, LSH, PCA+sign and ITQ."""
    from pathlib import Path

    from indexer import evaluate

    if (dataset is None) == (corpus is None):
        raise click.UsageError("give exactly one of --dataset and --corpus")
    if dataset:
        texts, labels = evaluate.load_wiki_vital(evaluate.DATASETS[dataset])
        name = dataset
    else:
        texts, labels = evaluate.load_labelled_corpus(corpus, label_field, text_field)
        name = Path(corpus).stem
    try:
        budgets = [int(b) for b in bit_budgets.split(",")]
    except ValueError as error:
        raise click.BadParameter(f"--bits must be comma-separated integers: {error}") from error
    report = evaluate.run_evaluation(
        texts, labels, name, Path(out_dir), model, budgets, list(range(seeds)), obj["progress"]
    )
    click.echo(report)
    click.echo(f"wrote {Path(out_dir) / name}.md and .png")


if __name__ == "__main__":
    main()
