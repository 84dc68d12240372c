"""Pydantic configs for the recipe's `generators` entries (kind: magpie | self_instruct) and its `preferences`
section. Unknown fields are errors, so a typo in a recipe never passes silently.

    generators:
      - {kind: magpie, name: magpie-demo, count: 8, n_turns: 1}
      - {kind: self_instruct, name: si-demo, count: 8}
    preferences:
      prompts: magpie-demo
      responders: [{temperature: 0.3}, {temperature: 1.0}]
      judge: {model: default}                 # or {kind: reward_model, model: Skywork/Skywork-Reward-V2-Llama-3.1-8B}
      binarize: {rejected: random}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator

from alignmix.pipeline.config import StrictModel

from alignmix.synth.arithmetic_problems import ArithmeticProblemsConfig
from alignmix.synth.backends.base import SamplingParams
from alignmix.synth.thinking import ThinkingConfig


_Strict = StrictModel


class ModelFields(_Strict):
    """Which model generates, through which backend."""

    backend: Literal["transformers", "vllm", "openai"] = Field("transformers", description="the generation backend")
    model: str = Field("default", description="'default' (SmolLM2-135M-Instruct), a Hub id or a local folder")
    tokenizer: str | None = Field(None, description="where the chat template comes from, if not the model's own")
    batch_size: int = Field(16, gt=0, description="requests decoded together (transformers, vllm)")
    base_url: str | None = Field(None, description="openai backend: the server, e.g. http://127.0.0.1:8000/v1")
    backend_options: dict[str, Any] = Field(default_factory=dict, description="passed to the backend as-is")

    def backend_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"backend": self.backend, "model": self.model, "batch_size": self.batch_size}
        if self.tokenizer:
            spec["tokenizer"] = self.tokenizer
        if self.base_url:
            spec["base_url"] = self.base_url
        return {**spec, **self.backend_options}


class Sampling(_Strict):
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(1.0, ge=0, description="0 means greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0: off")

    def params(self, stop: tuple[str, ...] = (), seed: int | None = None) -> SamplingParams:
        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k, tuple(stop), seed)


class SystemPrompt(_Strict):
    text: str = Field(description="the system prompt; '' means none (the template's default, if it has one)")
    weight: float = Field(1.0, gt=0, description="relative frequency among the system prompts")


class MagpieConfig(ModelFields):
    kind: Literal["magpie"] = "magpie"
    name: str = Field("magpie", description="the source name recorded in each row")
    count: int = Field(100, gt=0, description="how many conversations to request (before filtering)")
    requests_per_batch: int = Field(16, gt=0, description="requests per written (resumable) batch")
    seed: int = 0
    template: str = Field("auto", description="'auto' derives the pre-query template from the chat template; or a preset")
    system_prompts: list[SystemPrompt] = Field(default_factory=list, description="sampled per conversation, by weight")
    n_turns: int = Field(1, ge=1, le=8, description="user/assistant exchanges per conversation")
    # 1.0 / 1.0: MAGPIE samples the query from the model's unmodified prior.
    instruction: Sampling = Field(default_factory=lambda: Sampling(max_new_tokens=128, temperature=1.0, top_p=1.0))
    response: Sampling = Field(default_factory=lambda: Sampling(max_new_tokens=256, temperature=0.7, top_p=0.95))
    min_instruction_chars: int = Field(3, ge=1, description="shorter instructions are dropped as empty_instruction")
    thinking: ThinkingConfig | None = Field(
        None, description="answer in thinking mode: reasoning and answer apart, each with its budget (see synth.thinking)"
    )


# The Self-Instruct paper's filter: tasks a text-only model cannot do.
SELF_INSTRUCT_KEYWORDS = [
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
]


class SelfInstructConfig(ModelFields):
    kind: Literal["self_instruct"] = "self_instruct"
    name: str = Field("self_instruct", description="the source name recorded in each row")
    count: int = Field(100, gt=0, description="stop once this many new instructions are kept")
    max_batches: int | None = Field(None, gt=0, description="give up after this many batches (default: 4 x count / requests)")
    requests_per_batch: int = Field(8, gt=0, description="prompting requests per written (resumable) batch")
    seed: int = 0
    seed_tasks: str | None = Field(None, description="a seed file in the reference JSON Lines format (default: ours)")
    # 8 in-context tasks, 2 of them machine-generated once there are some: the paper's setting.
    num_prompt_instructions: int = Field(8, ge=1)
    num_machine_instructions: int = Field(2, ge=0)
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="0.7: the Self-Instruct paper's ROUGE-L cut-off")
    min_words: int = Field(3, ge=1, description="instructions with this many words or fewer are dropped")
    max_words: int = Field(150, ge=1, description="instructions with more words are dropped")
    keywords: list[str] = Field(default_factory=lambda: list(SELF_INSTRUCT_KEYWORDS))
    # temperature 0.7, top_p 0.5: the paper's settings for instruction generation.
    instruction: Sampling = Field(default_factory=lambda: Sampling(max_new_tokens=256, temperature=0.7, top_p=0.5))
    instance: Sampling = Field(default_factory=lambda: Sampling(max_new_tokens=256, temperature=0.0))


GeneratorConfig = Annotated[MagpieConfig | SelfInstructConfig | ArithmeticProblemsConfig, Field(discriminator="kind")]
_GENERATOR = TypeAdapter(GeneratorConfig)


def parse_generator(spec: dict[str, Any] | MagpieConfig | SelfInstructConfig | ArithmeticProblemsConfig
                    ) -> MagpieConfig | SelfInstructConfig | ArithmeticProblemsConfig:
    """A recipe `generators` entry as its config; errors name the field."""
    if isinstance(spec, (MagpieConfig, SelfInstructConfig, ArithmeticProblemsConfig)):
        return spec
    if "kind" not in spec:
        raise ValueError(f"generator {spec.get('name', '?')!r} has no `kind`: use kind: magpie, self_instruct or "
                         "arithmetic_problems")
    return _GENERATOR.validate_python(spec)


class Responder(ModelFields):
    """One way of answering a prompt; a prompt gets `n` answers from each responder."""

    label: str | None = Field(None, description="recorded in meta; default: model@temperature")
    n: int = Field(1, ge=1)
    system_prompt: str | None = None
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    thinking: ThinkingConfig | None = Field(
        None, description="answer in thinking mode: reasoning and answer apart, each with its budget (see synth.thinking)"
    )

    def sampling(self) -> Sampling:
        return Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    def display(self) -> str:
        return self.label or f"{self.model}@t={self.temperature:g}"


# UltraFeedback's four fine-grained aspects.
ASPECTS = ["helpfulness", "honesty", "instruction_following", "truthfulness"]


class JudgeConfig(ModelFields):
    """The LLM judge (`kind: llm`, the default): UltraFeedback's per-aspect 1-5 ratings from a generating model."""

    kind: Literal["llm"] = "llm"
    aspects: list[str] = Field(default_factory=lambda: list(ASPECTS), min_length=1)
    max_new_tokens: int = Field(64, gt=0, description="per aspect: a rating and a one-sentence rationale")
    temperature: float = Field(0.0, ge=0, description="0: greedy, the usual judge setting; >0 samples (seeded per request)")
    seed: int = Field(0, description="seeds sampled judgements (temperature > 0)")
    pairwise: bool = Field(False, description="also judge each chosen/rejected pair in both orders (A,B and B,A)")
    rating: Literal["parsed", "expected"] = Field(
        "parsed",
        description="parsed: the 1-5 integer read from the generated text (UltraFeedback). expected: G-Eval's "
        "probability-weighted rating, the expected value of the next-token distribution over the digits 1-5 after "
        "the `Rating:` prefill (a float; far fewer ties, reproducible; needs a backend that returns next-token "
        "probabilities and a chat template). The rationale is generated in both modes.",
    )


