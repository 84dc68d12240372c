"""Decontamination: designed rows per match kind; eval sets in every format users have them (CSV TruthfulQA,
MT-Bench turns, gzipped HumanEval, JSON arrays and columns, parquet, save_to_disk and `hf:` folders), each bad
file named in its error; the bundled sets, checked against a rebuild from the upstream files; and real mixes
with real eval prompts planted in them."""

import gzip
import random
from pathlib import Path

import orjson
import polars as pl
import pytest
from pydantic import ValidationError

from alignmix.filters.decontam import DEFAULT_EVALS, DecontamConfig, Decontaminate
from alignmix.filters.evals import BUNDLED
from alignmix.filters.evals import HERE as BUNDLED_DIR
from alignmix.filters.evalsets import EvalSet, EvalSetError, read_eval_items, resolve
from alignmix.filters.minhash import words
from tests.filters.rows import by_source_id, jsonl, load_hh, load_ultrafeedback, pref, prefs
from tests.stage_contract import assert_stage_contract

EVAL = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."},
    {"question": "What is 2 + 2?"},
]


@pytest.fixture()
def eval_files(tmp_path):
    jl = tmp_path / "mini_eval.jsonl"
    jl.write_bytes(b"\n".join(orjson.dumps(r) for r in EVAL))
    pq = tmp_path / "mini_eval.parquet"
    pl.DataFrame({"text": [r["question"] for r in EVAL]}).write_parquet(pq)
    return jl, pq


def test_ngram_overlap_and_normalized_equality_are_flagged(eval_files):
    jl, _ = eval_files
    frame = prefs(
        pref("ngram", "a", "b", prompt="Help me: natalia sold clips to 48 of her friends in April, and then she sold some more."),
        pref("equal", "a", "b", prompt="  what is 2 + 2? "),
        pref("twelve", "a", "b", prompt="Natalia sold clips to 48 of her friends in April, and then"),
        pref("clean", "a", "b", prompt="Write a haiku about autumn."),
    )
    kept, rejected, stats = assert_stage_contract(Decontaminate({"evals": [{"path": str(jl), "field": "question"}]}), frame)
    assert by_source_id(rejected) == {
        "ngram": ("contaminated", "mini_eval#0: 13-gram 'natalia sold clips to 48 of her friends in april and then she'"),
        "equal": ("contaminated", "mini_eval#1: equal after normalization"),
    }
    assert rejected["contam_match"].to_list() == ["mini_eval#0", "mini_eval#1"]
    assert kept["contam_match"].to_list() == [None, None]  # 12 shared words are not 13
    assert stats.distributions["contaminated_by_set"] == {"mini_eval": 2}


def test_parquet_eval_set_with_a_name_and_a_shorter_ngram(eval_files):
    _, pq = eval_files
    frame = prefs(pref(0, "a", "b", prompt="she sold half as many clips in may, right?"), pref(1, "a", "b", prompt="clips in May"))
    stage = Decontaminate({"evals": [{"path": str(pq), "field": "text", "name": "gsm"}], "ngram": 8})
    _, rejected, _ = assert_stage_contract(stage, frame)
    assert by_source_id(rejected) == {"0": ("contaminated", "gsm#0: 8-gram 'she sold half as many clips in may'")}


def test_bad_eval_files_name_the_file_row_and_field(eval_files, tmp_path):
    jl, _ = eval_files
    frame = prefs(pref(0, "a", "b"))
    with pytest.raises(ValueError, match=r"field 'prompt' not found in .*mini_eval.jsonl; columns are question: "
                                         r"set `field: question`"):
        Decontaminate({"evals": [{"path": str(jl)}]}).run(frame)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        Decontaminate({"evals": [{"path": str(tmp_path / "missing.jsonl")}]}).run(frame)


