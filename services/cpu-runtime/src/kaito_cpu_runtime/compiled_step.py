"""The fast decoder's decode step compiled by torch inductor, attention left as it is.

Eagerly, a decode step of the fast Llama decoder runs about fifty tensor operations per
layer, most of them on a few hundred numbers per row (norms, the rotary embedding, casts,
residual additions), each paying torch's dispatch and Python's call. Inductor compiles
the layers into a few fused C++ loops around the weight kernels: measured on SmolLM2
(int4 weights, one sequence, 2 cores with AMX), 10.0-10.5 ms per step eagerly and 7.2-7.4
ms compiled (`bench/` and docs/benchmarks.md, "Compiled decode step").

Attention stays outside the compiled code: the compiled layers call an opaque operator
(``kaito_cpu::attend``) that runs the step's own attention (the KV cache append and the
per-row attention of left-padded rows, see :mod:`kaito_cpu_runtime.attention`), so what
a row attends to is computed exactly as on the eager path. The fused loops work row by
row; :func:`check_compiled` verifies at startup that a row's numbers depend neither on
the other rows nor on the thread count (the batcher's promise that a request's tokens do
not depend on who else is served), and that the compiled step agrees with the eager one.

Inductor generates C++, so compiling needs a C++ compiler at run time. It takes about
50 s on 2 cores the first time (two graphs: one row, and any number of rows) and 8-10 s
when inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, by default under ``/tmp``)
holds them. Where it cannot compile, the step stays eager. Inductor's cache key does not
hold torch's CPU capability: a server held to AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``)
that found code compiled under AVX-512 dispatch got NaN (caught by the check), and the
other way round the process aborted (``malloc(): unaligned tcache chunk detected``). So
:func:`use_cache_of_this_cpu_kind` gives each capability a folder of its own.
"""

from __future__ import annotations

import itertools
import os
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Attend",
    "CompiledStack",
    "LayerStack",
    "check_compiled",
    "compile_stack",
    "opaque_operator",
    "use_cache_of_this_cpu_kind",
]

#: Caches a layer's new keys and values and returns its attention output:
#: ``attend(layer, query, key, value)``.
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
#: The decoder layers: ``stack(hidden, cos, signed_sin, attend)`` -> the new hidden states.
LayerStack = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Attend], torch.Tensor]

_libraries: dict[str, Any] = {}  # operator libraries by namespace, made on first use
_library_lock = threading.Lock()
_current = threading.local()  # the attention of the step running in this thread
_stack_numbers = itertools.count()


def _attend_now(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int) -> Any:
    """``kaito_cpu::attend`` on CPU: the running step's own attention."""
    attend: Attend = _current.attend
    return attend(layer, query, key, value).contiguous()


def _attend_shape(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer: int) -> Any:
    """``kaito_cpu::attend``'s result shape for tracing: the query's, contiguous."""
    return query.new_empty(query.shape)


def opaque_operator(
    namespace: str, schema: str, run: Callable[..., Any], shape: Callable[..., Any]
) -> Any:
    """``torch.ops.<namespace>.<name>`` for ``schema`` (``"name(Tensor x, ...) -> Tensor"``),
    defined on first use, once per process: ``run`` computes it on CPU and ``shape`` gives
    its result's shape for tracing, so compiled code calls it without looking inside (one
    operator per namespace)."""
    name = schema.split("(", 1)[0]
    with _library_lock:
        if namespace not in _libraries:
            library: Any = torch.library.Library(namespace, "DEF")  # type: ignore[no-untyped-call]  # unannotated in torch
            library.define(schema)
            library.impl(name, run, "CPU")
            library.impl(name, shape, "Meta")
            _libraries[namespace] = library
    return getattr(getattr(torch.ops, namespace), name)


def _attend_operator() -> Any:
    """``torch.ops.kaito_cpu.attend``."""
    schema = "attend(Tensor query, Tensor key, Tensor value, int layer) -> Tensor"
    return opaque_operator("kaito_cpu", schema, _attend_now, _attend_shape)


def _guards_on_inputs(entries: list[Any]) -> list[bool]:
    """Keep dynamo's guards on the step's inputs, drop those on the stack's closure and on
    the global state: the decoder's weights and settings do not change after it is built
    (checking some 1,700 guards on them took about 1 ms per step), the code does not
    depend on the thread count (``cpp.threads``), and steps always run in inference
    mode."""
    return [not ("stack" in entry.name or entry.guard_type in ("DUPLICATE_INPUT", "GLOBAL_STATE"))
            for entry in entries]  # fmt: skip