class RewardModelJudgeConfig(_Strict):
    """A reward-model judge (`kind: reward_model`): an `AutoModelForSequenceClassification` scores each
    (prompt, response) in one forward pass; the score is the response's rating (see `alignmix.synth.reward_model`)."""

    kind: Literal["reward_model"]
    model: str = Field(description="a Hub id or local folder of a sequence-classification reward model")
    tokenizer: str | None = Field(None, description="where the tokenizer comes from, if not the model's own")
    input: Literal["auto", "chat", "pair"] = Field(
        "auto", description="chat: the conversation through the tokenizer's chat template (ArmoRM, Skywork-Reward); "
        "pair: (question, answer) as a text pair (OpenAssistant's DeBERTa RMs); auto: chat when the tokenizer has "
        "a chat template, else pair"
    )
    output: str = Field("logits", description="the model output read: 'logits' (most RMs), 'score' (ArmoRM)")
    head: int = Field(0, ge=0, description="the column of a multi-label output that is the reward")
    max_length: int | None = Field(
        None, gt=8, description="tokens per (prompt, response), longer ones truncated and counted; None: the model's max"
    )
    batch_size: int = Field(8, gt=0, description="sequences scored together (sorted by length to limit padding)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: float32 on CPU")
    device: str | None = Field(None, description="default: cuda when available, else cpu")
    trust_remote_code: bool = Field(False, description="ArmoRM's custom head needs it; give it only to a model you trust")
    pairwise: bool = Field(False, description="not available: a reward model gives no A/B verdict")

    @model_validator(mode="after")
    def _no_pairwise(self) -> RewardModelJudgeConfig:
        if self.pairwise:
            raise ValueError(
                "judge.pairwise: a reward model scores each response alone and gives no A/B verdict, so there is "
                "nothing to check for position bias; remove `pairwise: true`, or use kind: llm for pairwise judging"
            )
        return self


