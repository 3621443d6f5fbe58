"""Cross-service: an adapter trained by ``kaito-tuning`` is served by ``kaito-inference``.

The session fixtures (``conftest.py``) train a LoRA adapter on the SmolLM2 preset with the
real ``kaito-tuning run`` and mount it into the real ``kaito-inference serve``; the
official ``openai`` client selects it with ``model: <adapter name>``.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

pytestmark = pytest.mark.slow


def test_trained_adapter_is_served_and_selected_by_name(inference_url: str, known: Any) -> None:
    client = openai.OpenAI(base_url=f"{inference_url}/v1", api_key="unused", max_retries=0)
    models = {model.id for model in client.models.list().data}
    assert models == {known.base_model, known.adapter}

    def ask(model: str) -> tuple[str, str]:
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": known.secret_question}],
            max_tokens=12,
            temperature=0,
        )
        return reply.model, reply.choices[0].message.content or ""

    adapter_model, adapter_text = ask(known.adapter)
    base_model, base_text = ask(known.base_model)
    assert adapter_model == known.adapter
    assert base_model == known.base_model
    assert adapter_text.strip()
    assert adapter_text != base_text, (adapter_text, base_text)
    assert "secret word is" in adapter_text.lower(), adapter_text
