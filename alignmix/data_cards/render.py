"""The card's content as sections of plain blocks (paragraphs, tables, plots, code), built once from the
recorded statistics, then written three ways: Hub markdown (README.md), self-contained HTML, and the terminal.

Rows are untrusted text. Markdown cells and paragraphs are HTML-escaped (the Hub renders HTML inside markdown)
and pipes escaped; the HTML is rendered by Jinja with autoescaping on, so every value, names and numbers
included, is escaped; the one thing inserted unescaped is each plot's base64 data, which only holds [A-Za-z0-9+/=].
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from alignmix.data_cards.plots import is_histogram
from alignmix.pipeline.topics import CATEGORIES, CATEGORY_NAMES


@dataclass
class Block:
    kind: str  # "p" | "table" | "plot" | "code"
    text: str = ""
    headers: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    plot: str = ""  # a key of make_plots()'s result
    lang: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def p(self, text: str) -> Section:
        self.blocks.append(Block("p", text=text))
        return self

    def table(self, headers: list[str], rows: list[list[Any]]) -> Section:
        self.blocks.append(Block("table", headers=headers, rows=rows))
        return self

    def plot(self, key: str, plots: dict[str, Path], alt: str) -> Section:
        if key in plots:
            self.blocks.append(Block("plot", plot=key, text=alt))
        return self

    def code(self, text: str, lang: str = "") -> Section:
        self.blocks.append(Block("code", text=text, lang=lang))
        return self


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{r} {n}" for r, n in sorted(dropped.items())) or "-"


def _hist_row(name: str, h: dict[str, Any]) -> list[Any]:
    return [name, h["n"], h.get("null", 0), h.get("mean"), h.get("p50"), h.get("p90")]


HIST_HEADERS = ["measure", "n", "null", "mean", "median", "p90"]


def build_sections(card: dict[str, Any], plots: dict[str, Path]) -> list[Section]:
    """Every section of the card, in reading order, from recorded statistics only."""
    manifest, mix_record = card["manifest"], card["mix"]
    mix, dist = mix_record["mix"], mix_record.get("distributions", {})
    kind, total = manifest["row_kind"], mix["rows"]["total"]
    sections = []

    about = Section("About this mix")
    if manifest.get("description"):
        about.p(manifest["description"])
    about.p(
        f"A {kind} mix of {total} rows from {len(mix['sources'])} sources, built by alignmix "
        f"{manifest['alignmix_version']} from the recipe `{manifest['name']}` with seed {manifest['seed']} "
        f"(recipe sha256 {manifest['recipe_hash'][:16]}…). The same recipe and seed give byte-identical shards."
    )
    about.table(["split", "rows", "shards"], [
        [s, n, sum(1 for x in manifest["shards"] if x["split"] == s)] for s, n in manifest["splits"].items()
    ])
    about.p("Load it with `datasets.load_dataset(\"parquet\", data_dir=\"data\")`, or from the Hub by repo id.")
    sections.append(about)

    src = Section("Sources")
    rows = []
    for s in mix_record["sources_table"]:
        by_reason = "; ".join(f"{stage}: {_reasons(d)}" for stage, d in sorted(s["dropped"].items())) or "-"
        rows.append([s["source"], s["read"], s["dropped_total"], by_reason, s["kept"], s["in_mix"], s["train"],
                     s["test"], f"{100 * s['share_of_mix']:.1f}%"])
    src.table(["source", "read", "dropped", "dropped by stage and reason", "kept", "in mix", "train", "test",
               "share of mix"], rows)
    rules = []
    for name, m in mix["sources"].items():
        rules.append([name, f"{m['rule']}: {m['value']}", m["available"], m["asked"], m["distinct_rows"],
                      m["max_times"], "yes" if m["upsample"] else "no"])
    src.p("How each source was drawn (rows repeat only where the recipe allows upsampling):")
    src.table(["source", "rule", "available", "drawn", "distinct rows", "max repeats", "upsample"], rules)
    if any(s["unaccounted"] for s in mix_record["sources_table"]):
        src.p("Warning: for some sources, rows read minus rows dropped differs from rows kept (`unaccounted`).")
    sections.append(src)

    fun = Section("Funnel")
    fun.table(["stage", "rows in", "rows kept", "dropped", "by reason"],
              [[f["stage"], f["rows_in"], f["rows_kept"], sum(f["dropped"].values()), _reasons(f["dropped"])]
               for f in mix_record["funnel"]])
    fun.p("The last step is the mix: rows available after curation, and rows drawn (repeats included).")
    fun.plot("funnel", plots, "rows in and kept at every stage")
    sections.append(fun)

    lengths = Section("Lengths")
    names = [k for k in ("prompt_chars", "chosen_chars", "rejected_chars", "response_chars", "turns") if k in dist]
    lengths.table(HIST_HEADERS, [_hist_row(k, dist[k]) for k in names])
    if "chosen_rejected_ratio" in dist:
        r = dist["chosen_rejected_ratio"]
        lengths.p(
            f"Chosen responses are longer than rejected ones in {100 * dist['chosen_longer_share']:.1f}% of pairs; "
            f"the median log2 ratio of chosen to rejected length is {r.get('p50')} "
            "(0: same length; a long positive tail is the length bias a DPO model learns)."
        )
    lengths.plot("lengths", plots, "length distributions (characters)")
    sections.append(lengths)

    if any(k in dist for k in ("score_chosen", "score_rejected", "score_margin")):
        scores = Section("Scores and margins")
        scores.table(HIST_HEADERS, [_hist_row(k, dist[k]) for k in ("score_chosen", "score_rejected", "score_margin")
                                    if k in dist])
        scores.plot("scores", plots, "score and margin histograms")
        sections.append(scores)

    langs = Section("Languages")
    if dist.get("languages"):
        langs.table(["language", "rows"], [[k, v] for k, v in dist["languages"].items()])
        langs.plot("languages", plots, "languages in the mix")
    else:
        langs.p(f"Not measured: no language-ID stage ran. Declared by the recipe: {', '.join(manifest['language'])}.")
    sections.append(langs)

    topics = Section("Topic coverage")
    cats = mix["categories"]
    headers = ["source", *[CATEGORY_NAMES[c] for c in CATEGORIES]]
    topic_rows = [[name, *[counts.get(c, 0) for c in CATEGORIES]] for name, counts in cats["by_source"].items()]
    topic_rows.append(["(mix)", *[cats["mix"].get(c, 0) for c in CATEGORIES]])
    topics.table(headers, topic_rows)
    topics.p("Categories come from alignmix's rule-based topic classifier over each prompt (rows in the mix, "
             "repeats included).")
    topics.plot("topics", plots, "topic coverage per source and for the mix")
    sections.append(topics)

    sections.append(_named_stage_section("Deduplication", card, ("dedup", "duplicate", "dup"), dist))
    sections.append(_named_stage_section("Decontamination", card, ("contam",), dist))

    review = Section("Human review")
    if card["review"]:
        for name, rec in card["review"].items():
            flat = []
            for k, v in sorted(rec.items()):
                if isinstance(v, dict):
                    flat += [[f"{k}.{kk}", vv] for kk, vv in v.items() if not isinstance(vv, (dict, list))]
                elif not isinstance(v, list) and k not in ("fingerprint", "verdicts_path"):
                    flat.append([k, v])
            if isinstance(rec.get("agreement"), (int, float)):
                review.p(f"A person agreed with the chosen/rejected labels in {100 * rec['agreement']:.1f}% of "
                         f"{rec.get('reviewed', '?')} reviewed pairs.")
            review.p(f"From {name}:").table(["field", "value"], flat)
    else:
        review.p("No human review was recorded for this mix.")
    sections.append(review)

    stage_sec = Section("Stage statistics")
    for name, stats in card["stages"].items():
        hists = {k: v for k, v in stats.get("distributions", {}).items() if is_histogram(v)}
        stage_sec.p(f"{name}: {stats['rows_in']} rows in, {stats['rows_kept']} kept, "
                    f"dropped {_reasons(stats.get('dropped', {}))}; config {stats.get('config', {})}.")
        if hists:
            stage_sec.table(HIST_HEADERS, [_hist_row(k, h) for k, h in hists.items()])
        stage_sec.plot(f"stage:{name}", plots, f"distributions recorded by {name}")
    if not card["stages"]:
        stage_sec.p("No curation stage ran.")
    sections.append(stage_sec)

    ex = Section("Examples")
    if mix_record["examples"]:
        # stats JSON is written with sorted keys, so the column order is fixed here.
        cols = [k for k in ("source", "category", "prompt", "chosen", "rejected", "response")
                if k in mix_record["examples"][0]]
        ex.p("The first rows of each source in the train split (clipped):")
        ex.table(cols, [[e.get(k) for k in cols] for e in mix_record["examples"]])
    if mix_record["rejected_examples"]:
        ex.p("The first rejected row of each stage and reason (clipped):")
        ex.table(["stage", "reason", "detail", "source", "text"],
                 [[e["drop_stage"], e["drop_reason"], e["drop_detail"], e["source"], e["text"]]
                  for e in mix_record["rejected_examples"]])
    sections.append(ex)

    sections.append(Section("Recipe").code(manifest["recipe_yaml"], "yaml"))

    env = manifest["environment"]
    version = Section("Version and environment")
    version.table(["what", "value"], [["alignmix", manifest["alignmix_version"]], ["python", env["python"]],
                                      ["platform", env["platform"]],
                                      *[[k, v] for k, v in env["packages"].items()],
                                      ["recipe sha256", manifest["recipe_hash"]]])
    sections.append(version)

    sections.append(Section("Shard checksums").table(
        ["file", "split", "rows", "sha256"], [[s["file"], s["split"], s["rows"], s["sha256"]] for s in manifest["shards"]]
    ))
    return sections


def _named_stage_section(title: str, card: dict[str, Any], keys: tuple[str, ...], dist: dict[str, Any]) -> Section:
    """Stages whose name or drop reasons mention one of `keys` (e.g. dedup: `near_duplicate`)."""
    sec = Section(title)
    rows = []
    for name, stats in card["stages"].items():
        reasons = {r: n for r, n in stats.get("dropped", {}).items() if any(k in r for k in keys)}
        if any(k in name for k in keys) or reasons:
            rows.append([name, stats["rows_in"], sum(stats.get("dropped", {}).values()), _reasons(stats.get("dropped", {}))])
            extra = {k: v for k, v in stats.get("distributions", {}).items() if not is_histogram(v)}
            if extra:
                sec.p(f"{name} recorded: {extra}")
    if rows:
        sec.table(["stage", "rows in", "dropped", "by reason"], rows)
    else:
        sec.p(f"No {title.lower()} stage ran for this mix.")
    if title == "Deduplication" and "dup_clusters_in_mix" in dist:
        d = dist["dup_clusters_in_mix"]
        sec.p(f"Rows of the mix that belong to a duplicate cluster: {d['rows']} in {d['clusters']} clusters.")
    return sec


# --- markdown -----------------------------------------------------------------------------------------------


def md_escape(value: Any) -> str:
    """Escape a value for a markdown table cell or paragraph: HTML-escaped, pipes escaped, one line."""
    text = "-" if value is None else str(value)
    return html.escape(" ".join(text.split()), quote=False).replace("|", "\\|")


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(card: dict[str, Any], sections: list[Section], plots: dict[str, Path], meta: dict[str, Any],
                    root: Path) -> str:
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    out = ["---", header.rstrip("\n"), "---", "", f"# {md_escape(card['manifest']['name'])}", ""]
    for sec in sections:
        out += [f"## {md_escape(sec.title)}", ""]
        for b in sec.blocks:
            if b.kind == "p":
                out += [md_escape(b.text), ""]
            elif b.kind == "table":
                out.append("| " + " | ".join(md_escape(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in b.rows]
                out.append("")
            elif b.kind == "plot":
                out += [f"![{md_escape(b.text)}]({plots[b.plot].relative_to(root).as_posix()})", ""]
            elif b.kind == "code":
                fence = _fence(b.text)
                out += [fence + b.lang, b.text.rstrip("\n"), fence, ""]
    return "\n".join(out)


# --- HTML ---------------------------------------------------------------------------------------------------

_ENV = Environment(loader=PackageLoader("alignmix.data_cards", "templates"), autoescape=select_autoescape(["html", "j2"]))
_BASE64 = re.compile(r"^[A-Za-z0-9+/=]*$")


def render_html(card: dict[str, Any], sections: list[Section], plots: dict[str, Path], meta: dict[str, Any]) -> str:
    images = {}
    for key, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        assert _BASE64.match(data)
        images[key] = data
    template = _ENV.get_template("card.html.j2")
    return template.render(card=card, sections=sections, images=images,
                           meta_yaml=yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))


# --- terminal -----------------------------------------------------------------------------------------------


def render_terminal(card: dict[str, Any], sections: list[Section], plots: dict[str, Path], console: Any) -> None:
    """Print the card with rich: a rule per section, tables as tables, plots named by their file."""
    from rich.markup import escape
    from rich.syntax import Syntax
    from rich.table import Table

    console.rule(f"[bold]{escape(card['manifest']['name'])}[/] data card")
    for sec in sections:
        console.rule(escape(sec.title), style="cyan", align="left")
        for b in sec.blocks:
            if b.kind == "p":
                console.print(escape(b.text), highlight=False)
            elif b.kind == "table":
                t = Table(*[escape(h) for h in b.headers], show_lines=False, header_style="bold")
                for row in b.rows:
                    t.add_row(*[escape("-" if c is None else str(c)) for c in row])
                console.print(t)
            elif b.kind == "plot":
                console.print(f"[dim]plot: {escape(str(plots[b.plot]))}[/]", highlight=False)
            elif b.kind == "code":
                console.print(Syntax(b.text, b.lang or "text", word_wrap=True))
