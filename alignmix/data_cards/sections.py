"""The card's sections, one function each: which recorded statistics a section shows and how it lays them
out in blocks. The sentences come from `wording`; the renderers in `render` turn blocks into markdown, HTML or
terminal output.

    >>> [s.title for s in build_sections(load_card_data("out/demo"), {})][:4]             # doctest: +SKIP
    ['About this mix', 'Sources', 'Funnel', 'Lengths']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignmix.data_cards import wording
from alignmix.data_cards.plots import is_histogram
from alignmix.data_cards.render import Section
from alignmix.pipeline.topics import CATEGORIES, CATEGORY_NAMES

Plots = dict[str, Path]
HIST_HEADERS = ["measure", "n", "null", "mean", "median", "p90"]


def _hist_row(name: str, h: dict[str, Any]) -> list[Any]:
    return [name, h["n"], h.get("null", 0), h.get("mean"), h.get("p50"), h.get("p90")]


def _mix_dist(card: dict[str, Any]) -> dict[str, Any]:
    return card["mix"].get("distributions", {})


def about_section(card: dict[str, Any], plots: Plots) -> Section:
    manifest, mix = card["manifest"], card["mix"]["mix"]
    sec = Section("About this mix")
    if manifest.get("description"):
        sec.p(manifest["description"])
    sec.p(wording.about(manifest["row_kind"], mix["rows"]["total"], len(mix["sources"]), manifest["alignmix_version"],
                        manifest["name"], manifest["seed"], manifest["recipe_hash"]))
    sec.table(["split", "rows", "shards"], [
        [s, n, sum(1 for x in manifest["shards"] if x["split"] == s)] for s, n in manifest["splits"].items()
    ])
    return sec.p("Load it with `datasets.load_dataset(\"parquet\", data_dir=\"data\")`, or from the Hub by repo id.")


def sources_section(card: dict[str, Any], plots: Plots) -> Section:
    mix_record = card["mix"]
    sec = Section("Sources")
    rows = []
    for s in mix_record["sources_table"]:
        by_reason = "; ".join(f"{stage}: {wording.reasons(d)}" for stage, d in sorted(s["dropped"].items())) or "-"
        rows.append([s["source"], s["read"], s["dropped_total"], by_reason, s["kept"], s["in_mix"], s["train"],
                     s["test"], f"{100 * s['share_of_mix']:.1f}%"])
    sec.table(["source", "read", "dropped", "dropped by stage and reason", "kept", "in mix", "train", "test",
               "share of mix"], rows)
    rules = [[name, f"{m['rule']}: {m['value']}", m["available"], m["asked"], m["distinct_rows"], m["max_times"],
              "yes" if m["upsample"] else "no"] for name, m in mix_record["mix"]["sources"].items()]
    sec.p("How each source was drawn (rows repeat only where the recipe allows upsampling):")
    sec.table(["source", "rule", "available", "drawn", "distinct rows", "max repeats", "upsample"], rules)
    if any(s["unaccounted"] for s in mix_record["sources_table"]):
        sec.p("Warning: for some sources, rows read minus rows dropped differs from rows kept (`unaccounted`).")
    return sec


def funnel_section(card: dict[str, Any], plots: Plots) -> Section:
    sec = Section("Funnel")
    sec.table(["stage", "rows in", "rows kept", "dropped", "by reason"],
              [[f["stage"], f["rows_in"], f["rows_kept"], sum(f["dropped"].values()), wording.reasons(f["dropped"])]
               for f in card["mix"]["funnel"]])
    sec.p("The last step is the mix: rows available after curation, and rows drawn (repeats included).")
    return sec.plot("funnel", plots, "rows in and kept at every stage")


def lengths_section(card: dict[str, Any], plots: Plots) -> Section:
    dist = _mix_dist(card)
    sec = Section("Lengths")
    names = [k for k in ("prompt_chars", "chosen_chars", "rejected_chars", "response_chars", "turns") if k in dist]
    sec.table(HIST_HEADERS, [_hist_row(k, dist[k]) for k in names])
    if "chosen_rejected_ratio" in dist:
        sec.p(wording.mix_length_line(dist["chosen_longer_share"], dist["chosen_rejected_ratio"].get("p50")))
    return sec.plot("lengths", plots, "length distributions (characters)")


def reasoning_section(card: dict[str, Any], plots: Plots) -> Section | None:
    """Thinking-mode shares (fusion), reasoning and answer lengths per source, verified accuracy per source."""
    record, fusion = card["mix"].get("reasoning"), card["mix"]["mix"].get("fusion")
    if not record:
        return None
    sec = Section("Reasoning")
    if fusion:
        asked = fusion.get("asked_thinking_share")
        sec.p(f"Thinking-mode fusion: {wording.percent(fusion.get('thinking_share'))} of the rows drawn are thinking "
              f"rows (asked: {wording.percent(asked) if asked is not None else 'as the sources give them'}); flags: "
              f"{fusion['flags']}, empty think block on non-thinking rows: {'yes' if fusion['empty_think'] else 'no'}.")
        before, after = fusion["before"]["by_source"], fusion["after"]["by_source"]
        sec.table(["source", "thinking drawn", "non-thinking drawn", "thinking kept", "non-thinking kept"],
                  [[n, b["thinking"], b["non_thinking"], after.get(n, {}).get("thinking", 0),
                    after.get(n, {}).get("non_thinking", 0)] for n, b in before.items()])
    sec.p("Lengths of the final answer's reasoning and answer, in words (the chosen answer for pairs):")
    sec.table(["source", "rows", "with reasoning", "reasoning mean", "reasoning median", "reasoning p90",
               "answer mean", "answer median"],
              [[n, d["rows"], d["thinking"], d["reasoning_words"].get("mean"), d["reasoning_words"].get("p50"),
                d["reasoning_words"].get("p90"), d["answer_words"].get("mean"), d["answer_words"].get("p50")]
               for n, d in record["by_source"].items()])
    if record["verified"]:
        sec.p("Verified answers, as the verify stage and rejection sampling recorded them (accuracy: correct / "
              "(correct + wrong)):")
        sec.table(["stage", "source", "verdicts", "accuracy"],
                  [[v["stage"], v["source"], wording.reasons(v["verdicts"]), wording.percent(v["accuracy"])]
                   for v in record["verified"].values()])
    else:
        sec.p("No answer was verified for this mix (no verify stage or rejection sampling ran).")
    return sec


def _bias_table(before: dict[str, Any], after: dict[str, Any], unit: str) -> tuple[list[str], list[list[Any]]]:
    def ratio(p: dict[str, Any], key: str) -> Any:
        return p.get("pair_ratio", {}).get(key)

    def longer(p: dict[str, Any]) -> str:
        differ = p.get("chosen_longer", 0) + p.get("chosen_shorter", 0)
        return f"{wording.percent(p.get('share_chosen_longer'))} ({p.get('chosen_longer', 0)} of {differ})"

    rows = [
        ["pairs", before["pairs"], after["pairs"]],
        [f"mean chosen length ({unit})", before.get("mean_chosen_len"), after.get("mean_chosen_len")],
        [f"mean rejected length ({unit})", before.get("mean_rejected_len"), after.get("mean_rejected_len")],
        ["ratio of mean lengths (chosen / rejected)", before.get("ratio_of_means"), after.get("ratio_of_means")],
        ["per-pair ratio: geometric mean", ratio(before, "geometric_mean"), ratio(after, "geometric_mean")],
        ["per-pair ratio: median", ratio(before, "median"), ratio(after, "median")],
        ["per-pair ratio: mean", ratio(before, "mean"), ratio(after, "mean")],
        ["chosen longer (of pairs whose lengths differ)", longer(before), longer(after)],
        ["ties (equal length)", before.get("ties"), after.get("ties")],
    ]
    return ["measure", "before", "after"], rows


def _bucket_table(before: dict[str, Any], after: dict[str, Any], unit: str) -> tuple[list[str], list[list[Any]]]:
    after_by = {b["bucket"]: b for b in after.get("buckets", [])}
    rows = []
    for b in before.get("buckets", []):
        a = after_by.get(b["bucket"], {"pairs": 0, "share_chosen_longer": None, "ties": 0})
        rows.append([b["bucket"], b["label"], b["pairs"], b["ties"], wording.percent(b["share_chosen_longer"]),
                     a["pairs"], a["ties"], wording.percent(a["share_chosen_longer"])])
    headers = ["bucket", f"mean length ({unit})", "pairs before", "ties before",
               "chosen longer before", "pairs after", "ties after", "chosen longer after"]
    return headers, rows


def length_bias_section(card: dict[str, Any], plots: Plots) -> Section:
    """The length stage's corpus picture before and after it, with warnings; the mix's own figures (characters)
    when no stage recorded one."""
    sec = Section("Length bias")
    records = card.get("length_bias", {})
    for stage, record in records.items():
        before, after, unit = record["before"], record["after"], record.get("unit", "words")
        if not before.get("pairs"):
            sec.p(f"The {stage} stage saw no preference pairs.")
            continue
        sec.p(wording.length_bias_statement(stage, unit, before, after))
        for when, picture in ((f"before the {stage} stage", before), (f"after the {stage} stage", after)):
            for line in wording.length_bias_warnings(when, picture.get("ratio_of_means"),
                                                     picture.get("share_chosen_longer")):
                sec.p(line)
        sec.table(*_bias_table(before, after, unit))
        sec.table(*_bucket_table(before, after, unit))
        sec.p(wording.length_bias_actions(record, card["stages"].get(stage, {}).get("dropped", {})))
    dist = _mix_dist(card)
    if not records and "chosen_longer_share" in dist:
        chosen, rejected = dist["chosen_chars"].get("mean"), dist["rejected_chars"].get("mean")
        ratio = round(chosen / rejected, 4) if chosen is not None and rejected else None
        sec.p(f"No length stage ran. In the mix (characters), the chosen/rejected ratio of mean lengths is "
              f"{wording.number(ratio)} and chosen is the longer response in "
              f"{wording.percent(dist['chosen_longer_share'])} of pairs (ties count as not longer).")
        for line in wording.length_bias_warnings("in the mix", ratio, dist["chosen_longer_share"]):
            sec.p(line)
    elif not records:
        sec.p("Not measured: the mix holds no preference pairs.")
    return sec


def scores_section(card: dict[str, Any], plots: Plots) -> Section | None:
    dist = _mix_dist(card)
    names = [k for k in ("score_chosen", "score_rejected", "score_margin") if k in dist]
    if not names:
        return None
    sec = Section("Scores and margins")
    sec.table(HIST_HEADERS, [_hist_row(k, dist[k]) for k in names])
    return sec.plot("scores", plots, "score and margin histograms")


def languages_section(card: dict[str, Any], plots: Plots) -> Section:
    dist = _mix_dist(card)
    sec = Section("Languages")
    if dist.get("languages"):
        sec.table(["language", "rows"], [[k, v] for k, v in dist["languages"].items()])
        return sec.plot("languages", plots, "languages in the mix")
    declared = ", ".join(card["manifest"]["language"])
    return sec.p(f"Not measured: no language-ID stage ran. Declared by the recipe: {declared}.")


def topics_section(card: dict[str, Any], plots: Plots) -> Section:
    cats = card["mix"]["mix"]["categories"]
    sec = Section("Topic coverage")
    rows = [[name, *[counts.get(c, 0) for c in CATEGORIES]] for name, counts in cats["by_source"].items()]
    rows.append(["(mix)", *[cats["mix"].get(c, 0) for c in CATEGORIES]])
    sec.table(["source", *[CATEGORY_NAMES[c] for c in CATEGORIES]], rows)
    sec.p("Categories come from alignmix's rule-based topic classifier over each prompt (rows in the mix, "
          "repeats included).")
    return sec.plot("topics", plots, "topic coverage per source and for the mix")


def _named_stage_section(title: str, card: dict[str, Any], keys: tuple[str, ...]) -> Section:
    """Stages whose name or drop reasons mention one of `keys` (e.g. dedup: `near_duplicate`)."""
    sec = Section(title)
    rows = []
    for name, stats in card["stages"].items():
        dropped = stats.get("dropped", {})
        if any(k in name for k in keys) or any(k in r for r in dropped for k in keys):
            rows.append([name, stats["rows_in"], sum(dropped.values()), wording.reasons(dropped)])
            extra = {k: v for k, v in stats.get("distributions", {}).items() if not is_histogram(v)}
            if extra:
                sec.p(f"{name} recorded: {wording.plain(extra)}")
    if rows:
        sec.table(["stage", "rows in", "dropped", "by reason"], rows)
    else:
        sec.p(f"No {title.lower()} stage ran for this mix.")
    return sec


def dedup_section(card: dict[str, Any], plots: Plots) -> Section:
    sec = _named_stage_section("Deduplication", card, ("dedup", "duplicate", "dup"))
    dist = _mix_dist(card)
    if "dup_clusters_in_mix" in dist:
        d = dist["dup_clusters_in_mix"]
        sec.p(f"Rows of the mix that belong to a duplicate cluster: {d['rows']} in {d['clusters']} clusters.")
    return sec


def decontam_section(card: dict[str, Any], plots: Plots) -> Section:
    return _named_stage_section("Decontamination", card, ("contam",))


def review_section(card: dict[str, Any], plots: Plots) -> Section:
    sec = Section("Human review")
    if not card["review"]:
        return sec.p("No human review was recorded for this mix.")
    for name, rec in card["review"].items():
        flat = []
        for k, v in sorted(rec.items()):
            if isinstance(v, dict):
                flat += [[f"{k}.{kk}", vv] for kk, vv in v.items() if not isinstance(vv, (dict, list))]
            elif not isinstance(v, list) and k not in ("fingerprint", "verdicts_path"):
                flat.append([k, v])
        if isinstance(rec.get("agreement"), (int, float)):
            sec.p(f"A person agreed with the chosen/rejected labels in {100 * rec['agreement']:.1f}% of "
                  f"{rec.get('reviewed', '?')} reviewed pairs.")
        sec.p(f"From {name}:").table(["field", "value"], flat)
    return sec


def stage_statistics_section(card: dict[str, Any], plots: Plots) -> Section:
    sec = Section("Stage statistics")
    for name, stats in card["stages"].items():
        hists = {k: v for k, v in stats.get("distributions", {}).items() if is_histogram(v)}
        sec.p(wording.stage_line(name, stats))
        if hists:
            sec.table(HIST_HEADERS, [_hist_row(k, h) for k, h in hists.items()])
        sec.plot(f"stage:{name}", plots, f"distributions recorded by {name}")
    if not card["stages"]:
        sec.p("No curation stage ran.")
    return sec


def examples_section(card: dict[str, Any], plots: Plots) -> Section:
    mix_record = card["mix"]
    sec = Section("Examples")
    if mix_record["examples"]:
        # stats JSON is written with sorted keys, so the column order is fixed here.
        cols = [k for k in ("source", "category", "prompt", "chosen", "rejected", "response")
                if k in mix_record["examples"][0]]
        sec.p("The first rows of each source in the train split (clipped):")
        sec.table(cols, [[e.get(k) for k in cols] for e in mix_record["examples"]])
    if mix_record["rejected_examples"]:
        sec.p("The first rejected row of each stage and reason (clipped):")
        sec.table(["stage", "reason", "detail", "source", "text"],
                  [[e["drop_stage"], e["drop_reason"], e["drop_detail"], e["source"], e["text"]]
                   for e in mix_record["rejected_examples"]])
    return sec


def recipe_section(card: dict[str, Any], plots: Plots) -> Section:
    return Section("Recipe").code(card["manifest"]["recipe_yaml"], "yaml")


def version_section(card: dict[str, Any], plots: Plots) -> Section:
    manifest = card["manifest"]
    env = manifest["environment"]
    return Section("Version and environment").table(["what", "value"], [
        ["alignmix", manifest["alignmix_version"]], ["python", env["python"]], ["platform", env["platform"]],
        *[[k, v] for k, v in env["packages"].items()], ["recipe sha256", manifest["recipe_hash"]],
    ])


def checksums_section(card: dict[str, Any], plots: Plots) -> Section:
    return Section("Shard checksums").table(
        ["file", "split", "rows", "sha256"], [[s["file"], s["split"], s["rows"], s["sha256"]]
                                              for s in card["manifest"]["shards"]]
    )


def _round_row(r: dict[str, Any]) -> list[Any]:
    return [r["round"], r["pairs"]["rows"], r["pairs"].get("margin_mean"), r["samples"].get("mean_chars"),
            r["heldout"]["after"].get("reward_accuracy"), r["win_rate"].get("win_rate"), r["win_rate"].get("new_chars")]


def rounds_section(card: dict[str, Any], plots: Plots) -> Section | None:
    """Iterative DPO: the per-round figures side by side, the plot, and a length-drift warning."""
    rounds = card.get("rounds") or []
    if not rounds:
        return None
    sec = Section("Iterative DPO rounds")
    sec.p(f"{len(rounds)} rounds of on-policy DPO: each sampled answers from the policy the round before left, "
          "rated them with the recipe's judge, paired and curated them, and continued DPO from the last adapter with "
          "the start model as the fixed reference. The mix holds every round's curated pairs.")
    sec.table(["round", "pairs kept", "mean score margin", "sampled answer chars", "held-out reward accuracy",
               "win rate over previous", "held-out answer chars"], [_round_row(r) for r in rounds])
    start = rounds[0]["win_rate"].get("previous_chars")
    sec.p(f"The start policy's held-out answers average {wording.number(start)} characters.")
    for r in rounds:
        line = wording.length_drift_warning(start, r["win_rate"].get("new_chars"), r["round"])
        if line:
            sec.p(line)
    return sec.plot("rounds", plots, "per-round figures of iterative DPO")


def round_sections(card: dict[str, Any], plots: Plots) -> list[Section]:
    """One section per round: its summary, rows at every step, and its figures."""
    out = []
    for r in card.get("rounds") or []:
        sec = Section(f"Round {r['round']}").p(wording.round_summary(r))
        sec.table(["step", "rows in", "rows kept", "dropped by reason"],
                  [[s["stage"], s["rows_in"], s["rows_kept"], wording.reasons(s.get("dropped") or {})]
                   for s in r["steps"]])
        figures = {**{f"sampled answers: {k}": v for k, v in r["samples"].items()},
                   **{f"pairs: {k}": v for k, v in r["pairs"].items()},
                   **{f"dpo: {k}": v for k, v in r["train"].items()},
                   **{f"held-out after: {k}": v for k, v in r["heldout"]["after"].items()},
                   **{f"win rate: {k}": v for k, v in r["win_rate"].items()}}
        out.append(sec.table(["measure", "value"], [[k, v] for k, v in figures.items()]))
    return out


SECTIONS: list[Callable[[dict[str, Any], Plots], Section | list[Section] | None]] = [
    about_section, sources_section, funnel_section, rounds_section, round_sections, lengths_section, reasoning_section,
    length_bias_section, scores_section, languages_section, topics_section, dedup_section, decontam_section, review_section, stage_statistics_section,
    examples_section, recipe_section, version_section, checksums_section,
]


def build_sections(card: dict[str, Any], plots: Plots) -> list[Section]:
    """Every section of the card, in reading order, from recorded statistics only (a section with nothing to
    show is left out)."""
    out: list[Section] = []
    for build in SECTIONS:
        sec = build(card, plots)
        out += sec if isinstance(sec, list) else [sec] if sec is not None else []
    return out
