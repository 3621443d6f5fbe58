"""kaito-inference: one OpenAI-compatible server, two runtimes (transformers, vLLM)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
