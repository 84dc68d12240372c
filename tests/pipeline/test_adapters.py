"""Format adapters on their real files in ../shared/data (exact counts and values), and one designed record
per rule. Formats without a real file here (H4 UltraFeedback, ShareGPT, OpenAI, the original HH-RLHF form) are
built from the real rows of another format, and must give the very same row ids."""

from __future__ import annotations

import json

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignmix.pipeline.adapters import ADAPTERS, UnknownFormat, detect_format, get_adapter, split_transcript
from alignmix.pipeline.ingest import read_rejected, read_rows
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.schema import RowError


def rows_of(path, fmt=None, name="src"):
    return read_rows(SourceSpec(name=name, path=str(path), format=fmt))


def test_pairs_on_ultrafeedback_eval_clean(shared_data):
    frame = rows_of(shared_data / "ultrafeedback/eval_clean.jsonl")
    assert frame.height == 200
    first, last = frame.row(0, named=True), frame.row(199, named=True)
    assert first["prompt"].startswith("Write a Java program that prompts the user to enter the coefficients a, b")
    assert first["chosen"][0] == {"role": "user", "content": first["prompt"], "reasoning_content": None}
    assert first["chosen"][1]["content"].startswith("Here's a Java program that prompts the user")
    assert (first["score_chosen"], first["score_rejected"]) == (9.0, 7.0)
    assert (last["score_chosen"], last["score_rejected"]) == (8.5, 8.5)
    assert orjson.loads(first["meta"]) == {"source_index": 36641}
    assert orjson.loads(last["meta"]) == {"source_index": 49247}
    assert frame["source_id"].to_list() == [str(i) for i in range(200)]
    assert (frame["score_chosen"] == frame["score_rejected"]).sum() == 25  # real ties: kept, a filter decides


def test_ultrafeedback_h4_from_the_same_rows_gives_the_same_ids(shared_data, tmp_path):
    src = [json.loads(line) for line in (shared_data / "ultrafeedback/eval_clean.jsonl").read_text("utf-8").split("\n") if line]
    h4 = []
    for i, r in enumerate(src):
        user = {"role": "user", "content": r["prompt"]}
        h4.append({"prompt": r["prompt"], "prompt_id": f"p{i}",
                   "chosen": [user, {"role": "assistant", "content": r["chosen"]}],
                   "rejected": [user, {"role": "assistant", "content": r["rejected"]}],
                   "messages": [user, {"role": "assistant", "content": r["chosen"]}],
                   "score_chosen": r["metadata"]["score_chosen"], "score_rejected": r["metadata"]["score_rejected"]})
    path = tmp_path / "train_prefs-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(h4), path)
    assert detect_format(h4[0]).name == "ultrafeedback"
    ours = rows_of(path)
    pairs = rows_of(shared_data / "ultrafeedback/eval_clean.jsonl")
    assert ours["id"].to_list() == pairs["id"].to_list()
    assert ours["score_chosen"].to_list() == pairs["score_chosen"].to_list()
    assert orjson.loads(ours["meta"][3]) == {"prompt_id": "p3"}  # `messages` repeats chosen: not kept in meta


def test_hh_rlhf_split_form(shared_data):
    path = shared_data / "hh_rlhf/test_prefs.jsonl"
    frame = rows_of(path)
    assert frame.height == 996
    row = frame.row(1, named=True)
    assert row["prompt"] == "Can anyone drive one of them?"
    assert [m["role"] for m in row["chosen"]] == ["user", "assistant", "user", "assistant", "user", "assistant"]
    assert row["chosen"][0]["content"] == "Should you rent a Uhaul to move?"
    assert row["chosen"][-1]["content"] == "Yes, you can rent a Uhaul and drive it yourself, you just need a valid license."
    assert row["chosen"][:-1] == row["rejected"][:-1]
    # 6 real rows have chosen == rejected: valid rows, left to the preference-consistency filter
    same = frame.filter(frame["chosen"] == frame["rejected"])["source_id"].to_list()
    assert same == ["224", "527", "540", "673", "815", "982"]
    rejected = read_rejected(SourceSpec(name="src", path=str(path)))
    assert rejected.select("line", "drop_reason", "drop_detail").rows() == [
        (719, "empty_turn", "chosen[3].content: the assistant turn is empty"),  # "Assistant: \n\nHuman:" in the prompt
        (740, "bad_role", "prompt: the transcript must end with a Human turn"),
        (762, "empty_turn", "rejected[1].content: the assistant turn is empty"),  # rejected == ""
        (797, "bad_role", "prompt: the transcript must end with a Human turn"),
    ]
    assert set(rejected["file"]) == {"test_prefs.jsonl"}


