"""Reasoning traces: the markups split apart and joined back, and real reasoning files ingested.

The real files (../shared/data/reasoning, see SOURCES.md): DeepSeek-R1 traces on MMLU-Pro with the reasoning in
its own field (413 rows, all answered right), and two Sky-T1 models' outputs on the 272 Minerva-Math questions in
the `<|begin_of_thought|>` markup, many of them cut at the token limit. The inline `<think>` and R1-Zero
`<think></think><answer></answer>` markups are rebuilt from those real rows.
"""

from __future__ import annotations

import json
from collections import Counter

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.pipeline.adapters import get_adapter
from alignmix.pipeline.columns import ColumnMap, parse_columns
from alignmix.pipeline.ingest import ingest_sources, read_rejected, read_rows
from alignmix.pipeline.inputs import read_input
from alignmix.pipeline.reasoning import (
    answer_of,
    inline_messages,
    join_reasoning,
    markup_of,
    reasoning_of,
    split_reasoning,
)
from alignmix.pipeline.recipe import RecipeError, SourceSpec, load_recipe
from alignmix.pipeline.schema import (
    MESSAGE_V1,
    RowError,
    check_frame,
    sft_row,
    to_arrow,
)
from alignmix.pipeline.store import MixStore

MMLU = {"prompt": "question", "options": "options", "reasoning": "reasoning", "response": "answer_text",
        "ground_truth": "answer_letter"}
SKYT1 = {"prompt": "question", "response": "code[0]", "ground_truth": "gt"}
# per Sky-T1 model: rows kept, kept rows with reasoning, rejected per reason (272 rows each)
SKYT1_COUNTS = {
    "a": (215, 90, {"unclosed_reasoning": 43, "unclosed_answer": 14}),
    "b": (176, 164, {"unclosed_reasoning": 65, "unclosed_answer": 31}),
}
# the 46 correct-vs-wrong Sky-T1 pairs: pairs kept, rejected per reason; kept pairs with reasoning on both sides
PAIR_COUNTS = (31, {"unclosed_reasoning": 13, "unclosed_answer": 2})
PAIRS_WITH_REASONING_ON_BOTH_SIDES = 13
R1_ZERO = {"<|begin_of_thought|>": "<think>", "<|end_of_thought|>": "</think>", "<|begin_of_solution|>": "<answer>",
           "<|end_of_solution|>": "</answer>"}


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _write(path, records):
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
    return path


def _last(frame: pl.DataFrame, field: str) -> list:
    return frame["messages"].list.last().struct.field(field).to_list()


@pytest.fixture(scope="module")
def mmlu(shared_data):
    return _jsonl(shared_data / "reasoning/r1_mmlu_pro_traces.jsonl")


# --- split and join -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected, markup", [
    ("<think>\nadd\n</think>\n\n5", ("add", "5"), "think"),
    ("add the two\n</think>\n\n5", ("add the two", "5"), "think"),  # opened by the generation prompt
    ("<think>\n\n</think>\n\n5", ("", "5"), "think"),  # Qwen3's non-thinking turn: empty, not None
    ("<think> add </think> <answer> 5 </answer>", ("add", "5"), "r1_zero"),
    ("<|begin_of_thought|>\n\nadd\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n5\n\n<|end_of_solution|>",
     ("add", "5"), "thought"),
    ("<|begin_of_thought|>add<|end_of_thought|>5", ("add", "5"), "thought"),
    ("5, as <answer> tags alone are no reasoning", (None, "5, as <answer> tags alone are no reasoning"), None),
])
def test_split_each_markup(text, expected, markup):
    assert split_reasoning(text) == expected
    assert markup_of(text) == markup


@pytest.mark.parametrize("text, reason", [
    ("<think>\nLet me see, 2 + 3 is", "unclosed_reasoning"),
    ("<|begin_of_thought|>\n\nSo I have this problem", "unclosed_reasoning"),
    ("<think>add</think> <answer>5", "unclosed_answer"),
    ("<|begin_of_thought|>add<|end_of_thought|><|begin_of_solution|>The answer is", "unclosed_answer"),
    ("<think>add</think>\n\n", "missing_answer"),
    ("<think>add</think><answer> </answer>", "missing_answer"),
    ("<|begin_of_thought|>add<|end_of_thought|>", "missing_answer"),
    ("<think>a <think>b</think> c</think> 5", "nested_reasoning"),
    ("<|begin_of_thought|>a<|begin_of_thought|>b<|end_of_thought|>5", "nested_reasoning"),
    ("Sure! <think>add</think> 5", "stray_marker"),
    ("<think>a</think> 5 <think>b</think> 6", "stray_marker"),
    ("<think>a</think> The answer is <answer>5</answer>", "stray_marker"),
    ("<think>a</think> <answer>5</answer> and more", "stray_marker"),
    ("<think>a <answer>5</answer></think> 5", "stray_marker"),
    ("<|begin_of_solution|>5<|end_of_solution|>", "stray_marker"),
    ("<think>a</think><|begin_of_solution|>5<|end_of_solution|>", "mixed_markup"),
])
def test_malformed_traces_are_refused_with_their_reason(text, reason):
    with pytest.raises(RowError) as err:
        split_reasoning(text, "messages[1].content")
    assert (err.value.reason, err.value.field) == (reason, "messages[1].content")


