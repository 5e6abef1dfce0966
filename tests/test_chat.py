"""Chat templates: the packaged models' own templates rendered as transformers renders them."""

from __future__ import annotations

import pytest

from lanterne.chat import chat_text, render_chat
from lanterne.errors import GenerationError
from lanterne.models import is_installed, model_file

CONVERSATION = [
    {"role": "system", "content": "Tu es un professeur patient."},
    {"role": "user", "content": "Qu'est-ce qu'un token ?"},
    {"role": "assistant", "content": "Un morceau de texte : un mot, une partie de mot ou un signe."},
    {"role": "user", "content": "Et l'attention ?"},
]


def packaged_template(name: str, tmp_path) -> str:
    if not is_installed(name):
        pytest.skip(f"{name} is not installed (see `lanterne models`)")
    from lanterne.interop.gguf import open_gguf

    return open_gguf(model_file(name, tmp_path)).metadata["tokenizer.chat_template"]


def test_smollm2s_template_renders_as_transformers_renders_it(tmp_path):
    """(Gemma 3 270M is a base model: its file has no chat template.)"""
    chat_utils = pytest.importorskip("transformers.utils.chat_template_utils")
    template, specials = packaged_template("smollm2-135m-instruct", tmp_path), {}
    for messages in (CONVERSATION, CONVERSATION[1:2]):
        expected = chat_utils.render_jinja_template(
            conversations=[messages], chat_template=template, add_generation_prompt=True, **specials
        )[0][0]
        assert render_chat(template, messages, **specials) == expected


def test_a_template_that_refuses_the_messages_says_so():
    template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('the first message must be the user') }}{% endif %}ok"
    with pytest.raises(GenerationError, match="the first message must be the user"):
        render_chat(template, [{"role": "assistant", "content": "hi"}])
    assert render_chat(template, [{"role": "user", "content": "hi"}]) == "ok"


def test_bad_messages_and_missing_templates_are_one_line_errors():
    with pytest.raises(GenerationError, match="'role'"):
        render_chat("{{ messages }}", [{"role": "robot", "content": "hi"}])

    class BaseModelTokenizer:
        chat_template = None

    with pytest.raises(GenerationError, match="no chat template"):
        chat_text(BaseModelTokenizer(), CONVERSATION)


def test_the_sandbox_keeps_a_template_away_from_python():
    with pytest.raises(GenerationError, match="cannot be rendered"):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", CONVERSATION)