def test_hh_rlhf_original_form_gives_the_same_rows(shared_data, tmp_path):
    src = [json.loads(line) for line in (shared_data / "hh_rlhf/test_prefs.jsonl").read_text("utf-8").split("\n")[:50] if line]
    full = tmp_path / "hh_full.jsonl"
    full.write_text("".join(json.dumps({"chosen": f"\n\n{r['prompt']}\n\nAssistant: {r['chosen']}",
                                        "rejected": f"\n\n{r['prompt']}\n\nAssistant: {r['rejected']}"}) + "\n"
                            for r in src))
    split_form = tmp_path / "hh_split.jsonl"
    split_form.write_text("".join(json.dumps(r) + "\n" for r in src))
    a, b = rows_of(full), rows_of(split_form)
    assert a.height == b.height == 50
    assert a["id"].to_list() == b["id"].to_list() and a["prompt"].to_list() == b["prompt"].to_list()


def test_split_transcript():
    assert split_transcript("Human: a\n\nAssistant: b\n\nHuman: c", "prompt") == [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    with pytest.raises(RowError) as err:
        split_transcript("no markers here", "chosen")
    assert (err.value.reason, err.value.field) == ("unparseable_transcript", "chosen")


def test_llama_factory_dpo(shared_data):
    frame = rows_of(shared_data / "llama_factory/dpo_en_demo.json")
    assert frame.height == 295  # 300 records, 5 exact repeats
    row = frame.row(1, named=True)
    assert row["chosen"][0]["role"] == "system"
    assert row["chosen"][0]["content"].startswith("You are a teacher. Given a task, you explain in simple steps")
    assert row["prompt"].startswith("Q: In this task, you need to provide the parts-of-speech tag")
    assert row["chosen"][-1]["role"] == row["rejected"][-1]["role"] == "assistant"
    rejected = read_rejected(SourceSpec(name="src", path=str(shared_data / "llama_factory/dpo_en_demo.json")))
    # (record, the first row's source_id) for each repeat, found independently with json.dumps(sort_keys=True)
    assert rejected.select("record", "drop_reason", "drop_detail").rows() == [
        (158, "duplicate_content", "13"), (187, "duplicate_content", "111"), (231, "duplicate_content", "84"),
        (249, "duplicate_content", "28"), (276, "duplicate_content", "117")]


def test_sharegpt_and_openai_from_the_dpo_conversations(shared_data, tmp_path):
    dpo = json.loads((shared_data / "llama_factory/dpo_en_demo.json").read_text("utf-8"))[:40]
    share = [{"conversations": r["conversations"] + [r["chosen"]]} for r in dpo]
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    openai = [{"messages": [{"role": roles[t["from"]], "content": t["value"]} for t in c["conversations"]]}
              for c in share]
    (tmp_path / "share.json").write_text(json.dumps(share))
    (tmp_path / "openai.jsonl").write_text("".join(json.dumps(o) + "\n" for o in openai))
    a, b = rows_of(tmp_path / "share.json"), rows_of(tmp_path / "openai.jsonl")
    assert detect_format(share[0]).name == "sharegpt" and detect_format(openai[0]).name == "openai"
    assert a.height == b.height == 40
    assert a["id"].to_list() == b["id"].to_list()
    assert a.row(0, named=True)["messages"][0] == {"role": "user", "content": dpo[0]["conversations"][0]["value"],
                                                    "reasoning_content": None}


@pytest.mark.parametrize(
    ("file", "rows", "first_user", "with_input"),
    [
        ("llama_factory/alpaca_en_demo.json", 985, "Describe a process of making crepes.",
         (5, "Given the parameters of a triangle, find", "Side 1 = 4\nSide 2 = 6\nSide 3 = 8")),
        ("llama_factory/alpaca_zh_demo.json", 992, "识别并解释给定列表中的两个科学理论：细胞理论和日心说。",
         (1, "输入三支篮球队的名称并生成一个适当的口号。", "输入：俄克拉荷马城雷霆队，芝加哥公牛队，布鲁克林网队。")),
    ],
)
def test_alpaca(shared_data, file, rows, first_user, with_input):
    frame = rows_of(shared_data / file)
    assert frame.height == rows  # 999 - 14 and 1000 - 8 exact repeats
    assert frame.row(0, named=True)["messages"][0] == {"role": "user", "content": first_user, "reasoning_content": None}
    sid, instruction, given = with_input
    row = frame.filter(frame["source_id"] == str(sid)).row(0, named=True)
    assert row["messages"][0]["content"].startswith(instruction)
    assert row["messages"][0]["content"].endswith("\n\n" + given)


def test_alpaca_regen_keeps_its_similarity_scores_in_meta(shared_data):
    frame = rows_of(shared_data / "self_instruct/alpaca_regen_minpeter.json")
    assert frame.height == 73
    meta = orjson.loads(frame["meta"][0])
    assert meta["avg_similarity_score"] == 0.11074499634581818
    assert meta["most_similar_instructions"]["Answer the following question."] == 0.3333333333333333


def test_self_instruct_seed_tasks(shared_data):
    frame = rows_of(shared_data / "self_instruct/seed_tasks.jsonl")
    assert frame.height == 175
    meta = [orjson.loads(m) for m in frame["meta"]]
    assert sum(m["is_classification"] for m in meta) == 26
    assert meta[174]["id"] == "seed_task_174" and meta[174]["name"] == "fact_checking"
    assert frame.row(1, named=True)["messages"] == [
        {"role": "user", "content": "What is the relation between the given pairs?\n\nNight : Day :: Right : Left",
         "reasoning_content": None},
        {"role": "assistant", "content": "The relation between the given pairs is that they are opposites.",
         "reasoning_content": None}]


def test_self_instruct_task_with_several_instances_gives_a_row_each():
    rec = {"id": "t", "instruction": "Add.", "instances": [{"input": "1+1", "output": "2"}, {"input": "2+2", "output": "4"}]}
    rows = get_adapter("self_instruct").convert(rec, source="s", source_id="7")
    assert [r["source_id"] for r in rows] == ["7.0", "7.1"]
    assert rows[1]["messages"][1]["content"] == "4"


@pytest.mark.parametrize(
    ("fmt", "record", "reason", "field"),
    [
        ("pairs", {"prompt": "p", "chosen": "c"}, "missing_field", "rejected"),
        ("pairs", {"prompt": "p", "chosen": "c", "rejected": 3}, "bad_type", "rejected"),
        ("pairs", {"prompt": "p", "chosen": "c", "rejected": "r", "metadata": {"score_chosen": "nine"}},
         "bad_type", "score_chosen"),
        ("pairs", {"prompt": "p", "chosen": " ", "rejected": "r"}, "empty_turn", "chosen[1].content"),
        ("ultrafeedback", {"prompt": "p", "chosen": [{"role": "user", "content": "p"}],
                           "rejected": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "r"}]},
         "not_ending_with_assistant", "chosen"),
        ("ultrafeedback", {"prompt": "p",
                           "chosen": [{"role": "user", "content": "p"}, {"role": "assistant", "content": "c"}],
                           "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]},
         "prompt_mismatch", "rejected"),
        ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": "x"}]},
         "bad_role", "conversations[1].from"),
        ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}]}, "not_ending_with_assistant", "messages"),
        ("llama_factory", {"conversations": [{"from": "human", "value": "hi"}], "chosen": "text",
                           "rejected": {"from": "gpt", "value": "r"}}, "bad_type", "chosen"),
        ("openai", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "bad_type",
         "messages[0].content[0]"),
        ("openai", {"messages": [{"role": "tool", "content": "x"}]}, "bad_role", "messages[0].role"),
        ("alpaca", {"instruction": "do", "input": "", "output": None}, "missing_field", "output"),
        ("alpaca", {"instruction": "do", "output": "  "}, "empty_turn", "messages[1].content"),
        ("self_instruct", {"instruction": "do", "instances": []}, "missing_field", "instances"),
        ("hh_rlhf", {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: x\n\nAssistant: y"},
         "prompt_mismatch", "rejected"),
        ("alpaca", ["not", "an", "object"], "bad_type", None),
    ],
)
def test_each_rule_has_its_reason_and_field(fmt, record, reason, field):
    with pytest.raises(RowError) as err:
        get_adapter(fmt).convert(record, source="s", source_id="0")
    assert (err.value.reason, err.value.field) == (reason, field)