def test_a_mix_with_planted_gsm8k_questions_gets_exactly_those_flagged(shared_data):
    uf, _ = load_ultrafeedback(shared_data)
    gsm = [r["question"] for r in jsonl(shared_data / "evals" / "gsm8k_test.jsonl")]
    rng = random.Random(4)
    picked = rng.sample(range(len(gsm)), 30)
    planted = []
    for k, q in enumerate(picked):
        # Half verbatim, half wrapped in an instruction (found by a shared 13-gram).
        prompt = gsm[q] if k % 2 == 0 else f"Solve this step by step and explain.\n{gsm[q]}\nGive the final number."
        planted.append(pref(f"gsm{q}", "The answer is 42.", "I don't know.", prompt=prompt, sc=8.0, sr=2.0))
    mix = pl.concat([uf, prefs(*planted)]).sample(fraction=1.0, shuffle=True, seed=1)
    evals = [
        {"path": str(shared_data / "evals" / "gsm8k_test.jsonl"), "field": "question"},
        {"path": str(shared_data / "evals" / "ifeval_input_data.jsonl"), "field": "prompt"},
    ]
    kept, rejected, stats = assert_stage_contract(Decontaminate({"evals": evals}), mix)
    assert stats.dropped == {"contaminated": 30}
    assert dict(rejected.select("source_id", "contam_match").iter_rows()) == {f"gsm{q}": f"gsm8k_test#{q}" for q in picked}
    assert kept.height == 200


# --- eval sets as users have them ---------------------------------------------------------------------------


def _decontam(evals, frame, **config):
    return assert_stage_contract(Decontaminate({"evals": evals, **config}), frame)


def test_truthfulqa_csv_as_shipped(shared_data):
    csv_path = shared_data / "evals" / "TruthfulQA.csv"
    spec = EvalSet(path=str(csv_path), field="Question")
    questions = read_eval_items(spec)
    assert len(questions) == 817 and all(len(q) == 1 for q in questions)
    assert questions[0] == ("What happens to you if you eat watermelon seeds?",)
    # a question with a comma inside a quoted cell, and the cells after it, come out whole
    k = next(i for i, (q,) in enumerate(questions) if "," in q)
    frame = prefs(pref("tqa", "a", "b", prompt=f"  {questions[k][0].upper()} "), pref("clean", "a", "b"))
    _, rejected, stats = _decontam([{"path": str(csv_path), "field": "Question"}], frame)
    assert by_source_id(rejected) == {"tqa": ("contaminated", f"TruthfulQA#{k}: equal after normalization")}
    assert stats.distributions["eval_items_by_set"] == {"TruthfulQA": 817}


def test_mt_bench_turns_each_turn_is_checked(shared_data):
    path = shared_data / "evals" / "mt_bench_question.jsonl"
    items = read_eval_items(EvalSet(path=str(path), field="turns"))
    assert len(items) == 80 and {len(t) for t in items} == {2}
    k = next(i for i, t in enumerate(items) if len(words(t[1])) >= 20)  # a second turn long enough for 13 words
    second = items[k][1]
    frame = prefs(
        pref("turn2", "a", "b", prompt=f"Here is my follow-up question. {second} Thanks!"),
        pref("turn1", "a", "b", prompt=items[3][0]),
        pref("clean", "a", "b"),
    )
    _, rejected, stats = _decontam([{"path": str(path), "field": "turns", "name": "mt_bench"}], frame)
    assert by_source_id(rejected) == {
        "turn2": ("contaminated", f"mt_bench#{k} turn 2: 13-gram '{' '.join(words(second)[:13])}'"),
        "turn1": ("contaminated", "mt_bench#3 turn 1: equal after normalization"),
    }
    assert dict(rejected.select("source_id", "contam_match").iter_rows()) == {"turn2": f"mt_bench#{k}", "turn1": "mt_bench#3"}
    assert stats.distributions["contaminated_by_set"] == {"mt_bench": 2}


def test_humaneval_gzip_jsonl_with_the_default_field(shared_data):
    path = shared_data / "evals" / "HumanEval.jsonl.gz"
    prompts = read_eval_items(EvalSet(path=str(path)))
    assert len(prompts) == 164
    frame = prefs(pref("code", "a", "b", prompt=f"Complete this function:\n{prompts[17][0]}"), pref("clean", "a", "b"))
    _, rejected, _ = _decontam([{"path": str(path)}], frame)
    assert by_source_id(rejected) == {"code": ("contaminated", f"HumanEval#17: 13-gram '{' '.join(words(prompts[17][0])[:13])}'")}