def test_join_then_split_gives_back_every_real_trace(mmlu, shared_data):
    pairs = [(r["reasoning"].strip(), r["answer_text"].strip()) for r in mmlu]
    for r in _jsonl(shared_data / "reasoning/skyt1_minerva_model_b.jsonl"):
        if "<|end_of_solution|>" in r["code"][0]:
            pairs.append(split_reasoning(r["code"][0]))
    assert len(pairs) == 413 + 164
    for reasoning, answer in pairs:
        inline = join_reasoning(reasoning, answer)
        assert inline == f"<think>\n{reasoning}\n</think>\n\n{answer}"
        assert split_reasoning(inline) == (reasoning, answer)
    assert join_reasoning(None, "5") == "5" and split_reasoning(join_reasoning("", "5")) == ("", "5")


def test_reasoning_of_and_answer_of():
    apart = {"role": "assistant", "content": "5", "reasoning_content": "add"}
    inline = {"role": "assistant", "content": "<think>add</think>\n5"}
    plain = {"role": "assistant", "content": "5", "reasoning_content": None}
    assert [(reasoning_of(m), answer_of(m)) for m in (apart, inline, plain)] == [("add", "5"), ("add", "5"), (None, "5")]
    with pytest.raises(RowError, match="never closed"):
        reasoning_of({"role": "assistant", "content": "<think>add"})


def test_inline_messages_render_as_qwen3_renders_reasoning_content(shared_data):
    """Qwen3's own template, fed `reasoning_content`, and the inline text `inline_messages` writes agree, in the
    last turn and (history=False) in earlier ones, whose reasoning Qwen3 drops."""
    jinja2 = pytest.importorskip("jinja2")
    template = jinja2.Environment().from_string((shared_data / "reasoning/qwen3_chat_template.jinja").read_text())
    convo = [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5", "reasoning_content": "add"},
             {"role": "user", "content": "and 4+4?"},
             {"role": "assistant", "content": "8", "reasoning_content": "add again"}]
    qwen3 = template.render(messages=convo)
    assert "<think>\nadd again\n</think>\n\n8" in qwen3 and "add\n" not in qwen3.split("and 4+4?")[0]
    assert template.render(messages=inline_messages(convo, history=False)) == qwen3
    assert inline_messages(convo)[1]["content"] == "<think>\nadd\n</think>\n\n5"
    assert inline_messages(convo, history=False)[1]["content"] == "5"


# --- the schema -------------------------------------------------------------------------------------------------


def test_ids_of_rows_without_reasoning_are_unchanged(shared_data):
    frame = read_rows(SourceSpec(name="a", path=str(shared_data / "llama_factory/alpaca_en_demo.json")))
    assert frame["id"][0] == "662de28ebf00ad980cd4037c562e1462"  # the id this row had before reasoning existed


def test_reasoning_is_part_of_the_id():
    def row(reasoning):
        answer = {"role": "assistant", "content": "5"} | ({} if reasoning is None else {"reasoning_content": reasoning})
        return sft_row([{"role": "user", "content": "2+3?"}, answer], source="s", source_id="0")

    ids = [row(r)["id"] for r in (None, "", "add", " add\n")]
    assert len(set(ids[:3])) == 3 and ids[2] == ids[3]  # stripped, like content
    assert row(None)["messages"][1] == {"role": "assistant", "content": "5"}
    with pytest.raises(RowError) as err:
        sft_row([{"role": "user", "content": "2+3?", "reasoning_content": "x"}, {"role": "assistant", "content": "5"}],
                source="s", source_id="0")
    assert (err.value.reason, err.value.field) == ("misplaced_reasoning", "messages[0].reasoning_content")


