"""Near-duplicate detection, end to end (shingling through clusters), on >= 100,000 documents of real text.

Documents are built from the real text in ../shared/data (UltraFeedback, HH-RLHF, LLaMA-Factory, Alpaca,
GSM8K, IFEval, Self-Instruct): each base document joins 3-6 random passages, and a fifth of the documents
are planted near duplicates of a base document (0-8 word substitutions, deletions or insertions). Three
systems run on the same documents with the same word 5-gram shingles, 128 permutations, threshold 0.8:

- alignmix: `minhash.sketch` + `near_dedup.near_duplicate_clusters` (vectorized, verified by exact Jaccard),
  on one thread (its default) and on two;
- datasketch, plainly: Python shingles, `MinHash.bulk`, `MinHashLSH(threshold=0.8)` insert + query;
- rensa, plainly: Python shingles, `RMinHash.update`, `RMinHashLSH(threshold=0.8, num_bands=16)` insert + query.

Each system's duplicate pairs are scored against exact Jaccard >= threshold on Python sets of the shingles.
The reference set pools every pair any system proposes plus every planted pair (all pairs of 100,000 documents
are 5e9, too many to compare), so recall is measured against the true pairs that pool contains.

    .venv/bin/python bench/dedup.py [--docs 100000] [--threshold 0.8] [--repeat 3]

End to end (`--end-to-end`): what a user waits for. A JSONL of real prompts (ShareGPT first turns, Alpaca,
AlpacaEval, Arena-Hard, GSM8K, IFEval, MT-Bench, UltraFeedback, Self-Instruct, LLaMA-Factory DPO prompts),
each copied several times with one word changed, is written to a temporary folder; then `alignmix dedup FILE
--out DIR` (reading and ingest included) and `bench/dedup_datasketch.py FILE` (orjson, `MinHash.bulk`,
`MinHashLSH` query + insert at the same threshold and permutations) run as subprocesses, imports and Python
start-up included, alternating, best wall clock of each. The report gives both, their ratio, the load, and
how far the two agree on which lines are duplicates (lines both drop / lines either drops). They differ by
design: datasketch's default bands (9 x 13) make a pair at the threshold a candidate with chance 0.4 and keep
every candidate unverified; alignmix's (17 x 7) with chance 0.98 and keeps only pairs whose exact Jaccard
reaches the threshold. The report counts the lines only datasketch drops whose match is below the threshold,
and the start-up alone (`alignmix dedup --help`; the baseline's imports).

    .venv/bin/python bench/dedup.py --end-to-end [--docs 160000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignmix.filters.lsh import clusters, optimal_params  # noqa: E402
from alignmix.filters.minhash import sketch, word_lists  # noqa: E402
from alignmix.filters.near_dedup import NearDedupConfig, near_duplicate_clusters  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def _jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def real_passages() -> list[str]:
    """Paragraphs of at least 8 words from the English text in ../shared/data."""
    texts: list[str] = []
    for r in _jsonl(DATA / "ultrafeedback" / "eval_clean.jsonl"):
        texts += [r["prompt"], r["chosen"], r["rejected"]]
    for r in _jsonl(DATA / "hh_rlhf" / "test_prefs.jsonl"):
        texts += [r["chosen"], r["rejected"]]
    for r in orjson.loads((DATA / "llama_factory" / "dpo_en_demo.json").read_bytes()):
        texts += [c["value"] for c in r["conversations"]] + [r["chosen"]["value"], r["rejected"]["value"]]
    for r in orjson.loads((DATA / "llama_factory" / "alpaca_en_demo.json").read_bytes()):
        texts += [r["instruction"] + " " + r["input"], r["output"]]
    for r in _jsonl(DATA / "evals" / "gsm8k_test.jsonl"):
        texts += [r["question"], r["answer"]]
    for r in _jsonl(DATA / "evals" / "ifeval_input_data.jsonl"):
        texts.append(r["prompt"])
    for r in _jsonl(DATA / "self_instruct" / "seed_tasks.jsonl"):
        texts.append(r["instruction"])
    passages = {p.strip() for t in texts for p in re.split(r"\n\s*\n|(?<=[.!?])\s+(?=[A-Z])", t)}
    return sorted(p for p in passages if len(p.split()) >= 8)


def build_corpus(n_docs: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """n_docs documents; a fifth are edited copies of earlier ones. Returns (docs, planted (original, copy) pairs)."""
    rng = random.Random(seed)
    passages = real_passages()
    vocab = sorted({w for p in passages[:2000] for w in p.split()})
    n_copies = n_docs // 5
    docs = [" ".join(rng.sample(passages, rng.randint(3, 6))) for _ in range(n_docs - n_copies)]
    planted = []
    for _ in range(n_copies):
        src = rng.randrange(len(docs))
        words = docs[src].split()
        for _ in range(rng.randint(0, 8)):
            op, at = rng.random(), rng.randrange(len(words))
            if op < 0.4:
                words[at] = rng.choice(vocab)
            elif op < 0.7 and len(words) > 10:
                del words[at]
            else:
                words.insert(at, rng.choice(vocab))
        planted.append((src, len(docs)))
        docs.append(" ".join(words))
    order = list(range(len(docs)))
    rng.shuffle(order)  # copies anywhere in the corpus, not all at the end
    where = {old: new for new, old in enumerate(order)}
    return [docs[i] for i in order], [tuple(sorted((where[a], where[b]))) for a, b in planted]


_WORD = re.compile(r"\w+")


def python_shingles(text: str, n: int = 5) -> list[bytes]:
    """Plain Python shingles, as a datasketch or rensa user writes them: NFKC, lower case, `\\w+` words, n-grams.

    alignmix tokenizes with polars' (Rust) regex, whose `\\w` also takes combining marks; on this corpus the
    two agree on almost every document (the report counts the ones where they do not).
    """
    w = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    if len(w) < n:
        return [" ".join(w).encode()] if w else []
    return [" ".join(w[i : i + n]).encode() for i in range(len(w) - n + 1)]


def pairs_from_queries(results: list[list[int]]) -> set[tuple[int, int]]:
    return {(min(i, j), max(i, j)) for i, hits in enumerate(results) for j in hits if i != j}


def run_alignmix(docs: list[str], threshold: float, workers: int = 1) -> tuple[set, float, dict]:
    cfg = NearDedupConfig(threshold=threshold)
    t0 = time.perf_counter()
    sk = sketch(docs, cfg.ngram, cfg.num_perm, cfg.seed, cfg.hash, workers=workers)
    root, pairs, _ = near_duplicate_clusters(sk, cfg)
    seconds = time.perf_counter() - t0
    info = {"bands": cfg.bands, "rows": cfg.rows, "clusters": int((np.bincount(root) > 1).sum()), "threads": workers}
    return {tuple(p) for p in pairs.tolist()}, seconds, info


def run_datasketch(docs: list[str], threshold: float) -> tuple[set, float, dict]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    sets = [python_shingles(d) for d in docs]
    mhs = MinHash.bulk(sets, num_perm=128)
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    with lsh.insertion_session() as session:
        for i, m in enumerate(mhs):
            if sets[i]:
                session.insert(i, m)
    found = pairs_from_queries([lsh.query(m) if sets[i] else [] for i, m in enumerate(mhs)])
    root = clusters(len(docs), np.array(sorted(found), dtype=np.int64).reshape(-1, 2))
    seconds = time.perf_counter() - t0
    return found, seconds, {"bands": lsh.b, "rows": lsh.r, "clusters": int((np.bincount(root) > 1).sum())}


def run_rensa(docs: list[str], threshold: float) -> tuple[set, float, dict]:
    from rensa import RMinHash, RMinHashLSH

    t0 = time.perf_counter()
    mhs = []
    for d in docs:
        m = RMinHash(num_perm=128, seed=1)
        m.update([s.decode() for s in python_shingles(d)])
        mhs.append(m)
    lsh = RMinHashLSH(threshold=threshold, num_perm=128, num_bands=16)
    for i, m in enumerate(mhs):
        lsh.insert(i, m)
    found = pairs_from_queries([lsh.query(m) for m in mhs])
    root = clusters(len(docs), np.array(sorted(found), dtype=np.int64).reshape(-1, 2))
    seconds = time.perf_counter() - t0
    return found, seconds, {"bands": 16, "rows": 8, "clusters": int((np.bincount(root) > 1).sum())}


def true_pairs(docs: list[str], pool: set[tuple[int, int]], threshold: float) -> set[tuple[int, int]]:
    cache: dict[int, set[bytes]] = {}

    def s(i: int) -> set[bytes]:
        if i not in cache:
            cache[i] = set(python_shingles(docs[i]))
        return cache[i]

    out = set()
    for i, j in pool:
        a, b = s(i), s(j)
        if a and b and len(a & b) / len(a | b) >= threshold:
            out.add((i, j))
    return out


def real_prompts() -> list[str]:
    """Distinct real prompts (user requests) from ../shared/data, in a fixed order."""
    out: list[str] = []
    for r in orjson.loads((DATA / "prompts" / "sharegpt_first_turns_2978.json").read_bytes()):
        out.append(r["conversations"][0]["value"])
    for r in orjson.loads((DATA / "llama_factory" / "alpaca_en_demo.json").read_bytes()):
        out.append((r["instruction"] + "\n" + r["input"]).strip())
    for r in orjson.loads((DATA / "llama_factory" / "dpo_en_demo.json").read_bytes()):
        out.append(r["conversations"][0]["value"])
    for r in orjson.loads((DATA / "evals" / "alpaca_eval_text_davinci_003_outputs.json").read_bytes()):
        out.append(r["instruction"])
    for name in ("arena_hard_v0.1_question.jsonl", "arena_hard_v2.0_question.jsonl", "ifeval_input_data.jsonl"):
        out += [r["prompt"] for r in _jsonl(DATA / "evals" / name)]
    out += [r["question"] for r in _jsonl(DATA / "evals" / "gsm8k_test.jsonl")]
    out += [r["turns"][0] for r in _jsonl(DATA / "evals" / "mt_bench_question.jsonl")]
    out += [r["prompt"] for r in _jsonl(DATA / "ultrafeedback" / "eval_clean.jsonl")]
    out += [r["instruction"] for r in _jsonl(DATA / "self_instruct" / "seed_tasks.jsonl")]
    seen: set[str] = set()
    return [p for p in out if p.strip() and not (p in seen or seen.add(p))]


def write_prompt_corpus(path: Path, n_docs: int, seed: int = 0) -> dict:
    """A JSONL of n_docs `{"prompt": ...}` records: every real prompt once, then copies with one word replaced
    (by a word of another prompt) until n_docs, shuffled. Returns what was written."""
    rng = random.Random(seed)
    bases = real_prompts()
    vocab = sorted({w for p in bases[:3000] for w in p.split() if w.isalpha()})
    docs = list(bases)
    while len(docs) < n_docs:
        words = bases[rng.randrange(len(bases))].split(" ")
        words[rng.randrange(len(words))] = rng.choice(vocab)
        docs.append(" ".join(words))
    docs = docs[:n_docs]
    rng.shuffle(docs)
    with path.open("wb") as f:
        for d in docs:
            f.write(orjson.dumps({"prompt": d}) + b"\n")
    return {"documents": len(docs), "distinct_prompts": len(bases), "bytes": path.stat().st_size,
            "mean_words_per_document": round(float(np.mean([len(d.split()) for d in docs])), 1)}


def alignmix_duplicate_lines(out: Path, n_docs: int) -> set[int]:
    """Lines (0-based) of the corpus that `alignmix dedup` did not keep: repeated content (ingest), exact and
    near duplicates. Other rejections (an empty prompt) are not duplicates."""
    import polars as pl

    kept = set(int(i) for i in pl.read_parquet(out / "data" / "*.parquet", columns=["source_id"])["source_id"])
    not_dup = set()
    for f in (out / "rejected").glob("ingest-*.parquet"):
        rej = pl.read_parquet(f, columns=["record", "drop_reason"])
        not_dup |= set(rej.filter(pl.col("drop_reason") != "duplicate_content")["record"].to_list())
    return set(range(n_docs)) - kept - not_dup


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def end_to_end(n_docs: int, threshold: float, repeat: int, seed: int) -> dict:
    """`alignmix dedup FILE` against plain datasketch on the same JSONL, both as subprocesses, best of `repeat`."""
    with tempfile.TemporaryDirectory(prefix="alignmix-dedup-bench-") as tmp:
        tmp_dir = Path(tmp)
        corpus = tmp_dir / "prompts.jsonl"
        written = write_prompt_corpus(corpus, n_docs, seed)
        ours_cmd = [str(Path(sys.executable).parent / "alignmix"), "dedup", str(corpus), "--threshold", str(threshold)]
        base_cmd = [sys.executable, str(ROOT / "bench" / "dedup_datasketch.py"), str(corpus),
                    "--threshold", str(threshold), "--dups", str(tmp_dir / "datasketch-dups.json")]
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {"alignmix": [], "datasketch": []}
        for r in range(repeat):
            out = tmp_dir / f"out-{r}"  # a fresh folder each time: nothing resumed from an earlier round
            times["alignmix"].append(_timed([*ours_cmd, "--out", str(out)]))
            times["datasketch"].append(_timed(base_cmd))
        # Start-up alone: the CLI answering --help, and the baseline's imports, each best of `repeat`.
        startup = {
            "alignmix": min(_timed([*ours_cmd[:2], "--help"]) for _ in range(repeat)),
            "datasketch": min(_timed([sys.executable, "-c", "import orjson; from datasketch import MinHash, MinHashLSH"])
                              for _ in range(repeat)),
        }
        load_after = os.getloadavg()
        ours = alignmix_duplicate_lines(tmp_dir / "out-0", written["documents"])
        matches = {i: j for i, j in orjson.loads((tmp_dir / "datasketch-dups.json").read_bytes())}
        texts = [orjson.loads(line)["prompt"] for line in corpus.read_bytes().split(b"\n") if line]
    theirs = set(matches)
    best = {k: min(v) for k, v in times.items()}
    union = ours | theirs
    # datasketch does not verify its candidates: how many of the lines only it drops match a line they are
    # not similar enough to (exact Jaccard of the same shingles below the threshold)? alignmix verifies every
    # pair it drops for by exact Jaccard, so the lines only it drops are ones datasketch's LSH missed.
    only_theirs = sorted(theirs - ours)
    below = sum(
        1 for i in only_theirs
        if _jaccard(set(python_shingles(texts[i])), set(python_shingles(texts[matches[i]]))) < threshold
    )
    return {
        "benchmark": "dedup end to end: raw JSONL in, duplicates out, Python start-up and imports included",
        "corpus": {**written, "threshold": threshold, "num_perm": 128, "ngram": 5},
        "commands": {"alignmix": "alignmix dedup prompts.jsonl --out DIR",
                     "datasketch": "python bench/dedup_datasketch.py prompts.jsonl"},
        "lsh": {
            "alignmix": "bands and rows for recall (weights 0.02, 0.98): {} x {}, every candidate verified by exact "
                        "Jaccard".format(*optimal_params(threshold, 128, (0.02, 0.98))),
            "datasketch": "MinHashLSH defaults: {} x {}, candidates not verified".format(
                *optimal_params(threshold, 128)),
        },
        "timing": f"best of {repeat} alternating rounds, wall clock of each subprocess",
        "seconds": {k: round(v, 3) for k, v in best.items()},
        "all_seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "speedup_alignmix_vs_datasketch": round(best["datasketch"] / best["alignmix"], 2),
        "startup_seconds": {k: round(v, 3) for k, v in startup.items()},
        "duplicates": {"alignmix": len(ours), "datasketch": len(theirs), "both": len(ours & theirs),
                       "agreement": round(len(ours & theirs) / len(union), 4) if union else 1.0,
                       "only_alignmix": len(ours - theirs), "only_datasketch": len(only_theirs),
                       "only_datasketch_matched_below_threshold": below},
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--end-to-end", action="store_true", help="alignmix dedup FILE against datasketch, as subprocesses")
    ap.add_argument("--docs", type=int, default=None, help="documents (default 100,000; end to end 160,000)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each system's best time is reported")
    args = ap.parse_args()
    if args.end_to_end:
        print(json.dumps(end_to_end(args.docs or 160_000, args.threshold, args.repeat, args.seed), indent=2))
        return
    docs, planted = build_corpus(args.docs or 100_000, args.seed)
    # Warm-up on a small slice, so one-time imports and datasketch's parameter search are not timed.
    for run in (run_alignmix, run_datasketch, run_rensa):
        run(docs[:500], args.threshold)
    runs = (
        ("alignmix", run_alignmix),
        ("alignmix_2_threads", lambda d, t: run_alignmix(d, t, workers=2)),
        ("datasketch", run_datasketch),
        ("rensa", run_rensa),
    )
    # Round-robin repeats, best time of each: the machine is shared, so load drifts during a run, and the
    # rounds spread that drift over all systems alike.
    results: dict[str, tuple] = {}
    for _ in range(args.repeat):
        for name, run in runs:
            found, seconds, info = run(docs, args.threshold)
            if name not in results or seconds < results[name][1]:
                results[name] = (found, seconds, info)
    pool = set(planted)
    for found, _, _ in results.values():
        pool |= found
    truth = true_pairs(docs, pool, args.threshold)
    mismatch = sum(1 for d, w in zip(docs, word_lists(docs)) if _WORD.findall(unicodedata.normalize("NFKC", d).lower()) != w)
    report: dict = {
        "benchmark": "near-duplicate detection, shingling through clusters",
        "documents": len(docs),
        "planted_near_duplicates": len(planted),
        "mean_words_per_document": round(float(np.mean([len(d.split()) for d in docs])), 1),
        "threshold": args.threshold,
        "timing": f"best of {args.repeat} round-robin rounds",
        "num_perm": 128,
        "ngram": 5,
        "true_pairs_in_pool": len(truth),
        "documents_tokenized_differently_by_python_re": mismatch,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}",
        "systems": {},
    }
    for name, (found, seconds, info) in results.items():
        hit = len(found & truth)
        report["systems"][name] = {
            "seconds": round(seconds, 3),
            "docs_per_second": round(len(docs) / seconds, 1),
            "pairs_found": len(found),
            "recall": round(hit / len(truth), 4) if truth else None,
            "precision": round(hit / len(found), 4) if found else None,
            **info,
        }
    systems = report["systems"]
    for ours in ("alignmix", "alignmix_2_threads"):
        for base in ("datasketch", "rensa"):
            report[f"speedup_{ours}_vs_{base}"] = round(systems[ours]["docs_per_second"] / systems[base]["docs_per_second"], 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
