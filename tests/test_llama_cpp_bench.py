"""The llama.cpp baseline of the inference benchmark, without llama.cpp: how
``bench/inference_compare.py`` starts each server and picks llama.cpp's best slot count,
and where ``tools/llama_cpp_build.py`` caches a build (by version and CPU flags)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, path: Path, search: Path) -> ModuleType:
    """Import the script at ``path`` (its sibling imports resolved in ``search``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(search))
    try:
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(search))
    return module


compare = load_script(
    "kaito_bench_inference_compare", ROOT / "bench" / "inference_compare.py", ROOT / "bench"
)
build = load_script(
    "kaito_tools_llama_cpp_build", ROOT / "tools" / "llama_cpp_build.py", ROOT / "tools"
)

# --- bench/inference_compare.py ----------------------------------------------------------


def test_llama_server_gets_the_gguf_threads_slots_and_a_context_for_every_slot() -> None:
    command = compare.llama_server_command(
        Path("/opt/llama-server"),
        Path("/m/SmolLM2.gguf"),
        8123,
        slots=4,
        threads=2,
        alias="smollm2-135m-instruct",
    )
    assert command[0] == "/opt/llama-server"

    def value(flag: str) -> str:
        return str(command[command.index(flag) + 1])

    assert value("-m") == "/m/SmolLM2.gguf"
    assert (value("--host"), value("--port")) == ("127.0.0.1", "8123")
    assert (value("-t"), value("-tb"), value("-np")) == ("2", "2", "4")
    assert int(value("-c")) == 4 * compare.LLAMA_CTX_PER_SLOT
    assert value("--alias") == "smollm2-135m-instruct"
    assert "-cb" in command
    with_extra = compare.llama_server_command(
        Path("/b"), Path("/g"), 1, slots=1, threads=2, alias="m", extra="--no-repack -lv 1"
    )
    assert with_extra[-3:] == ["--no-repack", "-lv", "1"]


def test_llama_cpp_runs_without_its_amx_kernels_only_on_amx_cpus() -> None:
    assert compare.default_llama_args(["avx2", "avx512f", "amx_tile", "amx_int8"]) == "--no-repack"
    assert compare.default_llama_args(["avx2", "fma"]) == ""
    args = compare.parse_args(["--llama-server", "--llama-args=--no-mmap"])
    assert args.llama_args == "--no-mmap"


def test_our_server_takes_the_extra_arguments_and_is_labelled_by_them() -> None:
    command = compare.ours_command("/venv/bin/python", "transformers", 9000, "--weights int4")
    assert command[:5] == ["/venv/bin/python", "-m", "kaito_inference.cli", "serve", "--runtime"]
    assert command[-2:] == ["--weights", "int4"]
    assert command[command.index("--port") + 1] == "9000"
    assert compare.ours_command("p", "transformers", 9000)[-1] == "/nonexistent"
    assert compare.ours_label("transformers") == "ours/transformers"
    assert compare.ours_label("transformers", " ") == "ours/transformers"
    assert (
        compare.ours_label("transformers", "--weights int4") == "ours/transformers --weights int4"
    )


def test_the_command_line_repeats_our_runs_and_builds_llama_server_without_a_path() -> None:
    args = compare.parse_args(
        ["--ours-args", "", "--ours-args", "--weights int4", "--llama-server"]
    )
    assert args.ours_args == ["", "--weights int4"]
    assert args.llama_server == "build"
    assert args.llama_slots == [1, 4, 16]
    assert (
        compare.parse_args(["--llama-server", "/x/llama-server"]).llama_server == "/x/llama-server"
    )
    plain = compare.parse_args([])
    assert (plain.ours_args, plain.llama_server, plain.vllm_python) == (None, None, None)


def level(concurrency: int, tokens_per_s: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "tokens_per_s": tokens_per_s, "ttft_p50_s": 0.1}


def test_the_best_slot_count_is_chosen_per_concurrency_level() -> None:
    runs = [
        {"runtime": "llama.cpp -np 1", "slots": 1, "levels": [level(1, 70.0), level(16, 60.0)]},
        {"runtime": "llama.cpp -np 4", "slots": 4, "levels": [level(1, 69.0), level(16, 120.0)]},
        {"runtime": "llama.cpp -np 16", "slots": 16, "levels": [level(1, 65.0), level(16, 140.0)]},
    ]
    best = compare.best_per_level(runs)
    assert [(b["concurrency"], b["slots"], b["tokens_per_s"]) for b in best] == [
        (1, 1, 70.0),
        (16, 16, 140.0),
    ]
    assert best[1]["runtime"] == "llama.cpp -np 16"
    assert compare.best_per_level([]) == []