def test_shards_written_before_reasoning_still_load(tmp_path):
    old = pa.table({"messages": pa.array([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]],
                                         pa.list_(MESSAGE_V1)),
                    "id": ["x"], "source": ["s"], "source_id": ["0"], "meta": ["{}"]})
    (tmp_path / "old").mkdir()
    pq.write_table(old, tmp_path / "old/train-00000-of-00001.parquet")
    frame = read_input(tmp_path / "old").frame
    assert check_frame(frame) == "sft"
    new = pl.from_arrow(to_arrow(frame))
    assert new["messages"][0].to_list()[1] == {"role": "assistant", "content": "Yo", "reasoning_content": None}
    row = sft_row([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}],
                  source="s", source_id="1")
    both = pl.concat([frame, pl.from_arrow(to_arrow(pl.DataFrame([row]), "sft"))], how="vertical_relaxed")
    assert _last(both, "reasoning_content") == [None, "R"]


# --- real files ---------------------------------------------------------------------------------------------------


def test_r1_traces_with_a_separate_reasoning_field_load_in_datasets_and_trl(mmlu, shared_data, tmp_path):
    """DeepSeek-R1's MMLU-Pro traces through a column mapping: all 413 parse, reasoning and answer apart, the
    answer letter in meta.ground_truth; the shards load in `datasets` and TRL renders them through Qwen3's template
    with the reasoning in the final turn."""
    out = tmp_path / "r1"
    summary = ingest_sources([str(shared_data / "reasoning/r1_mmlu_pro_traces.jsonl")], out, columns=ColumnMap(**MMLU))
    stats = summary.sources[0]
    assert (stats["format"], stats["kind"], stats["rows_in"], stats["rows_kept"], stats["dropped"]) == (
        "columns", "sft", 413, 413, {})
    frame = MixStore(out).read()
    assert _last(frame, "reasoning_content") == [r["reasoning"].strip() for r in mmlu]
    assert _last(frame, "content") == [r["answer_text"] for r in mmlu]
    assert [orjson.loads(m)["ground_truth"] for m in frame["meta"]] == [r["answer_letter"] for r in mmlu]
    options = ["\n".join(f"{letter}. {o}" for letter, o in zip("ABCDEFGHIJ", r["options"])) for r in mmlu]
    assert [m[0]["content"] for m in frame["messages"].to_list()] == [
        f"{r['question']}\n\n{o}" for r, o in zip(mmlu, options)]

    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    example = loaded[0]
    assert loaded.num_rows == 413 and set(example["messages"][1]) == {"role", "content", "reasoning_content"}
    assert example["messages"][1]["reasoning_content"] == mmlu[0]["reasoning"].strip()

    from trl.data_utils import maybe_apply_chat_template

    from alignmix.pipeline.models import resolve_model
    from alignmix.training.modeling import load_tokenizer

    tokenizer = load_tokenizer(resolve_model("default"))
    tokenizer.chat_template = (shared_data / "reasoning/qwen3_chat_template.jinja").read_text()
    text = maybe_apply_chat_template({"messages": example["messages"]}, tokenizer)["text"]
    assert text.endswith(f"<|im_start|>assistant\n{join_reasoning(mmlu[0]['reasoning'], mmlu[0]['answer_text'])}"
                         "<|im_end|>\n")


@pytest.mark.parametrize("model", ["a", "b"])
def test_sky_t1_thought_markup_truncated_traces_rejected(model, shared_data, tmp_path):
    """`<|begin_of_thought|>` outputs: complete traces split, traces cut at the token limit rejected (with their
    reason, into rejected/), outputs without markers kept as answers without reasoning."""
    kept, reasoned, dropped = SKYT1_COUNTS[model]
    path = shared_data / f"reasoning/skyt1_minerva_model_{model}.jsonl"
    summary = ingest_sources([str(path)], tmp_path / model, columns=ColumnMap(**SKYT1))
    stats = summary.sources[0]
    assert (stats["rows_in"], stats["rows_kept"], stats["dropped"]) == (272, kept, dropped)
    frame = MixStore(tmp_path / model).read()
    reasoning = _last(frame, "reasoning_content")
    assert sum(r is not None for r in reasoning) == reasoned
    assert not any(markup_of(c) for c in _last(frame, "content"))
    rejected = MixStore(tmp_path / model).read_rejected()
    assert dict(Counter(rejected["drop_reason"].to_list())) == dropped
    assert all(d.startswith("code[0]: ") and "never closed" in d for d in rejected["drop_detail"])
    gt = {str(r["idx"]): r["gt"] for r in _jsonl(path)}
    assert [orjson.loads(m)["ground_truth"] for m in frame["meta"]] == [gt[s] for s in frame["source_id"]]


