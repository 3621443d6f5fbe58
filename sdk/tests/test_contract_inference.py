"""The inference launch contract: every argv it builds is accepted by the real server CLI."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from kaito_sdk.contracts.inference import (
    ADAPTERS_MOUNT,
    CONFIG_FILE,
    DEFAULT_PORT,
    InferenceLaunch,
)

cli = pytest.importorskip("kaito_inference.cli", reason="kaito-inference is not installed")

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
launches = st.builds(
    InferenceLaunch,
    runtime=st.sampled_from(["transformers", "vllm"]),
    model=st.none() | names,
    served_model_name=st.none() | names,
    port=st.integers(1, 65535),
    adapters_dir=st.just(ADAPTERS_MOUNT),
    kaito_config_file=st.none() | st.just(CONFIG_FILE),
    instance_type=st.none() | st.sampled_from(["Standard_NC24ads_A100_v4", "p4d.24xlarge"]),
    max_model_len=st.none() | st.integers(16, 131072),
    extra_args=st.sampled_from([(), ("--dtype", "bfloat16"), ("--max-running", "8")]),
)


def parse(argv: list[str]) -> tuple[object, list[str]]:
    assert argv[0] == "kaito-inference"
    args, extra = cli.build_parser().parse_known_args(argv[1:])
    return cli.settings_from_args(args), extra


@given(launches)
def test_every_launch_parses_into_the_same_settings(launch: InferenceLaunch) -> None:
    settings, extra = parse(launch.to_argv())
    assert extra == []
    assert settings.runtime == launch.runtime
    assert settings.model == launch.model
    assert settings.served_model_name == launch.served_model_name
    assert settings.port == launch.port
    assert str(settings.adapters_dir) == launch.adapters_dir
    assert settings.instance_type == launch.instance_type
    assert settings.max_model_len == launch.max_model_len
    expected_config = launch.kaito_config_file
    assert (
        str(settings.kaito_config_file) if settings.kaito_config_file else None
    ) == expected_config


def test_defaults_are_kaitos_port_and_mount() -> None:
    argv = InferenceLaunch().to_argv()
    assert argv[:2] == ["kaito-inference", "serve"]
    settings, _ = parse(argv)
    assert settings.port == DEFAULT_PORT == 5000
    assert str(settings.adapters_dir) == "/mnt/adapter"
    assert settings.model is None


def test_vllm_passes_unknown_flags_through() -> None:
    launch = InferenceLaunch(runtime="vllm", extra_args=("--enable-prefix-caching",))
    _, extra = parse(launch.to_argv())
    assert extra == ["--enable-prefix-caching"]


def test_extra_args_must_be_flags() -> None:
    with pytest.raises(ValidationError, match="extra_args"):
        InferenceLaunch(extra_args=("serve",))
