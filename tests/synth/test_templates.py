"""Pre-query template derivation against the presets, on chat templates written here (nothing downloaded).
The templates follow the official ones of each family."""

from __future__ import annotations

import pytest

from alignmix.synth.templates import PRESETS, derive_pre_query_template, render_template, turn_markers

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"
)
TEMPLATES = {"llama3": LLAMA3, "chatml": CHATML, "gemma": GEMMA, "phi3": PHI3, "mistral": MISTRAL}


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_preset_matches_the_derivation(family):
    preset = PRESETS[family]
    assert derive_pre_query_template(TEMPLATES[family], **preset.special_tokens) == preset.pre_query_template


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_end_of_user_turn_is_the_presets_first_stop(family):
    preset = PRESETS[family]
    markers = turn_markers(TEMPLATES[family], **preset.special_tokens)
    assert markers.instruction_stops()[0] == preset.stop[0]


def test_turn_markers_of_each_family():
    special = PRESETS["llama3"].special_tokens
    m = turn_markers(LLAMA3, **special)
    assert (m.user_end, m.assistant_header, m.assistant_end) == (
        "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>", "<|eot_id|>",
    )
    assert m.instruction_stops() == ("<|eot_id|>", "<|start_header_id|>")
    g = turn_markers(GEMMA, **PRESETS["gemma"].special_tokens)
    assert (g.user_end, g.assistant_header, g.user_header) == ("<end_of_turn>", "<start_of_turn>model", "<start_of_turn>user")


def test_system_prompt_and_later_turns_are_derived_too():
    assert derive_pre_query_template(CHATML, system_prompt="Be brief.") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
    )
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert derive_pre_query_template(LLAMA3, history, **PRESETS["llama3"].special_tokens) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    )
    # Mistral folds no system turn: the prefix of the second user turn follows the first answer and eos.
    assert derive_pre_query_template(MISTRAL, history, **PRESETS["mistral"].special_tokens) == "<s>[INST] Hi [/INST]Hello!</s>[INST] "


def test_a_template_that_refuses_a_system_prompt_says_so():
    with pytest.raises(Exception, match="System role not supported"):
        derive_pre_query_template(GEMMA, system_prompt="x", **PRESETS["gemma"].special_tokens)


def test_render_matches_apply_chat_template_conventions():
    out = render_template(CHATML, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
