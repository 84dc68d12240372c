"""Plain datasketch dedup of a JSONL file: the baseline `bench/dedup.py --end-to-end` times as a subprocess.

What a user writes without alignmix: read the JSONL with orjson, shingle each text the same way alignmix does
(NFKC, lower case, `\\w+` words, word 5-grams), `MinHash.bulk`, then one `MinHashLSH` at the same threshold and
number of permutations, queried before each insert: a document whose query finds an earlier kept document is
a duplicate, any other is kept and inserted. Imports are timed too (they are part of what the user waits for).

    .venv/bin/python bench/dedup_datasketch.py corpus.jsonl --field prompt --dups dups.json
"""

import argparse
import re
import unicodedata

import orjson
from datasketch import MinHash, MinHashLSH

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> list[bytes]:
    w = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    if len(w) < n:
        return [" ".join(w).encode()] if w else []
    return [" ".join(w[i : i + n]).encode() for i in range(len(w) - n + 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--field", default="prompt")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--dups", help="write [duplicate line, the earlier line it matched] pairs (0-based) here, as JSON")
    args = ap.parse_args()
    with open(args.path, "rb") as f:
        texts = [orjson.loads(line)[args.field] for line in f if line.strip()]
    sets = [shingles(t) for t in texts]
    mhs = MinHash.bulk(sets, num_perm=args.num_perm)
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    dups = []
    for i, m in enumerate(mhs):
        if not sets[i]:
            continue  # an empty text has no shingles: never a duplicate (as in alignmix)
        found = lsh.query(m)
        if found:
            dups.append((i, min(found)))
        else:
            lsh.insert(i, m)
    if args.dups:
        with open(args.dups, "wb") as f:
            f.write(orjson.dumps(dups))
    print(f"{len(texts)} documents, {len(dups)} duplicates")


if __name__ == "__main__":
    main()