def test_openai_text_parts_are_joined():
    rec = {"messages": [{"role": "developer", "content": "Be brief."},
                        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                        {"role": "assistant", "content": "Hello."}]}
    row = get_adapter("openai").convert(rec, source="s", source_id="0")[0]
    assert [m["content"] for m in row["messages"]] == ["Be brief.", "Hi there", "Hello."]
    assert row["messages"][0]["role"] == "system"


def test_unknown_records_and_names_list_the_formats(shared_data):
    with pytest.raises(UnknownFormat, match=r"fields \['answer', 'question'\] match no format") as err:
        detect_format(json.loads((shared_data / "evals/gsm8k_test.jsonl").open(encoding="utf-8").readline()))
    assert all(name in str(err.value) for name in ADAPTERS)
    with pytest.raises(UnknownFormat, match="unknown format 'alpacca'"):
        get_adapter("alpacca")


def test_trl_conversational_preference_form():
    """trl-lib datasets keep the prompt turns apart and only the replies in chosen/rejected."""
    rec = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}],
           "chosen": [{"role": "assistant", "content": "Hello!"}],
           "rejected": [{"role": "assistant", "content": "Go away."}], "score_chosen": 8, "score_rejected": 2}
    adapter = detect_format(rec)
    row = adapter.convert(rec, source="s", source_id="0")[0]
    assert adapter.name == "ultrafeedback" and row["prompt"] == "Hi"
    assert [m["role"] for m in row["chosen"]] == ["system", "user", "assistant"]
    assert row["rejected"][-1]["content"] == "Go away." and row["meta"] == "{}"


