"""The GPU SKU catalog: lookups and the figures other modules rely on."""

from __future__ import annotations

import pytest

from kaito_sdk.skus import Cloud, GpuSku, find_sku, list_skus


@pytest.mark.parametrize(
    ("name", "cloud", "gpu_model", "count", "memory"),
    [
        ("Standard_NV36ads_A10_v5", Cloud.AZURE, "A10", 1, 24),
        ("Standard_NC24ads_A100_v4", Cloud.AZURE, "A100", 1, 80),
        ("Standard_NC48ads_A100_v4", Cloud.AZURE, "A100", 2, 80),
        ("Standard_NC96ads_A100_v4", Cloud.AZURE, "A100", 4, 80),
        ("Standard_ND96asr_v4", Cloud.AZURE, "A100", 8, 40),
        ("Standard_ND96amsr_A100_v4", Cloud.AZURE, "A100", 8, 80),
        ("Standard_NC40ads_H100_v5", Cloud.AZURE, "H100 NVL", 1, 94),
        ("Standard_NC80adis_H100_v5", Cloud.AZURE, "H100 NVL", 2, 94),
        ("Standard_ND96isr_H100_v5", Cloud.AZURE, "H100", 8, 80),
        ("Standard_ND96isr_H200_v5", Cloud.AZURE, "H200", 8, 141),
        ("g5.xlarge", Cloud.AWS, "A10G", 1, 24),
        ("g5.12xlarge", Cloud.AWS, "A10G", 4, 24),
        ("g5.48xlarge", Cloud.AWS, "A10G", 8, 24),
        ("g6.12xlarge", Cloud.AWS, "L4", 4, 24),
        ("g6e.48xlarge", Cloud.AWS, "L40S", 8, 48),
        ("p4d.24xlarge", Cloud.AWS, "A100", 8, 40),
        ("p4de.24xlarge", Cloud.AWS, "A100", 8, 80),
        ("p5.48xlarge", Cloud.AWS, "H100", 8, 80),
        ("p5e.48xlarge", Cloud.AWS, "H200", 8, 141),
        ("p5en.48xlarge", Cloud.AWS, "H200", 8, 141),
    ],
)
def test_known_skus_have_published_figures(
    name: str, cloud: Cloud, gpu_model: str, count: int, memory: int
) -> None:
    sku = find_sku(name)
    assert sku == GpuSku(name, cloud, gpu_model, count, memory)
    assert sku.total_gpu_memory_gib == count * memory


def test_lookup_ignores_case_and_surrounding_space() -> None:
    sku = find_sku("  standard_nd96ASR_v4 ")
    assert sku is not None
    assert sku.name == "Standard_ND96asr_v4"


@pytest.mark.parametrize("name", ["Standard_NC6s_v3", "Standard_NC4as_T4_v3", "m5.large", ""])
def test_unknown_or_dropped_skus_are_absent(name: str) -> None:
    # V100 (NC6s_v3) and T4 (NC4as_T4_v3) are below compute capability 8.0: KAITO dropped them.
    assert find_sku(name) is None


def test_catalog_names_are_unique_and_cover_both_clouds() -> None:
    skus = list_skus()
    assert len({s.name.lower() for s in skus}) == len(skus)
    assert {s.cloud for s in skus} == {Cloud.AZURE, Cloud.AWS}
    assert all(s.gpu_count >= 1 and s.gpu_memory_gib >= 24 for s in skus)