class CompiledStack:
    """A :data:`LayerStack` compiled by inductor (compiled on the first calls: one for a
    single row, one for any other number of rows)."""

    def __init__(self, stack: LayerStack) -> None:
        operator = _attend_operator()

        def through_operator(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
            return operator(q, k, v, layer)

        def layers(hidden: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> Any:
            return stack(hidden, cos, signed_sin, through_operator)

        # Dynamo keeps compiled code per code object; without guards on the closure it
        # would hand one stack's code to another, so each stack gets a code object of its own.
        code = layers.__code__.replace(co_name=f"decode_layers_{next(_stack_numbers)}")
        own = types.FunctionType(code, layers.__globals__, closure=layers.__closure__)
        # Only a batch of more than one row gets a dynamic batch size (see __call__), so the
        # weights' shapes stay static; the fused loops run on one thread (they are small),
        # so the code does not depend on the thread count the governor sets.
        self._compiled = torch.compile(
            own, fullgraph=True, options={"guard_filter_fn": _guards_on_inputs, "cpp.threads": 1}
        )

    def __call__(
        self, hidden: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, attend: Attend
    ) -> torch.Tensor:
        """The stack applied to one decode position per row, attending with ``attend``."""
        _current.attend = attend
        if hidden.shape[0] > 1:  # one graph for every batch of several rows
            for tensor in (hidden, cos, signed_sin):
                torch._dynamo.mark_dynamic(tensor, 0)
        try:
            result: torch.Tensor = self._compiled(hidden, cos, signed_sin)
        finally:
            _current.attend = None
        return result


def _missing_compiler() -> str | None:
    """Why inductor cannot compile C++ here (no compiler found), or ``None``."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler  # noqa: PLC0415 (heavy)

        get_cpp_compiler()
    except Exception as exc:  # its own error, or a torch without it: no compiling either way
        return f"no C++ compiler for torch inductor ({str(exc).strip()[:200]})"
    return None


def use_cache_of_this_cpu_kind() -> Path:
    """Point inductor's on-disk cache at a folder of torch's CPU capability under the one
    configured (``TORCHINDUCTOR_CACHE_DIR``, else inductor's default), e.g.
    ``/tmp/torchinductor_kaito/cpu-avx512``, and return it (see the module docstring)."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # noqa: PLC0415

    base = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or default_cache_dir())
    folder = f"cpu-{torch.backends.cpu.get_cpu_capability().lower()}"
    chosen = base if base.name == folder else base / folder
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(chosen)
    return chosen


def compile_stack(
    stack: LayerStack,
    probe_inputs: Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    probe_attend: Attend,
) -> tuple[CompiledStack | None, str | None]:
    """``stack`` compiled and checked (:func:`check_compiled`) on a probe batch:
    ``probe_inputs(rows)`` gives the first ``rows`` rows' ``(hidden, cos, signed_sin)``,
    the same each time; ``probe_attend`` computes each row's attention from that row
    alone. ``(compiled, None)``, or ``(None, why not)`` where inductor fails or the
    check does."""
    missing = _missing_compiler()
    if missing is not None:
        return None, missing
    use_cache_of_this_cpu_kind()
    try:
        compiled = CompiledStack(stack)

        def run(rows: int, use_compiled: bool) -> torch.Tensor:
            hidden, cos, signed_sin = probe_inputs(rows)
            if use_compiled:
                return compiled(hidden, cos, signed_sin, probe_attend)
            return stack(hidden, cos, signed_sin, probe_attend)

        with torch.inference_mode():
            problem = check_compiled(run)
    except Exception as exc:  # inductor fails many ways; serving must go on eagerly
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        problem = f"torch inductor failed: {lines[0][:200]}"
    return (None, problem) if problem is not None else (compiled, None)


def check_compiled(run: Callable[[int, bool], torch.Tensor]) -> str | None:
    """``None`` when the compiled step may serve, else why not.

    ``run(rows, compiled)`` runs one decode step over the first ``rows`` rows of a fixed
    probe batch, compiled or eagerly, and returns its hidden states. Three rows
    compiled must agree with eager (a relative difference of bfloat16 rounding, not a
    different computation); the first row alone must be bit for bit the first row of
    three; and both with one thread bit for bit what they are with the configured
    threads. Running it compiles both graphs.
    """
    eager, together, alone = run(3, False), run(3, True), run(1, True)
    if not bool(torch.isfinite(together).all()):
        return "the compiled step gives non-finite numbers"
    difference = float((together - eager).abs().max())
    if difference > 0.05 * float(eager.abs().max()):
        return f"the compiled step differs from the eager one by {difference:.3g}"
    if not torch.equal(alone[0], together[0]):
        return "a row's compiled numbers depend on the other rows"
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
        try:
            single = run(3, True), run(1, True)
        finally:
            torch.set_num_threads(threads)
        if not (torch.equal(single[0], together) and torch.equal(single[1], alone)):
            return "the compiled numbers depend on the thread count"
    return None