def test_inline_think_deepseek_fields_and_r1_zero_rebuilt_from_r1_rows_give_the_same_rows(mmlu, tmp_path):
    """The same real traces in four markups (inline <think>, a message's reasoning_content as DeepSeek's API
    returns it, `reasoning` as OpenRouter does, R1-Zero's <think></think><answer></answer>): the same rows."""
    def record(r, assistant):
        return {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", **assistant}],
                "subject": r["subject"]}

    forms = {
        "think": lambda r: {"content": join_reasoning(r["reasoning"], r["answer_text"])},
        "reasoning_content": lambda r: {"content": r["answer_text"], "reasoning_content": r["reasoning"]},
        "reasoning": lambda r: {"content": r["answer_text"], "reasoning": r["reasoning"]},
        "r1_zero": lambda r: {"content": f"<think> {r['reasoning']} </think> <answer> {r['answer_text']} </answer>"},
    }
    frames = {}
    for name, form in forms.items():
        records = [record(r, form(r)) for r in mmlu]
        frames[name] = read_rows(SourceSpec(name="r1", path=str(_write(tmp_path / f"{name}.jsonl", records))))
        assert frames[name].height == 413, name
    ids = frames["think"]["id"].to_list()
    assert all(f["id"].to_list() == ids for f in frames.values())
    assert _last(frames["r1_zero"], "reasoning_content") == [r["reasoning"].strip() for r in mmlu]
    assert _last(frames["r1_zero"], "content") == [r["answer_text"].strip() for r in mmlu]


def test_r1_zero_and_sharegpt_rebuilt_from_sky_t1_keep_its_truncations(shared_data, tmp_path):
    """Sky-T1's outputs rewritten in R1-Zero's markup, as ShareGPT conversations: the same rows kept (same ids as
    the column-mapped thought markup) and the same truncated traces rejected for the same reasons."""
    rows = _jsonl(shared_data / "reasoning/skyt1_minerva_model_b.jsonl")

    def r1_zero(text):
        for old, new in R1_ZERO.items():
            text = text.replace(old, new)
        return text

    records = [{"conversations": [{"from": "human", "value": r["question"]}, {"from": "gpt", "value": r1_zero(r["code"][0])}]}
               for r in rows]
    spec = SourceSpec(name="b", path=str(_write(tmp_path / "b.jsonl", records)))
    frame, rejected = read_rows(spec), read_rejected(spec)
    kept, reasoned, dropped = SKYT1_COUNTS["b"]
    assert frame.height == kept and sum(r is not None for r in _last(frame, "reasoning_content")) == reasoned
    assert dict(Counter(rejected["drop_reason"].to_list())) == dropped
    thought = read_rows(SourceSpec(name="b", path=str(shared_data / "reasoning/skyt1_minerva_model_b.jsonl"),
                                   columns=SKYT1))
    assert frame["id"].to_list() == thought["id"].to_list()


def test_sky_t1_correct_vs_wrong_pairs_as_preference_rows(shared_data, tmp_path):
    """The 46 questions one model got right and the other wrong, as prompt/chosen/rejected pairs: a pair with a
    truncated side is rejected with that side's reason, the others keep reasoning on both sides."""
    a, b = (_jsonl(shared_data / f"reasoning/skyt1_minerva_model_{m}.jsonl") for m in "ab")
    records = []
    for x, y in zip(a, b):
        if x["score"][0] != y["score"][0]:
            good, bad = (x, y) if x["score"][0] else (y, x)
            records.append({"prompt": x["question"], "chosen": good["code"][0], "rejected": bad["code"][0]})
    assert len(records) == 46
    spec = SourceSpec(name="pairs", path=str(_write(tmp_path / "pairs.jsonl", records)))
    frame, rejected = read_rows(spec), read_rejected(spec)
    assert frame.height + rejected.height == 46
    assert (frame.height, dict(Counter(rejected["drop_reason"].to_list()))) == PAIR_COUNTS
    both = frame["chosen"].list.last().struct.field("reasoning_content").is_not_null() & \
        frame["rejected"].list.last().struct.field("reasoning_content").is_not_null()
    assert both.sum() == PAIRS_WITH_REASONING_ON_BOTH_SIDES


def test_only_assistant_turns_are_split():
    rec = {"messages": [{"role": "user", "content": "What does <think> mean in R1's output?"},
                        {"role": "assistant", "content": "It opens the reasoning."}]}
    row = get_adapter("openai").convert(rec, source="s", source_id="0")[0]
    assert row["messages"][0]["content"] == "What does <think> mean in R1's output?"
    assert "reasoning_content" not in row["messages"][1]