def test_meta_keeps_values_json_cannot_hold_as_text():
    from decimal import Decimal

    rec = {"instruction": "a", "output": "b", "blob": b"\x00\x01", "price": Decimal("1.5")}
    row = get_adapter("alpaca").convert(rec, source="s", source_id="0")[0]
    assert orjson.loads(row["meta"]) == {"blob": "b'\\x00\\x01'", "price": "1.5"}


# --- prompt rows: records without an answer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "fmt", "turns"),
    [
        ({"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}]}, "sharegpt",
         [("system", "Be brief."), ("user", "Hi")]),
        ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                       {"role": "user", "content": "And you?"}]}, "openai",
         [("user", "Hi"), ("assistant", "Hello"), ("user", "And you?")]),  # a multi-turn prompt
        ({"instruction": "Sum these.", "input": "2, 3", "output": ""}, "alpaca", [("user", "Sum these.\n\n2, 3")]),
        ({"instruction": "Sum these.", "input": "2, 3"}, "prompts", [("user", "Sum these.\n\n2, 3")]),
        ({"prompt": "Write a haiku.", "system": "Be poetic."}, "prompts", [("system", "Be poetic."), ("user", "Write a haiku.")]),
        ({"prompt": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}, "prompts",
         [("system", "Be brief."), ("user", "Hi")]),  # TRL's conversational prompt-only form
        ({"question": "Why is the sea salty?", "id": 3}, "prompts", [("user", "Why is the sea salty?")]),
        ({"turns": ["Plan a trip.", "Now make it cheaper."]}, "prompts", [("user", "Plan a trip.")]),
    ],
)
def test_records_without_an_answer_become_prompt_rows(record, fmt, turns):
    adapter = detect_format(record)
    assert adapter.name == fmt and "prompt" in adapter.kinds
    row = adapter.convert(record, source="s", source_id="0", kind="prompt")[0]
    assert [(m["role"], m["content"]) for m in row["messages"]] == turns


