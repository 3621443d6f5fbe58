"""Integer dot products with int8 activations on AVX2: our own kernels, for int4 layers
and the int8 LM head.

torch's int4 CPU kernel (``aten._weight_int4pack_mm_for_cpu``) turns every 4-bit code
into a float and multiplies in floating point, and its int8 one
(``aten._weight_int8pack_mm``) does the same with 8-bit codes. Where torch dispatches
AVX2 kernels that is compute-bound, not memory-bound: measured here (SmolLM2-135M's
projections, one row, 30 distinct layers, 2 cores), 6.4 ms a decode step against 1.8 ms
for the same blocks here. llama.cpp's speed on such CPUs comes from the other way, which
is these kernels': the activations are quantized to int8 in blocks of 32 (a scale each,
as llama.cpp's Q8_1), each block's 32 products of a weight code and an activation code
are summed in integers (``vpmaddubsw``, which never saturates on these ranges), then
scaled once per block. Two weight layouts, both GGUF's:

- ``q4_1`` (:func:`q4_1_matmul`): a Q4_1 file's blocks as they are
  (:class:`~kaito_cpu_runtime.quantized.Q4Blocks`, ``w = code * scale + minimum``);
- ``q8_0`` (:func:`q8_0_matmul`): int8 codes with one scale per block of 32
  (:func:`q8_0_codes`; ``w = code * scale``), what the embedded GGUF holds its tied LM
  head in.

Scales and minima are float16, as GGUF stores them (weights quantized here get theirs
rounded to float16 the same way): SmolLM2's int4 projections take 66 MB instead of the
80 MB of float32 ones (a decode step ran as fast either way here).

Nothing well kept offers this for x86 in torch: ``aten._dyn_quant_matmul_4bit`` is
KleidiAI's on Arm and a scalar reference here (1.8 ms for one 576x3072 matrix, against
0.03), fbgemm's int8 products need 7-bit activations or saturate on AVX2 (``w8a8``), and
oneDNN has no int8 products without VNNI that keep their precision (see
:mod:`kaito_cpu_runtime.int8_head`).

Each output of each row is computed by one thread in one fixed order, so a row's numbers
depend neither on the other rows nor on the thread count (checked by the tests and, for
the decode step, by the compiled step's startup check).

The kernels are C++ (``int_dot.cpp``) compiled here at first use (about 6 s, then cached
on disk by the hash of the source, torch's version and the flags) and loaded as
``torch.ops.kaito_int_dot``; they need a C++ compiler and a CPU with AVX2, FMA and F16C.
:func:`int_dot_available` says why not where they cannot run, and the decoder then keeps
torch's kernels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from kaito_cpu_runtime.linear import cpu_flags

__all__ = [
    "int_dot_available",
    "load_int_dot",
    "pack_q4_codes",
    "q4_1_matmul",
    "q8_0_codes",
    "q8_0_matmul",
]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("int_dot.cpp")
_FLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-fopenmp", "-std=c++20",
          "-shared", "-fPIC", "-w")  # fmt: skip
_NEEDED_CPU_FLAGS = frozenset({"avx2", "fma", "f16c"})
_lock = threading.Lock()
_loaded: list[str | None] = []  # the outcome of the one load of this process


def _compiler() -> str:
    """The C++ compiler torch's inductor would use (raises where there is none)."""
    from torch._inductor.cpp_builder import get_cpp_compiler  # noqa: PLC0415 (heavy)

    return str(get_cpp_compiler())


def _cache_dir() -> Path:
    """Where built kernels are kept: ``KAITO_KERNEL_CACHE_DIR``, else a folder of this user
    id under the temporary directory (writable in a container with a read-only root)."""
    configured = os.environ.get("KAITO_KERNEL_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"kaito-kernels-{os.getuid()}"


def _own_folder(folder: Path) -> None:
    """Create ``folder`` (mode 0700) or check that it is this user's and that nobody else
    may write to it: a library found there is loaded into the process, so one that another
    user could have placed is refused (``OSError``)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise OSError(f"{folder} is not this user's own folder (owner or write permissions)")


def _build(compiler: str) -> Path:
    """The kernel's shared library, compiled unless the cache holds it."""
    from torch.utils import cpp_extension  # noqa: PLC0415 (heavy)

    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = cpp_extension.library_paths()[0]
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join(
            [source, torch.__version__.encode(), compiler.encode(), *map(str.encode, _FLAGS)]
        )
    ).hexdigest()[:20]
    folder = _cache_dir()
    _own_folder(folder)
    library = folder / f"int_dot-{key}.so"
    if library.is_file():
        return library
    partial = folder / f".int_dot-{key}-{os.getpid()}.so"
    command = [compiler, *_FLAGS, abi, *includes, str(_SOURCE), "-o", str(partial),
               f"-L{libraries}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{libraries}"]  # fmt: skip
    log.info("compiling the integer dot-product kernels (a few seconds, once)")
    # The compiler inductor found, our own source and flags: no user input in the command.
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)  # noqa: S603
    partial.replace(library)  # atomic: another process may build the same file
    return library


