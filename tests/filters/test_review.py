"""The human spot check, with scripted answers in place of a person at the keyboard."""

import io

import orjson
from rich.console import Console

from alignmix.filters.review import agreement, review
from alignmix.pipeline.store import write_shards
from tests.filters.rows import pref, prefs


def _mix(tmp_path, n=10):
    frame = prefs(*[pref(i, f"Good answer {i}.", f"Bad answer {i}.", sc=8.0, sr=2.0) for i in range(n)])
    write_shards(frame, tmp_path / "data")
    return tmp_path


class Oracle:
    """Answers like a reviewer who agrees with the label except for the rows it is told to contradict."""

    def __init__(self, console_file: io.StringIO, disagree: set[str], unsure: set[str] = frozenset()):
        self.out, self.disagree, self.unsure, self.asked = console_file, disagree, unsure, 0

    def __call__(self, prompt: str) -> str:
        self.asked += 1
        shown = self.out.getvalue().rsplit("pair ", 1)[-1]
        a_text = shown.split("─ A ─", 1)[1].split("─ B ─", 1)[0]
        n = int(a_text.split("answer ", 1)[1].split(".", 1)[0])
        a_is_chosen = "Good answer" in a_text
        if str(n) in self.unsure:
            return "u"
        wants_chosen = str(n) not in self.disagree
        return "a" if a_is_chosen == wants_chosen else "b"


def test_agreeing_reviewer_gets_full_agreement_and_verdicts_are_recorded(tmp_path):
    mix = _mix(tmp_path)
    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=False)
    report = review(mix, sample=6, seed=1, ask=Oracle(buf, disagree=set(), unsure={"3"}), console=console)
    lines = [orjson.loads(x) for x in (mix / "review" / "verdicts.jsonl").read_bytes().splitlines()]
    assert len(lines) == 6 and report.reviewed == 6
    assert {x["verdict"] for x in lines} <= {"chosen_better", "unsure"}
    assert report.agreement == 1.0 and report.trustworthy is True
    assert {x["shown_first"] for x in lines} == {"chosen", "rejected"}  # blind: the order varies
    summary = orjson.loads((mix / "review" / "summary.json").read_bytes())
    assert summary["agreement"] == 1.0 and summary["min_agreement"] == 0.8


def test_low_agreement_warns(tmp_path):
    mix = _mix(tmp_path)
    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=False)
    report = review(mix, sample=10, seed=2, ask=Oracle(buf, disagree={"0", "1", "2"}), console=console)
    assert report.counts == {"chosen_better": 7, "rejected_better": 3, "tie": 0, "unsure": 0}
    assert report.agreement == 0.7 and report.trustworthy is False
    assert "not trustworthy" in report.render()


def test_quit_stops_early_and_agreement_formula():
    assert agreement({"chosen_better": 8, "rejected_better": 1, "tie": 1, "unsure": 5}) == 0.8
    assert agreement({"unsure": 2}) is None


def test_quit(tmp_path):
    mix = _mix(tmp_path)
    answers = iter(["x", "t", "q"])  # an unknown key is asked again
    report = review(mix, sample=5, ask=lambda _: next(answers), console=Console(file=io.StringIO()))
    assert report.counts["tie"] == 1 and report.reviewed == 1
