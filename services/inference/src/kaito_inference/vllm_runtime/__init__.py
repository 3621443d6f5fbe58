"""The vLLM runtime: vLLM's own OpenAI server, launched with KAITO's arguments and limits.

It does not go through :mod:`kaito_inference.routers` or an ``Engine``: ``launcher``
builds vLLM's command line and execs it, and ``middleware`` is loaded into vLLM's server
with ``--middleware`` for the 429 limiter and the runtime adapter path check.
"""
