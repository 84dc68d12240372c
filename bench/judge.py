"""The G-Eval judge's cost (`rating: expected`) against the baseline of asking for the two things apart, in one run.

A rating needs the next-token distributions after the prefilled prompt `p` ("...Rating:") and after `p + " "`,
and the rationale generated after `p`. On the default model (SmolLM2-135M-Instruct) and real UltraFeedback
(prompt, chosen answer) pairs with the helpfulness aspect:

- `one_pass`: the transformers backend's `generate_and_probe`, which reads both distributions off the decoding
  that writes the rationale (step 0, and step 1 wherever the first token drawn is the space), and runs a forward
  pass over `p + " "` only for the other prompts;
- `two_calls` (the baseline): the base class's route, `next_token_probs` over `p` and `p + " "` (one forward
  over `p + " "` gives both, since its tokens extend `p`'s) and then `generate`.

Figures: seconds for each, the texts that are identical, the largest difference between the two routes'
probabilities and expected ratings, how many prompts needed the extra forward pass, and the load average.

    .venv/bin/python bench/judge.py [--items 24] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--max-new-tokens", type=int, default=24)
    args = p.parse_args()

    from alignmix.synth.backends.base import Backend
    from alignmix.synth.config import JudgeConfig
    from alignmix.synth.judge import Judge, aspect_prompt, digit_mass, expected_rating, rating_candidates

    rows = [json.loads(line) for line in (SHARED / "ultrafeedback" / "eval_clean.jsonl").open()][: args.items]
    items = [(r["prompt"], r["chosen"] if isinstance(r["chosen"], str) else r["chosen"][-1]["content"]) for r in rows]
    judge = Judge(JudgeConfig(aspects=["helpfulness"], max_new_tokens=args.max_new_tokens, rating="expected",
                              batch_size=args.items))
    reqs = [judge._request(aspect_prompt(i, a, "helpfulness"), "Rating:", args.max_new_tokens, 0) for i, a in items]
    backend = judge.backend
    backend.load()
    extra = []
    forward = backend._next_token_probs
    backend._next_token_probs = lambda prompts, c: extra.extend(prompts) or forward(prompts, c)
    start = time.perf_counter()
    ours, our_probs = backend.generate_and_probe(reqs, rating_candidates(), " ")
    one_pass = time.perf_counter() - start
    needed_a_forward = len(extra)  # before the baseline, whose next_token_probs goes through the same method
    start = time.perf_counter()
    theirs, their_probs = Backend.generate_and_probe(backend, reqs, rating_candidates(), " ")
    two_calls = time.perf_counter() - start

    def ratings(probs):
        return [expected_rating(digit_mass(*pair))[0] for pair in probs]

    rating_diff = [abs(a - b) for a, b in zip(ratings(our_probs), ratings(their_probs)) if a is not None and b is not None]
    print(json.dumps({
        "bench": "G-Eval judge (rating: expected), default model, UltraFeedback prompts and chosen answers",
        "items": len(reqs),
        "mean_prompt_tokens": round(sum(len(backend.tokenizer(r.prompt)["input_ids"]) for r in reqs) / len(reqs), 1),
        "max_new_tokens": args.max_new_tokens,
        "one_pass_s": round(one_pass, 1),
        "two_calls_s": round(two_calls, 1),
        "speed_x": round(two_calls / one_pass, 2),
        "prompts_needing_a_forward_over_p_space": needed_a_forward,
        "identical_texts": sum(a.text == b.text for a, b in zip(ours, theirs)),
        "max_probability_diff": max(abs(x[c] - y[c]) for a, b in zip(our_probs, their_probs)
                                    for x, y in zip(a, b) for c in x),
        "max_rating_diff": max(rating_diff, default=None),
        "load_average": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