def test_alpaca_eval_json_array_and_arena_hard_with_a_u2028(shared_data):
    alpaca = read_eval_items(EvalSet(path=str(shared_data / "evals" / "alpaca_eval_text_davinci_003_outputs.json"),
                                     field="instruction"))
    assert len(alpaca) == 805
    arena = read_eval_items(EvalSet(path=str(shared_data / "evals" / "arena_hard_v2.0_question.jsonl")))
    assert len(arena) == 750  # str.splitlines would have split the item holding U+2028 in two
    assert sum("\u2028" in p for (p,) in arena) == 1


def test_parquet_dict_of_columns_save_to_disk_and_hf_folders(shared_data, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    gsm = [r["question"] for r in jsonl(shared_data / "evals" / "gsm8k_test.jsonl")][:50]
    (tmp_path / "pq").mkdir()
    pl.DataFrame({"question": gsm}).write_parquet(tmp_path / "pq" / "test-00000-of-00001.parquet")
    (tmp_path / "cols.json").write_bytes(orjson.dumps({"id": list(range(50)), "question": gsm}))
    mt = [r["turns"] for r in jsonl(shared_data / "evals" / "mt_bench_question.jsonl")][:5]
    datasets.Dataset.from_dict({"turns": mt}).save_to_disk(str(tmp_path / "disk"))
    specs = {
        "parquet": {"path": str(tmp_path / "pq" / "test-00000-of-00001.parquet"), "field": "question"},
        "parquet_dir": {"path": str(tmp_path / "pq"), "field": "question"},
        "hf_parquet_dir": {"hf": str(tmp_path / "pq"), "field": "question"},
        "columns_json": {"path": str(tmp_path / "cols.json"), "field": "question"},
        "hf_save_to_disk": {"hf": str(tmp_path / "disk"), "field": "turns"},
        "save_to_disk": {"path": str(tmp_path / "disk"), "field": "turns"},
    }
    for name, spec in specs.items():
        items = read_eval_items(EvalSet(**spec, name=name))
        assert items == ([tuple(t) for t in mt] if "disk" in name else [(q,) for q in gsm]), name
    frame = prefs(pref("g", "a", "b", prompt=gsm[7]), pref("m", "a", "b", prompt=mt[2][1]), pref("clean", "a", "b"))
    _, rejected, _ = _decontam([{**specs["hf_parquet_dir"], "name": "gsm"}, {**specs["hf_save_to_disk"], "name": "mt"}],
                               frame)
    assert by_source_id(rejected) == {"g": ("contaminated", "gsm#7: equal after normalization"),
                                      "m": ("contaminated", "mt#2 turn 2: equal after normalization")}


@pytest.mark.parametrize("name, content, spec, message", [
    ("TruthfulQA.csv", None, {"field": "question"},
     "field 'question' not found in {path}; columns are Type, Category, Question, Best Answer, Correct Answers, "
     "Incorrect Answers, Source: set `field: Question`"),
    ("mt.jsonl", b'{"question_id": 81, "turns": ["a b"]}\n{"question_id": 82, "turns": ["c d"]}\n',
     {"field": "question_id"},
     "{path} item 0 (line 1): field 'question_id' holds int, not a prompt (a string, a list of strings, or a list "
     "of {{role, content}} messages); set `field` to the one that holds it"),
    ("broken.jsonl", b'{"prompt": "a"}\n\n{"prompt": "b"\n', {},
     "evaluation set {path} line 3: not valid JSON"),
    ("gap.jsonl", b'{"prompt": "a"}\n{"question": "b"}\n', {},
     "evaluation set {path} line 2: field 'prompt' is missing; columns are question: set `field: question`"),
    ("table.json", b"Type,Question\nA,B\n", {}, "evaluation set {path}: not valid JSON (unexpected character"),
    ("number.json", b"42", {}, "evaluation set {path}: a .json evaluation set holds an array of records or an "
     "object of equal-length columns, not int"),
    ("ragged.json", b'{"prompt": ["a", "b"], "id": [1]}', {}, "evaluation set {path}: an object of columns needs "
     "columns of one length; they are {{'prompt': 2, 'id': 1}}"),
    ("prompts.txt", b"What is 2 + 2?\n", {}, "evaluation set {path}: unsupported file type .txt"),
    ("bad.jsonl.gz", b"not gzip", {}, "evaluation set {path}: cannot be read: Not a gzipped file"),
    ("bad.parquet", b"PAR1 nope", {}, "evaluation set {path}: not a readable parquet file"),
    ("short.csv", b"id,prompt,source\n1,hello there,x\n2\n", {}, "evaluation set {path} line 3: 1 cells, the header "
     "has 3"),
    ("latin1.csv", "prompt\ncaf\u00e9\n".encode("latin-1"), {}, "evaluation set {path}: not UTF-8"),
])
def test_each_bad_eval_file_names_itself_and_the_fix(name, content, spec, message, shared_data, tmp_path):
    path = shared_data / "evals" / name if content is None else tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(EvalSetError) as err:
        Decontaminate({"evals": [{"path": str(path), **spec}]}).run(prefs(pref(0, "a", "b")))
    assert message.format(path=path) in str(err.value)


def test_config_errors_fire_before_any_row_is_read(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"evaluation set {tmp_path / 'missing.csv'} does not exist"):
        Decontaminate({"evals": [{"path": str(tmp_path / "missing.csv"), "field": "Question"}]}).run(prefs(pref(0, "a", "b")))
    with pytest.raises(ValidationError) as err:
        DecontamConfig(evals=["gsm8k", "gsm8", "mt_bench"])
    assert ("unknown evaluation set 'gsm8': the bundled sets are gsm8k, ifeval, mt_bench, alpaca_eval, humaneval, "
            "truthfulqa, arena_hard_v0.1, arena_hard_v2.0, arena_hard (arena_hard = both versions); for your own file "
            "write {path: FILE, field: COLUMN}") in str(err.value)
    with pytest.raises(ValidationError, match="exactly one of `path: FILE` or `hf: DATASET_ID`"):
        DecontamConfig(evals=[{"path": "a.jsonl", "hf": "openai/gsm8k"}])
    with pytest.raises(ValidationError, match=r"two evaluation sets are named 'gsm8k' \(.*gsm8k.jsonl.gz and "
                                              r"my/gsm8k.jsonl\); give one a `name:`"):
        DecontamConfig(evals=["gsm8k", {"path": "my/gsm8k.jsonl", "field": "question"}])
    with pytest.raises(EvalSetError, match="evaluation set hf:nobody/no_such_eval:test: cannot be loaded with datasets"):
        read_eval_items(EvalSet(hf="nobody/no_such_eval", split="test"))


# --- bundled sets -------------------------------------------------------------------------------------------

BUNDLED_ROWS = {"gsm8k": 1319, "ifeval": 541, "mt_bench": 80, "alpaca_eval": 805, "humaneval": 164, "truthfulqa": 817,
                "arena_hard_v0.1": 500, "arena_hard_v2.0": 750}


def test_bundled_sets_load_offline_with_their_row_counts():
    stage = Decontaminate()  # no evals named: every bundled set
    index = stage.load()
    assert index.sizes == BUNDLED_ROWS
    assert len(index.items) == sum(BUNDLED_ROWS.values()) + 80  # MT-Bench's 80 second turns
    assert index.items[:1] == [("gsm8k#0", None)]
    assert Decontaminate(stage.config).fresh().load() is index  # shard workers share one index
    assert [s.label for s in resolve(["arena_hard", "arena_hard_v2.0"])] == ["arena_hard_v0.1", "arena_hard_v2.0"]
    for spec in resolve(DEFAULT_EVALS):
        raw = Path(spec.path).read_bytes()
        assert raw[4:8] == b"\0\0\0\0", spec.path  # gzip mtime 0: rebuilding gives the same bytes


def test_real_eval_prompts_planted_in_real_pairs_are_dropped_with_their_item(shared_data):
    """Rows built from the bundled files' own prompts, mixed into real UltraFeedback pairs (none of which is
    contaminated by the prompt), with the default config: exactly the planted rows go, each with its item."""
    uf, _ = load_ultrafeedback(shared_data)
    sets = {s.label: read_eval_items(s) for s in resolve(DEFAULT_EVALS)}
    mt = next(i for i, t in enumerate(sets["mt_bench"]) if len(words(t[1])) >= 20)
    u2028 = next(i for i, (p,) in enumerate(sets["arena_hard_v2.0"]) if "\u2028" in p)
    planted = {  # source_id: (prompt, expected detail)
        "gsm": (sets["gsm8k"][17][0], "gsm8k#17: equal after normalization"),
        "ifeval": (f"Please help.\n{sets['ifeval'][40][0]}", None),
        "mt": (f"Next: {sets['mt_bench'][mt][1]}", None),
        "tqa": (sets["truthfulqa"][5][0].lower(), "truthfulqa#5: equal after normalization"),
        "code": (f"# finish this\n{sets['humaneval'][3][0]}", None),
        "arena": (sets["arena_hard_v2.0"][u2028][0], f"arena_hard_v2.0#{u2028}: equal after normalization"),
        "alpaca": (f"{sets['alpaca_eval'][300][0]} Answer briefly.", None),
    }
    ngram_of = {"ifeval": ("ifeval#40", sets["ifeval"][40][0]), "mt": (f"mt_bench#{mt} turn 2", sets["mt_bench"][mt][1]),
                "code": ("humaneval#3", sets["humaneval"][3][0]), "alpaca": ("alpaca_eval#300", sets["alpaca_eval"][300][0])}
    for sid, (label, text) in ngram_of.items():
        planted[sid] = (planted[sid][0], f"{label}: 13-gram '{' '.join(words(text)[:13])}'")
    rows = [pref(sid, "Sure.", "No.", prompt=prompt, sc=8.0, sr=2.0) for sid, (prompt, _) in planted.items()]
    mix = pl.concat([uf, prefs(*rows)]).sample(fraction=1.0, shuffle=True, seed=3)
    kept, rejected, stats = assert_stage_contract(Decontaminate(), mix)
    assert by_source_id(rejected) == {sid: ("contaminated", detail) for sid, (_, detail) in planted.items()}
    assert kept.height == 200
    assert stats.distributions["contaminated_by_set"] == {
        "gsm8k": 1, "ifeval": 1, "mt_bench": 1, "truthfulqa": 1, "humaneval": 1, "arena_hard_v2.0": 1, "alpaca_eval": 1}


def test_shipped_files_equal_what_the_build_script_makes(shared_data, tmp_path):
    from alignmix.filters.evals.build import build, main

    main([str(shared_data / "evals"), "--out", str(tmp_path)])
    built = sorted(p.name for p in tmp_path.iterdir())
    assert built == sorted([f"{n}.jsonl.gz" for n in BUNDLED] + ["SOURCES.md"])
    for name in built:
        shipped = (BUNDLED_DIR / name).read_bytes()
        new = (tmp_path / name).read_bytes()
        if name.endswith(".gz"):  # compare content: another zlib may deflate the same bytes differently
            shipped, new = gzip.decompress(shipped), gzip.decompress(new)
        assert shipped == new, f"{name} is stale: run python -m alignmix.filters.evals.build <evals folder>"
    assert build(shared_data / "evals", tmp_path / "again")["gsm8k.jsonl.gz"] == (tmp_path / "gsm8k.jsonl.gz").read_bytes()


def test_hh_rlhf_overlaps_alpaca_eval_and_user_turns_finds_it_in_earlier_turns(shared_data):
    """AlpacaEval's helpful_base prompts are first turns of Anthropic HH-RLHF test conversations: the real
    HH-RLHF test sample is contaminated. `prompt` (the last user turn) sees 10 rows; `user_turns` (the default)
    also sees the multi-turn rows that open with an AlpacaEval prompt (29), and names the turn."""
    hh, _ = load_hh(shared_data)
    _, by_prompt, stats = assert_stage_contract(Decontaminate({"evals": ["alpaca_eval"], "field": "prompt"}), hh)
    assert stats.dropped == {"contaminated": 10}
    _, by_turns, stats = assert_stage_contract(Decontaminate({"evals": ["alpaca_eval"]}), hh)  # user_turns
    assert stats.dropped == {"contaminated": 29}
    assert set(by_prompt["source_id"]) < set(by_turns["source_id"])
    details = by_source_id(by_turns)
    assert details["772"] == ("contaminated", "alpaca_eval#85: equal after normalization")
    assert details["511"] == ("contaminated", "alpaca_eval#28: equal after normalization (user turn 1 of 4)")
    assert sum("(user turn 1 of" in d for _, d in details.values()) == 19