def test_the_table_names_llama_cpps_best_slots() -> None:
    runs = [
        {
            "runtime": "llama.cpp -np 4",
            "slots": 4,
            "load_before": "1.00 1.00 1.00",
            "load_after": "2.00 1.00 1.00",
            "levels": [
                {
                    **level(4, 100.4),
                    "requests": 8,
                    "ttft_p95_s": 0.2,
                    "e2e_p50_s": 1.0,
                    "e2e_p95_s": 1.5,
                }
            ],
        }
    ]
    table = compare.markdown(runs, compare.best_per_level(runs))
    assert "| llama.cpp -np 4 | 4 | 8 | 100.4 | 0.10 | 0.20 | 1.00 | 1.50 |" in table
    assert "| 4 | 4 | 100.4 | 0.10 | 1.00 |" in table


def figures(concurrency: int, tokens_per_s: float, ttft: float) -> dict[str, Any]:
    return {"concurrency": concurrency, "tokens_per_s": tokens_per_s, "ttft_p50_s": ttft}


def test_the_targets_hold_our_run_against_llama_cpps_best() -> None:
    ours = {"levels": [figures(1, 130.0, 0.04), figures(4, 300.0, 0.07),
                       figures(16, 450.0, 0.13)]}  # fmt: skip
    best = [figures(1, 140.0, 0.04), figures(4, 200.0, 0.12), figures(16, 300.0, 0.10)]
    verdicts = compare.target_verdicts(ours, best)
    assert [(v["concurrency"], v["figure"], v["met"]) for v in verdicts] == [
        (1, "tokens_per_s", False),  # 0.93x of llama.cpp's
        (4, "tokens_per_s", True),
        (16, "tokens_per_s", True),  # 1.5x against 1.2x
        (16, "ttft_p50_s", False),  # 0.13 s against 0.10: a higher TTFT misses
    ]
    assert verdicts[0]["ratio"] == pytest.approx(130 / 140)
    exactly = compare.target_verdicts({"levels": [figures(16, 360.0, 0.10)]}, best)
    assert [v["met"] for v in exactly] == [True, True]  # 1.2x and an equal TTFT count
    assert compare.target_verdicts({"levels": [figures(2, 1.0, 1.0)]}, best) == []
    table = compare.verdict_table("ours/transformers", verdicts)
    assert "| tok/s at 1 >= 1x | 130.0 | 140.0 | 0.93x | **no** |" in table
    assert "| TTFT p50 at 16 <= 1x | 0.13 s | 0.10 s | 1.30x | **no** |" in table
    assert "| tok/s at 16 >= 1.2x | 450.0 | 300.0 | 1.50x | yes |" in table


def test_every_other_repeat_runs_the_servers_in_reverse() -> None:
    planned = ["ours", "llama.cpp -np 4", "llama.cpp -np 16"]
    assert compare.repeat_order(planned, 0) == planned
    assert compare.repeat_order(planned, 1) == planned[::-1]
    assert compare.repeat_order(planned, 2) == planned
    assert compare.parse_args([]).repeat == 1
    assert compare.parse_args(["--repeat", "3"]).repeat == 3


def test_the_plan_lists_our_runs_with_their_arguments_before_any_llama_cpp() -> None:
    args = compare.parse_args(["--ours-args", "", "--ours-args", "--weights int8"])
    planned = compare.planned_servers(args, [])
    assert [(label, slots) for label, _, slots in planned] == [
        ("ours/transformers", None),
        ("ours/transformers --weights int8", None),
    ]
    command = planned[1][1]()  # built when the server starts, on a free port then
    assert command[-2:] == ["--weights", "int8"]
    assert 0 < int(command[command.index("--port") + 1]) < 65536


