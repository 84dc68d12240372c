"""The prompts of common public evaluation sets, shipped with alignmix so that decontamination works offline.

Each set is one gzip JSON Lines file here, `<name>.jsonl.gz`, one item per line in the set's own order (so
`gsm8k#17` is item 17 of the upstream file, counting from 0): `{"prompt": "..."}`, or `{"turns": [...]}` for
a multi-turn set. SOURCES.md lists each set's origin, license, rows and the field taken; `build.py`
regenerates both from the upstream files:

    python -m alignmix.filters.evals.build /path/to/evals      # the folder holding the upstream files

A recipe names them bare, and a group name stands for its members:

    - stage: decontam
      evals: [gsm8k, ifeval, mt_bench, alpaca_eval, humaneval, truthfulqa, arena_hard]

    >>> [s.name for s in bundled("arena_hard")]
    ['arena_hard_v0.1', 'arena_hard_v2.0']
    >>> bundled("mt_bench")[0].field, bundled("mt_bench")[0].rows
    ('turns', 80)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class BundledSet:
    """One shipped set: where its prompts came from and which field of the upstream file holds them."""

    name: str
    source_file: str  # the upstream file's name, as build.py finds it in its source folder
    source_field: str  # the upstream field taken (a string, or a list of turns for `turns`)
    rows: int
    origin: str  # repository @ commit, path
    license: str
    note: str = ""

    @property
    def field(self) -> str:
        """The field of the shipped file: `turns` for multi-turn sets, else `prompt`."""
        return "turns" if self.source_field == "turns" else "prompt"

    @property
    def path(self) -> Path:
        return HERE / f"{self.name}.jsonl.gz"


BUNDLED: dict[str, BundledSet] = {s.name: s for s in (
    BundledSet("gsm8k", "gsm8k_test.jsonl", "question", 1319,
               "openai/grade-school-math @ 3101c7d, grade_school_math/data/test.jsonl", "MIT",
               "the test split"),
    BundledSet("ifeval", "ifeval_input_data.jsonl", "prompt", 541,
               "Podtech-AI/IFEval @ 5bdf377, a copy of google-research/google-research "
               "instruction_following_eval/data/input_data.jsonl", "Apache-2.0"),
    BundledSet("mt_bench", "mt_bench_question.jsonl", "turns", 80,
               "lm-sys/FastChat @ 0e6d3e4, fastchat/llm_judge/data/mt_bench/question.jsonl", "Apache-2.0",
               "both turns of each question; each turn is checked on its own"),
    BundledSet("alpaca_eval", "alpaca_eval_text_davinci_003_outputs.json", "instruction", 805,
               "tatsu-lab/alpaca_eval @ cd543a1, results/text_davinci_003/model_outputs.json",
               "Apache-2.0 (the repository's license; the Hub copy tatsu-lab/alpaca_eval is marked CC BY-NC 4.0)",
               "the instructions only (inputs are already appended to them), not the outputs"),
    BundledSet("humaneval", "HumanEval.jsonl.gz", "prompt", 164,
               "openai/human-eval @ 6d43fb9, data/HumanEval.jsonl.gz", "MIT",
               "the function signatures with docstrings, not the solutions or tests"),
    BundledSet("truthfulqa", "TruthfulQA.csv", "Question", 817,
               "benedictflorance/truthfulqa_experiments @ 6fdfd38, datasets/TruthfulQA.csv "
               "(upstream sylinrl/TruthfulQA)", "Apache-2.0",
               "the questions only, not the answers"),
    BundledSet("arena_hard_v0.1", "arena_hard_v0.1_question.jsonl", "prompt", 500,
               "lmarena/arena-hard-auto @ 196f6b8, data/arena-hard-v0.1/question.jsonl", "Apache-2.0"),
    BundledSet("arena_hard_v2.0", "arena_hard_v2.0_question.jsonl", "prompt", 750,
               "lmarena/arena-hard-auto @ 196f6b8, data/arena-hard-v2.0/question.jsonl", "Apache-2.0"),
)}

GROUPS: dict[str, tuple[str, ...]] = {"arena_hard": ("arena_hard_v0.1", "arena_hard_v2.0")}


def names() -> list[str]:
    """Every name a recipe may use: the sets, then the groups."""
    return [*BUNDLED, *GROUPS]


def bundled(name: str) -> list[BundledSet]:
    """The sets a name stands for (a group stands for several); KeyError for an unknown name."""
    if name in GROUPS:
        return [BUNDLED[n] for n in GROUPS[name]]
    return [BUNDLED[name]]