def _judge_kind(value: Any) -> str:
    return value.get("kind", "llm") if isinstance(value, dict) else getattr(value, "kind", "llm")


AnyJudgeConfig = Annotated[
    Annotated[JudgeConfig, Tag("llm")] | Annotated[RewardModelJudgeConfig, Tag("reward_model")],
    Discriminator(_judge_kind),
]


class BinarizeConfig(_Strict):
    # random: what UltraFeedback did (chosen = best mean rating, rejected = a random strictly lower one).
    rejected: Literal["random", "lowest"] = Field("random", description="random (seeded) or the lowest-rated response")
    seed: int | None = Field(None, description="seeds the random choice (default: the preferences seed)")


class PreferencesConfig(_Strict):
    name: str = Field("preferences", description="the source name recorded in each preference row")
    prompts: str | list[str] | None = Field(
        None, description="the sources or generators whose rows give the prompts (for the flow; default: every "
        "generator and every source of prompt rows)"
    )
    limit: int | None = Field(None, gt=0, description="use at most this many prompts")
    seed: int = 0
    prompts_per_batch: int = Field(8, gt=0, description="prompts per written (resumable) batch")
    responders: list[Responder] = Field(
        default_factory=lambda: [Responder(temperature=t) for t in (0.3, 0.7, 1.0, 1.3)], min_length=1
    )
    judge: AnyJudgeConfig = Field(default_factory=JudgeConfig, description="kind: llm (default) or reward_model")
    binarize: BinarizeConfig = Field(default_factory=BinarizeConfig)

    @model_validator(mode="after")
    def _enough(self) -> PreferencesConfig:
        if sum(r.n for r in self.responders) < 2:
            raise ValueError("a preference pair needs at least 2 responses per prompt: add a responder or raise n")
        return self


def default_seed_tasks() -> Path:
    return Path(__file__).parent / "data" / "seed_tasks.jsonl"
