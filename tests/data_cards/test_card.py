"""The data card of a mix built from three real sources (plus one made-up source holding hostile text):
every count it shows is checked against the shards and rejected/, its metadata against what the Hub and
`datasets` accept, and its HTML for escaping."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.data_cards import show_card, write_card
from alignmix.data_cards.collect import validate_hub_metadata
from alignmix.filters.apply import curate_frames
from alignmix.pipeline.mix_build import build_mix, read_source
from alignmix.pipeline.recipe import load_recipe
from alignmix.pipeline.stage import Stage, StageConfig, decide, keep_all
from alignmix.pipeline.store import MixStore
from tests.stage_contract import assert_stage_contract

HOSTILE = "<script>alert('pwned')</script> What is the capital of France?"


class IdenticalPairConfig(StageConfig):
    pass


class IdenticalPair(Stage):
    """A real, minimal curation stage: drops pairs whose chosen and rejected responses are the same text."""

    name = "identical_pair"
    config_class = IdenticalPairConfig

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        last = lambda c: pl.col(c).list.last().struct.field("content")  # noqa: E731
        return decide(keep_all(frame), last("chosen") == last("rejected"), "identical_pair", pl.col("id"))


RECIPE = """
name: cardmix
description: "Three real preference sources and a hostile one; <b>not bold</b>"
seed: 11
license: apache-2.0
sources:
  - {{name: uf, path: {data}/ultrafeedback/eval_clean.jsonl}}
  - {{name: hh, path: {data}/hh_rlhf/test_prefs.jsonl}}
  - {{name: lf, path: {data}/llama_factory/dpo_en_demo.json}}
  - {{name: evil, path: {evil}}}
mix:
  sources:
    uf: {{fraction: 0.5}}
    hh: {{count: 250}}
    lf: {{count: 400, upsample: true}}
    evil: {{fraction: 1.0}}
  test_fraction: 0.1
output: {{rows_per_shard: 300}}
"""


def _write_hostile_source(path: Path) -> None:
    records = [
        {"prompt": HOSTILE, "chosen": "Paris. <img src=x onerror=alert(1)>", "rejected": "</td></table><script>x()"
                                                                                          "</script>"},
        {"prompt": "Say <script>hi</script>", "chosen": "same", "rejected": "same"},  # dropped by identical_pair
        {"prompt": "", "chosen": "a", "rejected": "b"},  # dropped at ingest: empty prompt
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def built(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("card")
    _write_hostile_source(tmp / "evil.jsonl")
    recipe = load_recipe(RECIPE.format(data=shared_data, evil=tmp / "evil.jsonl"))
    store = MixStore(tmp / "out" / recipe.name)
    frames = {s.name: read_source(s, store) for s in recipe.sources}
    assert_stage_contract(IdenticalPair(), pl.concat(list(frames.values())))
    curated = curate_frames(frames, [IdenticalPair()], store)
    build_mix(recipe, curated, tmp / "out")
    write_card(store.root)
    return store.root


def _section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next section."""
    return markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _tables_in(markdown: str, heading: str) -> list[list[dict[str, str]]]:
    """Every markdown table under `## heading`, each as dicts keyed by its header cells."""
    split = lambda ln: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]  # noqa: E731
    tables, lines = [], []
    for ln in _section(markdown, heading).splitlines() + [""]:
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            header = split(lines[0])
            tables.append([dict(zip(header, split(x))) for x in lines[2:] if not x.startswith("|---")])
            lines = []
    return tables


