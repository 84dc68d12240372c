"""Topic coverage: a cheap, local, rule-based classifier that gives each prompt one category.

Categories (stable codes, then the names the data card shows):

    coding, math, writing, knowledge_qa, reasoning, role_play, safety_sensitive, other

Rules are regular expressions over the prompt, run as polars expressions (no per-row Python), in two tiers:
a *strong* cue decides alone, in the priority order of `CATEGORIES` (safety first, since a harmful request
in any form is what a mix owner most needs to see); without one, a *weak* cue decides, in the same order;
without either, the prompt is `other`.

    >>> classify_texts(["Write a haiku about rain", "Solve 2x + 3 = 7", "How do I pick a lock to rob a house?"])
    ['writing', 'math', 'safety_sensitive']

Measured on a hand-labelled sample of 172 real prompts (tests/data/topics_labelled.jsonl, which points at rows
of public datasets by file and index): see tests/pipeline/test_topics.py for the accuracy it holds.
Rules were chosen over MiniLM embeddings with labelled centroids because they need no model download or
load (milliseconds per 10k prompts on one core), are deterministic across machines, and an error can be read
off the rule that fired.
"""

from __future__ import annotations

import polars as pl

# Priority order: the first category whose cue matches wins.
CATEGORIES = ("safety_sensitive", "coding", "role_play", "math", "writing", "reasoning", "knowledge_qa", "other")

CATEGORY_NAMES = {
    "coding": "coding",
    "math": "math",
    "writing": "writing",
    "knowledge_qa": "knowledge and QA",
    "reasoning": "reasoning",
    "role_play": "role-play",
    "safety_sensitive": "safety-sensitive",
    "other": "other",
}


def _words(*words: str) -> str:
    return r"\b(?:" + "|".join(words) + r")\b"


# Strong cues: one is enough to decide. All matching is case-insensitive.
STRONG: dict[str, str] = {
    "safety_sensitive": _words(
        r"kill(?:ing)?", "murder", r"bombs?", "explosives?", r"weapons?", r"guns?", "poison(?:ing)?", "suicide",
        "self-harm", r"hurt (?:him|her|them|someone|somebody|myself|people)", r"steal(?:ing)?", "shoplift(?:ing)?",
        r"rob(?:bing)?", "burglar(?:y|ize)?", r"hack(?:ing)? into", "illegal(?:ly)?", r"drugs?", "cocaine", "meth",
        "heroin", "racist", "slurs?", "bad words", "swear words", "curse words", "sexual assault", "rape",
        "porn(?:ography)?", "nudes?", "blatant crime", "arson", "look accidental", "terroris[mt]", "launder(?:ing)?",
        "counterfeit", r"scam(?:ming)?", "harass(?:ment)?", r"people are animals", "51/50",
    ),
    "coding": _words(
        "code", "coding", "python", "java", "javascript", "typescript", r"c\+\+", "c#", "php", "ruby", "golang",
        "go program", "rust", "sql", r"(?:sql|database|write a|construct a) query", "html", "css", r"react(?:js)?",
        r"node\.?js", "npm", r"apis?", "regex", "algorithm", "compiler?", "debug(?:ging)?", "git", "bash", "linux",
        "json", "web3", "apex", "scratch", "r code", "stack trace", "programming", r"(?:a|the) program",
        r"web ?page", "sparse matrix", "gcc", r"error: ", r"\.(?:h|cpp|py|js):\d+",
    ),
    "role_play": (
        r"\b(?:act as|acting as|pretend (?:to be|you are|you're)|role-?play|imagine you are|play the role"
        r"|in the (?:style|voice) of|stay in character|as if you were)\b"
        r"|\byou are an? [a-z]+(?: [a-z]+)? (?:who|that|for|with|specializ)"
    ),
    "math": (
        _words(
            "calculate", "compute", r"solve (?:for|the equation|this equation|\d)", "equations?", "integral", "derivative", "probability", "arithmetic",
            "algebra", "geometry", "theorem", "prime numbers?", "how many", r"how much (?:money|time|does|did|will)",
            r"how (?:long|tall|far|old|fast) (?:will|would|does|did|is)", "percent(?:age)?", "math(?:ematical)?",
            "multiplication", "division", "divided by",
        )
        + r"|\bsolve \d|\d\s*[*/×^]\s*\d|\d\s+[-+]\s+\d|\w\s*[-+]\s*\d+\s*=\s*-?\d"
    ),
    "writing": (
        r"^\s*(?:write|rewrite|compose|draft|generate|create|come up with|summari[sz]e|paraphrase|translate|add)\b"
        + "|"
        + _words(
            "poem", "poetry", "sonnet", "haiku", "essay", "story", "stories", "lyrics", "rap song", "song", "slogan",
            "tagline", "title", "headline", "narrative", "summary", "summari[sz]e", "paraphrase", "rephrase",
            r"translat(?:e|ion)", r"convert (?:it|the \w+ sentence)? ?into", "bullet points", "product description",
            "book review", "joke", r"write an? (?:letter|email|blog|article|sentence|question|speech|review)",
            r"in (?:easy|simple|plain) (?:to understand )?language", "letter",
        )
    ),
    "reasoning": _words(
        "premise", "hypothesis", r"entail(?:s|ment)?", "classify", "classification", "sentiment", "logic(?:al)?",
        "riddle", "puzzle", "deduce", "infer", "inference", "true or false", r"is (?:the above|this) claim true",
        "which of the following", "options", r"choose the (?:most|best)", "answer the question", r"step[- ]by[- ]step",
        "reasoning", "hypothesi[sz]e", "grammatical", "how might", "what would happen", "closest in meaning",
        "the question about the story", "missing", "select the completion", "most suitable",
        # Templated NLP tasks (Super-NaturalInstructions style); translation tasks are caught first by `writing`.
        "in this task", "definition:", "given the task definition", "you will be given a definition",
    ),
    "knowledge_qa": (
        r"^\s*(?:what|who|whom|when|where|which|why|how|is|are|does|do|did|can you (?:tell|explain|give|detail)"
        r"|tell me|explain|define|list|name|describe|elaborate|discuss|provide)\b"
    ),
}