# --- column mappings ---------------------------------------------------------------------------------------------


def test_column_mapping_errors_name_the_key_and_the_fix():
    assert parse_columns(["prompt=question", "response=code[0]"], '{"ground_truth": "gt"}') == ColumnMap(
        prompt="question", response="code[0]", ground_truth="gt")
    assert parse_columns() is None
    for pairs, text, message in [
        (["prompt=question", "answer=gen_ans"], None, ("columns.answer: Extra inputs are not permitted (fix: the keys "
                                                       "are prompt, query, options, system, response, reasoning, "
                                                       "ground_truth)")),
        (["prompt"], None, "--column 'prompt' is not key=column (fix: e.g. --column prompt=question)"),
        (["response=a"], None, "columns.prompt: Field required (fix: map the prompt column: prompt=<field>)"),
        (None, "{prompt: q, reasoning: r}", "`reasoning` names a column but `response` does not"),
        (None, "{prompt: 'code[x]'}", "'code[x]' is not a column"),
        (None, "[prompt]", "is not a mapping"),
    ]:
        with pytest.raises(ValueError) as err:
            parse_columns(pairs, text)
        assert message in str(err.value)
    with pytest.raises(RecipeError, match=r"sources.0.columns.answr = 'a': Extra inputs are not permitted"):
        load_recipe({"name": "x", "sources": [{"name": "a", "path": "x.jsonl", "columns": {"prompt": "q", "answr": "a"}}]})
    with pytest.raises(RecipeError, match=r"give `format` or `columns`, not both"):
        load_recipe({"name": "x", "sources": [{"name": "a", "path": "x.jsonl", "format": "alpaca",
                                               "columns": {"prompt": "q"}}]})


def test_column_mapping_rows_and_their_rejections(tmp_path):
    records = [
        {"question": "2+3?", "reason": "2+3=5", "gen_ans": "5", "answer": 5, "level": 1},
        {"question": "2+4?", "reason": None, "gen_ans": "<think>add</think>6", "answer": "6"},  # inline markup
        {"question": "2+5?", "reason": "add", "gen_ans": "<think>add</think>7"},  # reasoning twice
        {"question": "2+6?", "reason": "add", "gen_ans": 8},
        {"prompt": "2+7?", "reason": "add", "gen_ans": "9"},
    ]
    spec = SourceSpec(name="m", path=str(_write(tmp_path / "m.jsonl", records)),
                      columns={"prompt": "question", "response": "gen_ans", "reasoning": "reason",
                               "ground_truth": "answer"})
    frame, rejected = read_rows(spec), read_rejected(spec)
    assert frame["messages"].to_list() == [
        [{"role": "user", "content": "2+3?", "reasoning_content": None},
         {"role": "assistant", "content": "5", "reasoning_content": "2+3=5"}],
        [{"role": "user", "content": "2+4?", "reasoning_content": None},
         {"role": "assistant", "content": "6", "reasoning_content": "add"}]]
    assert [orjson.loads(m) for m in frame["meta"]] == [{"ground_truth": "5", "level": 1}, {"ground_truth": "6"}]
    assert list(zip(rejected["drop_reason"], rejected["drop_detail"])) == [
        ("mixed_markup", "gen_ans: inline reasoning markup in content beside a separate reasoning field"),
        ("bad_type", "gen_ans: expected a string, got int"),
        ("missing_field", "question: is missing (the column mapping names it)")]
    prompts = read_rows(SourceSpec(name="p", path=spec.path, columns={"prompt": "question"}))
    assert prompts.height == 4 and _last(prompts, "role") == ["user"] * 4


def test_cli_ingest_with_a_column_mapping(shared_data, tmp_path):
    out = tmp_path / "a"
    result = CliRunner().invoke(app, [
        "ingest", str(shared_data / "reasoning/skyt1_minerva_model_a.jsonl"), "--out", str(out),
        "--column", "prompt=question", "--columns", "{response: 'code[0]', ground_truth: gt}"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats/ingest-skyt1_minerva_model_a.json").read_text())
    kept, _, dropped = SKYT1_COUNTS["a"]
    assert (stats["rows_kept"], stats["dropped"]) == (kept, dropped)
    bad = CliRunner().invoke(app, ["ingest", str(out / "x.jsonl"), "--out", str(tmp_path / "b"), "--column", "q"])
    assert bad.exit_code == 2 and "is not key=column" in bad.output
