"""Generation backends behind one interface: `transformers` (CPU default), `vllm` (GPU), `openai` (HTTP).

    >>> backend = get_backend({"backend": "transformers", "model": "default", "batch_size": 8})   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from alignmix.synth.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    request_seed,
    resident_backend,
)

BACKENDS = ("transformers", "vllm", "openai")
_CACHE: dict[str, Backend] = {}


def get_backend(spec: dict[str, Any] | Backend, *, shared: bool = True) -> Backend:
    """A backend from `{"backend": name, "model": ..., **options}`. With `shared`, the same spec returns the same
    backend, so a run that generates and judges with one model loads it once. Only one local model stays loaded:
    a backend whose model was released (another one loaded since) loads again on its next `generate`."""
    if isinstance(spec, Backend):
        return spec
    spec = dict(spec)
    name = spec.pop("backend", "transformers")
    model = spec.pop("model", "default")
    key = repr((name, model, sorted(spec.items())))
    if shared and key in _CACHE:
        return _CACHE[key]
    if name == "transformers":
        from alignmix.synth.backends.transformers import TransformersBackend as cls
    elif name == "vllm":
        from alignmix.synth.backends.vllm import VLLMBackend as cls  # type: ignore[assignment]
    elif name == "openai":
        from alignmix.synth.backends.openai import OpenAIBackend as cls  # type: ignore[assignment]
    else:
        raise ValueError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    backend = cls(model, **spec)
    if shared:
        _CACHE[key] = backend
    return backend


__all__ = ["BACKENDS", "Backend", "GenerationRequest", "GenerationResult", "SamplingParams", "get_backend", "request_seed",
           "resident_backend"]
