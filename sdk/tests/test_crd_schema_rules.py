"""The schema-only rules of the CRDs agree with the SDK's own validation."""

from __future__ import annotations

import re

import pytest

from kaito_sdk.api.workspace import CONFIG_MAP_NAME_SCHEMA, TUNING_METHOD_SCHEMA
from kaito_sdk.validation.errors import dns1123_subdomain_problem
from kaito_sdk.validation.workspace import TUNING_METHODS


@pytest.mark.parametrize(
    "name",
    ["cfg", "my-config", "a.b-c.d", "0", "Bad_Name", "-lead", "trail-", "a..b", "UPPER", "a" * 254],
)
def test_config_map_name_pattern_is_the_sdk_rule(name: str) -> None:
    pattern = re.compile(CONFIG_MAP_NAME_SCHEMA["pattern"])
    by_schema = bool(pattern.match(name)) and len(name) <= CONFIG_MAP_NAME_SCHEMA["maxLength"]
    assert by_schema == (dns1123_subdomain_problem(name) is None)


@pytest.mark.parametrize("method", ["lora", "qlora", "LoRA", "QLORA", "full", "lora2", ""])
def test_tuning_method_pattern_is_the_sdk_rule(method: str) -> None:
    by_schema = bool(re.match(TUNING_METHOD_SCHEMA["pattern"], method))
    assert by_schema == (method.lower() in TUNING_METHODS)