def test_llama_cpps_avx2_build_holds_our_servers_to_avx2_kernels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in compare.AVX2_KERNELS:
        monkeypatch.delenv(name, raising=False)
    native = compare.planned_servers(compare.parse_args(["--ours-args", ""]), [])
    assert native[0][1]()[0] != "env"  # this CPU's kernels: the command as it is
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2_VNNI")  # set by the user: it wins
    args = compare.parse_args(["--llama-isa", "avx2", "--vllm-python", "/vllm/bin/python"])
    for _, command, _ in compare.planned_servers(args, []):
        line = command()
        assert line[:4] == [
            "env", "ATEN_CPU_CAPABILITY=avx2", "ONEDNN_MAX_CPU_ISA=AVX2_VNNI",
            "FBGEMM_ENABLE_INSTRUCTIONS=AVX2",
        ]  # fmt: skip
        assert line[4].endswith("python")
        assert 0 < int(line[line.index("--port") + 1]) < 65536


# --- tools/llama_cpp_build.py ------------------------------------------------------------


def test_the_cache_folder_is_keyed_by_version_and_cpu_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path))
    avx2 = ["sse4_2", "avx2", "fma"]
    folder = build.cache_dir("0.3.36", avx2)
    assert folder.parent == tmp_path / "tools" / "llama.cpp"
    assert folder.name == f"0.3.36-{build.flags_digest(avx2)}"
    assert build.cache_dir("0.3.36", ["fma", "avx2", "sse4_2", "avx2"]) == folder
    assert build.cache_dir("0.3.37", avx2) != folder
    assert build.cache_dir("0.3.36", [*avx2, "avx512f"]) != folder
    assert build.cache_dir("0.3.36", avx2, tmp_path / "other").parent == tmp_path / "other"


def test_an_avx2_build_leaves_out_avx512_and_is_cached_apart_from_this_cpus() -> None:
    native = build.configure_command(Path("/src"), Path("/b"))
    avx2 = build.configure_command(Path("/src"), Path("/b"), "avx2")
    assert "-DGGML_NATIVE=ON" in native
    assert "-DGGML_NATIVE=OFF" in avx2
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON", "-DGGML_AVX512=OFF"} <= set(avx2)
    assert [f for f in avx2 if "GGML" not in f] == [f for f in native if "GGML" not in f]
    flags = ["avx2", "avx512f"]
    assert build.cache_dir("0.3.36", flags, Path("/c"), isa="avx2") == Path("/c/0.3.36-avx2")
    assert build.cache_dir("0.3.36", flags, Path("/c")) != Path("/c/0.3.36-avx2")
    assert compare.parse_args(["--llama-server", "--llama-isa", "avx2"]).llama_isa == "avx2"
    assert compare.parse_args([]).llama_isa == "native"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 fma\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n"
    )
    assert build.cpu_flags(cpuinfo) == ["fpu", "sse2", "avx2", "fma"]
    assert build.cpu_flags(tmp_path / "absent") == []


def test_a_build_folder_counts_only_with_an_executable_binary(tmp_path: Path) -> None:
    assert build.cached_binary(tmp_path) is None
    binary = tmp_path / build.BINARY
    binary.write_text("")
    assert build.cached_binary(tmp_path) is None
    os.chmod(binary, 0o755)
    assert build.cached_binary(tmp_path) == binary


def test_ldd_output_names_the_libraries_and_what_is_missing() -> None:
    text = (
        "\tlinux-vdso.so.1 (0x00007ffc1e9f0000)\n"
        "\tlibllama.so.0 => /tmp/b/build/bin/libllama.so.0 (0x00007f1f2a000000)\n"
        "\tlibggml-cpu.so.0 => not found\n"
        "\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f1f29c00000)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007f1f2a400000)\n"
    )
    assert build.parse_ldd(text) == {
        "libllama.so.0": Path("/tmp/b/build/bin/libllama.so.0"),
        "libggml-cpu.so.0": None,
        "libstdc++.so.6": Path("/lib/x86_64-linux-gnu/libstdc++.so.6"),
    }


def test_the_build_uses_the_briefed_cmake_flags_and_one_target() -> None:
    configure = build.configure_command(Path("/src"), Path("/b"))
    for flag in (
        "-DLLAMA_CURL=OFF",
        "-DGGML_NATIVE=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN",
    ):
        assert flag in configure
    assert build.build_command(Path("/b")) == [
        "cmake",
        "--build",
        "/b",
        "--target",
        "llama-server",
        "-j2",
    ]