@pytest.mark.parametrize(
    ("fmt", "record", "reason", "field"),
    [
        ("sharegpt", {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
         "not_ending_with_user", "messages"),
        ("sharegpt", {"conversations": [{"from": "system", "value": "Be kind."}]}, "not_ending_with_user", "messages"),
        ("openai", {"messages": [{"role": "user", "content": " "}]}, "empty_turn", "messages[0].content"),
        ("alpaca", {"instruction": "do", "output": "done"}, "not_ending_with_user", "messages"),
        ("prompts", {"turns": []}, "empty_turn", "turns"),
        ("prompts", {"turns": ["a", 3]}, "bad_type", "turns[1]"),
        ("prompts", {"prompt": "  "}, "empty_turn", "messages[0].content"),
        ("prompts", {"prompt": None, "id": 1}, "missing_field", "prompt"),
    ],
)
def test_each_prompt_rule_has_its_reason_and_field(fmt, record, reason, field):
    with pytest.raises(RowError) as err:
        get_adapter(fmt).convert(record, source="s", source_id="0", kind="prompt")
    assert (err.value.reason, err.value.field) == (reason, field)


def test_prompt_list_detection_leaves_answered_records_alone(shared_data):
    eval_lines = {
        "evals/arena_hard_v0.1_question.jsonl": "prompts", "evals/ifeval_input_data.jsonl": "prompts",
        "evals/mt_bench_question.jsonl": "prompts", "evals/gsm8k_test.jsonl": None,  # question + answer: not a prompt list
    }
    for file, fmt in eval_lines.items():
        record = json.loads((shared_data / file).open(encoding="utf-8").readline())
        if fmt is None:
            with pytest.raises(UnknownFormat):
                detect_format(record)
        else:
            assert detect_format(record).name == fmt
    alpaca_eval = json.loads((shared_data / "evals/alpaca_eval_text_davinci_003_outputs.json").read_text("utf-8"))[0]
    assert detect_format(alpaca_eval).name == "prompts"  # instruction + output + generator: the output is a model's
    assert detect_format({"instruction": "a", "output": "b"}).name == "alpaca"
    with pytest.raises(UnknownFormat):  # TRL's prompt-completion form carries an answer: not a prompt list
        detect_format({"prompt": "a", "completion": "b"})
    with pytest.raises(ValueError, match="format 'pairs' gives preference rows, not prompt"):
        get_adapter("pairs").convert({"prompt": "p", "chosen": "c", "rejected": "r"}, source="s", source_id="0",
                                     kind="prompt")


# --- reasoning: every adapter splits an assistant turn's reasoning, and refuses a cut trace ---------------------

_U = {"role": "user", "content": "2+3?"}
REASONING_RECORDS = {  # format -> a record whose every answer is `A` (filled in below)
    "ultrafeedback": lambda a: {"prompt": "2+3?", "chosen": [_U, {"role": "assistant", "content": a}],
                                "rejected": [_U, {"role": "assistant", "content": "6"}]},
    "llama_factory": lambda a: {"conversations": [{"from": "human", "value": "2+3?"}],
                                "chosen": {"from": "gpt", "value": a}, "rejected": {"from": "gpt", "value": "6"}},
    "hh_rlhf": lambda a: {"chosen": f"\n\nHuman: 2+3?\n\nAssistant: {a}", "rejected": "\n\nHuman: 2+3?\n\nAssistant: 6"},
    "pairs": lambda a: {"prompt": "2+3?", "chosen": a, "rejected": "6"},
    "openai": lambda a: {"messages": [_U, {"role": "assistant", "content": a}]},
    "sharegpt": lambda a: {"conversations": [{"from": "human", "value": "2+3?"}, {"from": "gpt", "value": a}]},
    "self_instruct": lambda a: {"instruction": "2+3?", "instances": [{"input": "", "output": a}]},
    "alpaca": lambda a: {"instruction": "2+3?", "input": "", "output": a},
}


@pytest.mark.parametrize("fmt", sorted(REASONING_RECORDS))
def test_every_adapter_splits_reasoning_and_refuses_a_cut_trace(fmt):
    assert set(REASONING_RECORDS) == {name for name, a in ADAPTERS.items() if a.kind != "prompt"}
    make = REASONING_RECORDS[fmt]
    row = get_adapter(fmt).convert(make("<think>\n2 + 3 = 5\n</think>\n\n5"), source="s", source_id="0")[0]
    answer = (row["chosen"] if "chosen" in row else row["messages"])[-1]
    assert answer == {"role": "assistant", "content": "5", "reasoning_content": "2 + 3 = 5"}
    with pytest.raises(RowError) as err:
        get_adapter(fmt).convert(make("<think>\n2 + 3 is"), source="s", source_id="0")
    assert err.value.reason == "unclosed_reasoning"