def _table_after(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first markdown table under `## heading`, as dicts keyed by its header cells."""
    return _tables_in(markdown, heading)[0]


def _reasons(cell: str) -> dict[str, dict[str, int]]:
    """'identical_pair: identical_pair 6; ingest: bad_role 2, empty_turn 2' -> {stage: {reason: n}}."""
    out: dict[str, dict[str, int]] = {}
    if cell == "-":
        return out
    for part in cell.split("; "):
        stage, reasons = part.split(": ", 1)
        out[stage] = {r.rsplit(" ", 1)[0]: int(r.rsplit(" ", 1)[1]) for r in reasons.split(", ")}
    return out


def test_the_mix_directory_holds_shards_rejected_rows_card_plots_and_html(built: Path) -> None:
    assert [p.name for p in sorted((built / "data").glob("*.parquet"))] == [
        "test-00000-of-00001.parquet", "train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet"]
    assert {p.name for p in (built / "rejected").glob("*.parquet")} >= {"identical_pair.parquet", "ingest-hh.parquet"}
    assert (built / "README.md").exists() and (built / "card" / "card.html").exists()
    assert {p.name for p in (built / "card").glob("*.png")} == {
        "funnel.png", "lengths.png", "scores.png", "topics.png"}
    for png in (built / "card").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def assert_card_counts_match(mix_dir: Path) -> tuple[list[dict[str, str]], pl.DataFrame]:
    """Every count of the README's sources, funnel, splits, topics and checksum tables against data/ and
    rejected/; returns the sources table and the shards for further checks."""
    from alignmix.pipeline.topics import CATEGORIES, CATEGORY_NAMES

    store = MixStore(mix_dir)
    readme = (mix_dir / "README.md").read_text(encoding="utf-8")
    shards = store.read()
    by_split = {s: store.read(s) for s in store.splits()}
    rejected = store.read_rejected()

    sources = _table_after(readme, "Sources")
    for row in sources:
        name = row["source"]
        mine = rejected.filter(pl.col("source") == name)
        expected: dict[str, dict[str, int]] = {}
        for stage, reason, n in mine.group_by("drop_stage", "drop_reason").len().iter_rows():
            expected.setdefault(stage, {})[reason] = n
        assert _reasons(row["dropped by stage and reason"]) == expected
        assert int(row["dropped"]) == mine.height
        assert int(row["in mix"]) == shards.filter(pl.col("source") == name).height
        for split in ("train", "test"):
            part = by_split.get(split, shards.clear())
            assert int(row[split]) == part.filter(pl.col("source") == name).height
        assert int(row["read"]) == int(row["dropped"]) + int(row["kept"])

    funnel = _table_after(readme, "Funnel")
    assert funnel[0]["stage"] == "ingest" and funnel[-1]["stage"] == "mix"
    assert int(funnel[0]["rows in"]) == sum(int(r["read"]) for r in sources)
    for before, after in zip(funnel[:-2], funnel[1:-1]):
        assert int(before["rows kept"]) == int(after["rows in"])
    for f in funnel[:-1]:
        mine = rejected.filter(pl.col("drop_stage") == f["stage"])
        assert int(f["dropped"]) == mine.height == int(f["rows in"]) - int(f["rows kept"])
    assert int(funnel[-2]["rows kept"]) == sum(int(r["kept"]) for r in sources) == int(funnel[-1]["rows in"])
    assert int(funnel[-1]["rows kept"]) == shards.height

    splits = {r["split"]: int(r["rows"]) for r in _table_after(readme, "About this mix")}
    assert splits == {s: f.height for s, f in by_split.items()}

    topics = {r["source"]: r for r in _table_after(readme, "Topic coverage")}
    for name in [r["source"] for r in sources] + ["(mix)"]:
        part = shards if name == "(mix)" else shards.filter(pl.col("source") == name)
        counts = dict(part.group_by("category").len().iter_rows())
        assert {c: int(topics[name][CATEGORY_NAMES[c]]) for c in CATEGORIES} == {c: counts.get(c, 0) for c in CATEGORIES}

    for row in _table_after(readme, "Shard checksums"):
        path = mix_dir / row["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
        assert pl.read_parquet(path).height == int(row["rows"])
    return sources, shards


def test_every_count_in_the_card_matches_the_shards_and_rejected(built: Path) -> None:
    sources, shards = assert_card_counts_match(built)
    assert [r["source"] for r in sources] == ["evil", "hh", "lf", "uf"]
    evil = next(r for r in sources if r["source"] == "evil")
    assert (evil["read"], evil["dropped"], evil["kept"], evil["in mix"]) == ("3", "2", "1", "1")
    assert _reasons(evil["dropped by stage and reason"]) == {"identical_pair": {"identical_pair": 1},
                                                             "ingest": {"empty_turn": 1}}
    assert sum(int(r["read"]) for r in sources) - 3 == 200 + 1000 + 300  # the real files' records
    assert shards.height == 100 + 250 + 400 + 1  # uf: fraction 0.5 of 200; hh: 250; lf: 400 upsampled; evil: 1
    funnel = _table_after((built / "README.md").read_text(), "Funnel")
    assert [f["stage"] for f in funnel] == ["ingest", "identical_pair", "mix"]


def test_a_mix_curated_by_the_real_filter_stages(shared_data: Path, tmp_path: Path) -> None:
    """`alignmix mix` with the filters' registry: dedup, length, consistency, language and decontamination."""
    pytest.importorskip("alignmix.filters.registry", reason="the curation stages are not installed")
    recipe = tmp_path / "full.yaml"
    recipe.write_text(f"""
name: filtered
seed: 5
license: apache-2.0
sources:
  - {{name: uf, path: {shared_data}/ultrafeedback/eval_clean.jsonl}}
  - {{name: hh, path: {shared_data}/hh_rlhf/test_prefs.jsonl}}
  - {{name: lf, path: {shared_data}/llama_factory/dpo_en_demo.json}}
curation:
  - {{stage: exact_dedup}}
  - {{stage: length}}
  - {{stage: consistency}}
  - {{stage: decontam, evals: [{{path: {shared_data}/evals/gsm8k_test.jsonl, field: question}}]}}
mix:
  sources: {{uf: {{fraction: 1.0}}, hh: {{count: 200}}, lf: {{count: 300, upsample: true}}}}
  test_fraction: 0.1
""")
    result = CliRunner().invoke(app, ["mix", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    mix_dir = tmp_path / "out" / "filtered"
    assert_card_counts_match(mix_dir)
    readme = (mix_dir / "README.md").read_text()
    funnel = _table_after(readme, "Funnel")
    assert [f["stage"] for f in funnel] == ["ingest", "exact_dedup", "length", "consistency", "decontam", "mix"]
    assert [r["stage"] for r in _table_after(readme, "Decontamination")] == ["decontam"]
    assert [r["stage"] for r in _table_after(readme, "Deduplication")] == ["exact_dedup"]
    assert (mix_dir / "card" / "stage-length.png").exists()

    # The length stage's picture, as the card words it, from the stage's own record.
    record = MixStore(mix_dir).read_stats("length")["distributions"]["length_bias"]
    before, after = record["before"], record["after"]
    bias = _section(readme, "Length bias")
    assert (f"Chosen/rejected ratio of mean lengths (words): {before['ratio_of_means']:g} before the length stage "
            f"({before['pairs']} pairs), {after['ratio_of_means']:g} after ({after['pairs']} pairs); chosen is the "
            f"longer response in {100 * before['share_chosen_longer']:.1f}% of pairs before and "
            f"{100 * after['share_chosen_longer']:.1f}% after") in bias
    assert (before["pairs"], after["pairs"]) == (1477, 1387)
    measures, buckets = _tables_in(readme, "Length bias")
    assert {r["measure"]: r["before"] for r in measures}["ratio of mean lengths (chosen / rejected)"] == str(
        before["ratio_of_means"])
    assert [r["chosen longer before"] for r in buckets] == ["48.4%", "52.3%", "53.9%", "46.5%", "47.0%"]
    assert all(45.0 <= float(r["chosen longer after"].rstrip("%")) <= 55.0 for r in buckets)
    assert "Warning" not in bias  # real UltraFeedback and HH-RLHF are within the course's rule


def test_the_card_warns_when_length_bias_breaks_the_courses_rule(tmp_path: Path) -> None:
    """A source whose label follows length: chosen is 4x the rejected in 4 pairs of 5, and 1/4 in the fifth.
    The card warns before the length stage and not after it, where every bucket is back in 45-55%."""
    words = lambda n, tag: " ".join(f"{tag}{i}" for i in range(n))  # noqa: E731
    with (tmp_path / "biased.jsonl").open("w") as f:
        for i in range(120):
            n = 5 + i
            chosen, rejected = (words(4 * n, "c"), words(n, "r")) if i % 5 else (words(n, "c"), words(4 * n, "r"))
            f.write(json.dumps({"prompt": f"Question {i}: how long should an answer be?", "chosen": chosen,
                                "rejected": rejected}) + "\n")
    recipe = tmp_path / "biased.yaml"
    recipe.write_text(f"name: biased\nseed: 1\nsources:\n  - {{name: b, path: {tmp_path / 'biased.jsonl'}}}\n"
                      "curation:\n  - {stage: length}\nmix:\n  sources: {b: {fraction: 1.0}}\n  test_fraction: 0.1\n")
    result = CliRunner().invoke(app, ["mix", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    readme = (tmp_path / "out" / "biased" / "README.md").read_text()
    bias = _section(readme, "Length bias")
    warnings = [ln for ln in bias.splitlines() if ln.startswith("Warning")]
    assert warnings == [
        "Warning: before the length stage, chosen responses are 2.1618x as long as rejected ones on average "
        "(ratio of mean lengths above 2): a model trained on these pairs learns that longer is better.",
        "Warning: before the length stage, chosen is the longer response in 80.0% of pairs, outside 40-60%: the "
        "label follows length.",
    ]
    assert ("Chosen/rejected ratio of mean lengths (words): 2.1618 before the length stage (120 pairs), 1.1039 after "
            "(52 pairs); chosen is the longer response in 80.0% of pairs before and 53.8% after") in bias
    measures, buckets = _tables_in(readme, "Length bias")
    assert [(r["mean length (words)"], r["pairs before"], r["chosen longer before"], r["pairs after"],
             r["chosen longer after"]) for r in buckets] == [
        ("under 86.875", "30", "80.0%", "13", "53.8%"), ("86.875 to under 161.25", "30", "80.0%", "13", "53.8%"),
        ("161.25 to under 235.625", "30", "80.0%", "13", "53.8%"), ("235.625 and over", "30", "80.0%", "13", "53.8%")]
    assert "68 pairs subsampled away where a bucket's share lay outside 45-55%" in bias
    assert len(_tables_in(readme, "Funnel")[0]) == 3  # ingest, length, mix


def test_without_a_length_stage_the_card_states_the_mix_figures(built: Path) -> None:
    bias = _section((built / "README.md").read_text(), "Length bias")
    assert bias.strip() == (
        "No length stage ran. In the mix (characters), the chosen/rejected ratio of mean lengths is 0.974 and chosen "
        "is the longer response in 47.3% of pairs (ties count as not longer).")


def test_the_readme_is_a_valid_hub_dataset_card(built: Path) -> None:
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(built / "README.md")
    meta = card.data.to_dict()
    assert validate_hub_metadata(meta) == []
    assert meta["license"] == "apache-2.0" and meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "test", "path": "data/test-*"}, {"split": "train", "path": "data/train-*"}]}]
    assert "## Recipe" in card.text and "hh: {count: 250}" not in card.text and "count: 250" in card.text
    problems = validate_hub_metadata({**meta, "size_categories": ["tiny"], "license": "nope", "language": ["xx-yy"]})
    assert problems[0] == "license 'nope' is not a Hub license id"
    assert problems[1] == "language 'xx-yy' is not an ISO 639 code the Hub knows"
    assert problems[2].startswith("size_categories 'tiny' is not one of [") and len(problems) == 3


def test_datasets_loads_each_split_with_the_cards_configs(built: Path, tmp_path: Path) -> None:
    import datasets
    from huggingface_hub import DatasetCard

    manifest = json.loads((built / "manifest.json").read_text())
    config = DatasetCard.load(built / "README.md").data.to_dict()["configs"][0]
    files = {f["split"]: str(built / f["path"]) for f in config["data_files"]}
    ds = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == manifest["splits"]
    by_dir = datasets.load_dataset("parquet", data_dir=str(built / "data"), cache_dir=str(tmp_path / "cache2"))
    assert {s: by_dir[s].num_rows for s in by_dir} == manifest["splits"]
    assert {"prompt", "chosen", "rejected", "score_chosen", "category"} <= set(ds["train"].column_names)


def test_hostile_rows_are_escaped_in_the_html(built: Path) -> None:
    page = (built / "card" / "card.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in page  # the drawn row, quoted in Examples
    assert "Say &lt;script&gt;hi&lt;/script&gt;" in page  # the rejected row, quoted with its reason
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page
    assert "<script" not in page.lower() and "<b>" not in page and "<img src=x" not in page
    readme = (built / "README.md").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert('pwned')&lt;/script&gt;" in readme
    assert "<script" not in readme.split("## Recipe")[0].lower()


def test_the_card_renders_from_recorded_stats_alone(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    shutil.rmtree(copy / "data")
    shutil.rmtree(copy / "rejected")
    write_card(copy)
    assert (copy / "README.md").read_text() == (built / "README.md").read_text()
    assert (copy / "card" / "funnel.png").read_bytes() == (built / "card" / "funnel.png").read_bytes()


def test_a_human_review_summary_appears_in_the_card(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    before = (copy / "README.md").read_text()
    assert "No human review was recorded for this mix." in before
    (copy / "review").mkdir()
    (copy / "review" / "summary.json").write_text(json.dumps({
        "reviewed": 20, "agreement": 0.85, "trustworthy": True, "min_agreement": 0.8,
        "counts": {"chosen_better": 17, "rejected_better": 2, "tie": 1, "unsure": 0}}))
    write_card(copy)
    review = _table_after((copy / "README.md").read_text(), "Human review")
    assert {r["field"]: r["value"] for r in review} == {
        "agreement": "0.85", "counts.chosen_better": "17", "counts.rejected_better": "2", "counts.tie": "1",
        "counts.unsure": "0", "min_agreement": "0.8", "reviewed": "20", "trustworthy": "True"}
    assert "agreed with the chosen/rejected labels in 85.0% of 20 reviewed pairs" in (copy / "README.md").read_text()


def test_the_terminal_view_shows_the_sections(built: Path) -> None:
    console = Console(record=True, width=200)
    show_card(built, console)
    text = console.export_text()
    for heading in ("Sources", "Funnel", "Topic coverage", "Shard checksums"):
        assert heading in text
    assert "<script>alert('pwned')</script>" in text  # shown as text, never interpreted


def test_cli_mix_and_card(shared_data: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: climix\nseed: 2\nsources:\n"
        f"  - {{name: uf, path: {shared_data}/ultrafeedback/eval_clean.jsonl}}\n"
        f"  - {{name: hh, path: {shared_data}/hh_rlhf/test_prefs.jsonl, limit: 100}}\n"
        f"mix:\n  sources: {{uf: {{share: 0.5}}, hh: {{share: 0.5}}}}\n  total: 120\n  test_fraction: 0.1\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["mix", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    mix_dir = tmp_path / "out" / "climix"
    manifest = json.loads((mix_dir / "manifest.json").read_text())
    assert manifest["splits"] == {"train": 108, "test": 12}
    result = runner.invoke(app, ["card", str(mix_dir), "--html"])
    assert result.exit_code == 0 and result.output.strip().endswith("card.html")
    result = runner.invoke(app, ["card", str(mix_dir)])
    assert result.exit_code == 0 and "Funnel" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("total: 120", "total: 400"))
    result = runner.invoke(app, ["mix", str(bad), "--out", str(tmp_path / "out")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "mix.sources.hh: the recipe asks for 200 rows (share: 0.5) but source 'hh' has 100 rows" in message


def test_same_recipe_and_seed_give_identical_shards(shared_data: Path, built: Path, tmp_path: Path) -> None:
    recipe = load_recipe(RECIPE.format(data=shared_data, evil=built.parent.parent / "evil.jsonl"))
    store = MixStore(tmp_path / recipe.name)
    frames = {s.name: read_source(s, store) for s in recipe.sources}
    again = build_mix(recipe, curate_frames(frames, [IdenticalPair()], store), tmp_path)
    first = json.loads((built / "manifest.json").read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]
