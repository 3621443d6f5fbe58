"""Tools with heavy dependencies, shared by the services and the ``kaito`` CLI.

- :mod:`kaito_sdk.tools.localmodels`: the embedded SmolLM2 (GGUF converted into a Hugging
  Face directory in the user cache) and a tiny random model for tests. Its libraries come
  with the extra ``kaito-sdk[models]`` (torch, transformers, gguf, rich).
- :mod:`kaito_sdk.tools.oci`: push and pull LoRA adapters as OCI artifacts. Its library
  comes with the extra ``kaito-sdk[oci]`` (oras).

Why here and not in ``kaito_cli``: the inference and tuning services convert the embedded
model when they start and the tuning job pushes adapters, while neither should carry the
CLI's typer and rich. Why not in the SDK core: the core (``api``, ``validation``, ``crd``,
``presets``, ``skus``, ``estimator``, ``contracts``, ``labels``, the config models) is
imported by every package and needs only pydantic and PyYAML. Both modules import their
heavy libraries inside the functions that use them, and nothing in the core imports this
package, so ``import kaito_sdk`` and its core modules load neither (``sdk/tests/
test_core_imports.py`` checks it).
"""