def load_int_dot() -> str | None:
    """Build (or find) and load the kernel, once per process: ``None`` when
    ``torch.ops.kaito_int_dot`` is ready, else why not (no AVX2/FMA/F16C, no compiler, the
    compiler's first error line)."""
    with _lock:
        if not _loaded:
            _loaded.append(_load())
        return _loaded[0]


def _load() -> str | None:
    """:func:`load_int_dot`'s work."""
    missing = _NEEDED_CPU_FLAGS - cpu_flags()
    if missing:
        return f"the CPU lacks {' and '.join(sorted(missing))}"
    try:
        compiler = _compiler()
    except Exception as exc:  # inductor's own error, or a torch without it
        return f"no C++ compiler ({str(exc).strip()[:200]})"
    try:
        torch.ops.load_library(str(_build(compiler)))  # type: ignore[no-untyped-call]  # unannotated in torch
    except subprocess.CalledProcessError as exc:
        first = next((line for line in exc.stderr.splitlines() if "error" in line), exc.stderr)
        return f"compiling int_dot.cpp failed: {first.strip()[:200]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"building int_dot.cpp failed: {exc}"
    torch.library.register_fake("kaito_int_dot::q4_1")(_q4_1_shape)
    torch.library.register_fake("kaito_int_dot::q8_0")(_q8_0_shape)
    return None


def _q4_1_shape(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor
) -> torch.Tensor:
    """``kaito_int_dot::q4_1``'s result for tracing: ``[rows, outputs]`` float32."""
    return x.new_empty((x.shape[0], codes.shape[0]))


def _q8_0_shape(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``kaito_int_dot::q8_0``'s result for tracing: ``[rows, outputs]`` float32."""
    return x.new_empty((x.shape[0], codes.shape[0]))


def pack_q4_codes(codes: torch.Tensor) -> torch.Tensor:
    """Codes ``[out, in]`` (0..15) as the kernel reads them, ``[out, in / 2]`` uint8: each
    block of 32 as 16 bytes, code ``i`` in the low nibble of byte ``i`` and code ``i + 16``
    in its high nibble (GGUF's Q4_1 layout)."""
    out, width = codes.shape
    grouped = codes.to(torch.uint8).reshape(out, width // 32, 2, 16)
    return (grouped[:, :, 0] | (grouped[:, :, 1] << 4)).reshape(out, width // 2).contiguous()


def q4_1_matmul(
    x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor
) -> torch.Tensor:
    """``x`` (``[rows, in]`` float32) times the weights of packed ``codes``
    (:func:`pack_q4_codes`), ``scale`` and ``minimum`` (``[out, in / 32]`` float16),
    transposed: ``[rows, out]`` float32. :func:`load_int_dot` must have succeeded."""
    result: torch.Tensor = torch.ops.kaito_int_dot.q4_1(x, codes, scale, minimum)
    return result


def q8_0_codes(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` (``[out, in]``) as int8 codes ``[out, in]`` and one float16 scale per
    block of 32 inputs (``max |w| / 127``, as GGUF's Q8_0 makes and stores them; weights
    dequantised from a Q8_0 file get their own codes and scales back)."""
    out, width = weight.shape
    grouped = weight.detach().float().reshape(out, width // 32, 32)
    scale = grouped.abs().amax(-1) / 127
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    codes = torch.round(grouped * inverse[..., None]).clamp(-127, 127).to(torch.int8)
    return codes.reshape(out, width).contiguous(), scale.half().contiguous()


def q8_0_matmul(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` (``[rows, in]`` float32) times the weights of ``codes`` and float16 ``scale``
    (:func:`q8_0_codes`), transposed: ``[rows, out]`` float32. :func:`load_int_dot` must
    have succeeded."""
    result: torch.Tensor = torch.ops.kaito_int_dot.q8_0(x, codes, scale)
    return result


def int_dot_available() -> str | None:
    """``None`` when the kernels are loaded and match their weights on a probe here (the
    int8 activations' rounding allowed for), else why not."""
    problem = load_int_dot()
    if problem is not None:
        return problem
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (48, 96), generator=generator, dtype=torch.uint8)
    scale = (torch.rand(48, 3, generator=generator) / 8).half()
    minimum = (-torch.rand(48, 3, generator=generator)).half()
    weight = (
        codes.float().reshape(48, 3, 32) * scale.float()[..., None] + minimum.float()[..., None]
    ).reshape(48, 96)
    probe = torch.randn(3, 96, generator=generator)
    q8_codes, q8_scale = q8_0_codes(weight)
    with torch.inference_mode():
        got = q4_1_matmul(probe, pack_q4_codes(codes), scale, minimum)
        got_q8 = q8_0_matmul(probe, q8_codes, q8_scale)
    want = probe @ weight.T
    for kernel, result in (("q4_1", got), ("q8_0", got_q8)):
        if not torch.allclose(result, want, atol=3e-2 * float(want.abs().max()), rtol=0):
            return f"the {kernel} x int8 kernel does not match its weights"
    return None
