"""Retrieval quality on the development corpus: `python benchmarks/quality.py`.

The same run as `hashdex eval --dataset wiki-vital`: hashdex against float cosine, the sign
of the raw embedding, LSH, PCA+sign and ITQ at 16/32/64/128 bits, 3 seeds. Writes
benchmarks/results/wiki-vital.md and .png. Needs the bench extra (`pip install -e '.[bench]'`).
"""

import sys

from indexer.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", "--dataset", "wiki-vital", *sys.argv[1:]]))