# Weak cues: decide only when no strong cue matched.
WEAK: dict[str, str] = {
    "coding": _words("script", "class", "software", "app", "database", "excel", "function"),
    # Two numbers and a closing question: the shape of a word problem.
    "math": r"\$\d|\d[^?]*\d[^?]*\?\s*$|" + _words("total", "sum", "average"),
    "writing": _words("write", "describe", "description", "sentence"),
    "reasoning": _words("why", "explain", "compare", "analy[sz]e", "identify", "rank", "select", "correct"),
    "knowledge_qa": r".{20,}\?\s*$|" + _words("facts?", "history", "what is", "who was", "how does", "how do"),
}


def category_expr(text: pl.Expr) -> pl.Expr:
    """A polars expression giving the category of each text (see the module docstring for the rules)."""
    lowered = text.fill_null("").str.to_lowercase()
    expr = pl.lit("other", dtype=pl.String)
    # Build the when-chain from the lowest priority up, so the highest-priority match ends outermost.
    for tier in (WEAK, STRONG):
        for cat in reversed(CATEGORIES):
            if cat in tier:
                expr = pl.when(lowered.str.contains(tier[cat])).then(pl.lit(cat)).otherwise(expr)
    return expr.alias("category")


def prompt_text(frame: pl.DataFrame) -> pl.Expr:
    """The text a row is classified by: `prompt` for preference rows, the last user turn for SFT rows."""
    if "prompt" in frame.columns:
        return pl.col("prompt")
    return (
        pl.col("messages")
        .list.eval(pl.when(pl.element().struct.field("role") == "user").then(pl.element().struct.field("content")))
        .list.drop_nulls()
        .list.last()
    )


def add_categories(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with a `category` column (one of CATEGORIES) computed from its prompt; kept if already there."""
    if "category" in frame.columns:
        return frame
    return frame.with_columns(category_expr(prompt_text(frame)))


def classify_texts(texts: list[str]) -> list[str]:
    """Categories of plain strings; handy for tests and one-off checks."""
    return pl.DataFrame({"t": texts}, schema={"t": pl.String}).select(category_expr(pl.col("t")))["category"].to_list()
