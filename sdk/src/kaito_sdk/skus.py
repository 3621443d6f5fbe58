"""GPU instance types KAITO can place a Workspace on (Azure and AWS).

The figures follow KAITO's SKU tables (``pkg/sku/azure_sku_handler.go`` and
``aws_sku_handler.go``): GPU model, GPUs per node and memory per GPU in GiB, as the
cloud advertises it (A100 40/80, H100 80, H100 NVL 94, H200 141, A10/A10G/L4 24, L40S 48).
Only GPUs with compute capability 8.0 or newer are listed; KAITO dropped T4 and V100.
Fractional-GPU sizes (NVadsA10 v5 below a full A10) are not listed either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Cloud", "GpuSku", "find_sku", "list_skus"]


class Cloud(StrEnum):
    """The cloud that sells an instance type."""

    AZURE = "azure"
    AWS = "aws"


@dataclass(frozen=True, slots=True)
class GpuSku:
    """One GPU instance type: how many GPUs of which model, and their memory."""

    name: str
    """The instance type exactly as the cloud spells it (``Standard_NC24ads_A100_v4``)."""
    cloud: Cloud
    """The cloud that sells it."""
    gpu_model: str
    """NVIDIA GPU model (``A100``, ``H100 NVL``, ``A10G``...)."""
    gpu_count: int
    """GPUs per node."""
    gpu_memory_gib: int
    """Memory of one GPU, in GiB."""

    @property
    def total_gpu_memory_gib(self) -> int:
        """GPU memory of the whole node, in GiB."""
        return self.gpu_count * self.gpu_memory_gib


def _azure(name: str, gpu_model: str, count: int, memory: int) -> GpuSku:
    return GpuSku(name, Cloud.AZURE, gpu_model, count, memory)


def _aws(name: str, gpu_model: str, count: int, memory: int) -> GpuSku:
    return GpuSku(name, Cloud.AWS, gpu_model, count, memory)


_SKUS: tuple[GpuSku, ...] = (
    # Azure NVadsA10 v5 (whole GPUs only)
    _azure("Standard_NV36ads_A10_v5", "A10", 1, 24),
    _azure("Standard_NV36adms_A10_v5", "A10", 1, 24),
    _azure("Standard_NV72ads_A10_v5", "A10", 2, 24),
    # Azure NC A100 v4 and ND A100 v4
    _azure("Standard_NC24ads_A100_v4", "A100", 1, 80),
    _azure("Standard_NC48ads_A100_v4", "A100", 2, 80),
    _azure("Standard_NC96ads_A100_v4", "A100", 4, 80),
    _azure("Standard_ND96asr_v4", "A100", 8, 40),
    _azure("Standard_ND96amsr_A100_v4", "A100", 8, 80),
    # Azure NC H100 v5 (H100 NVL), ND H100 v5 and ND H200 v5
    _azure("Standard_NC40ads_H100_v5", "H100 NVL", 1, 94),
    _azure("Standard_NCC40ads_H100_v5", "H100 NVL", 1, 94),
    _azure("Standard_NC80adis_H100_v5", "H100 NVL", 2, 94),
    _azure("Standard_ND96isr_H100_v5", "H100", 8, 80),
    _azure("Standard_ND96isr_H200_v5", "H200", 8, 141),
    # AWS G5 (A10G)
    _aws("g5.xlarge", "A10G", 1, 24),
    _aws("g5.2xlarge", "A10G", 1, 24),
    _aws("g5.4xlarge", "A10G", 1, 24),
    _aws("g5.8xlarge", "A10G", 1, 24),
    _aws("g5.16xlarge", "A10G", 1, 24),
    _aws("g5.12xlarge", "A10G", 4, 24),
    _aws("g5.24xlarge", "A10G", 4, 24),
    _aws("g5.48xlarge", "A10G", 8, 24),
    # AWS G6 (L4)
    _aws("g6.xlarge", "L4", 1, 24),
    _aws("g6.2xlarge", "L4", 1, 24),
    _aws("g6.4xlarge", "L4", 1, 24),
    _aws("g6.8xlarge", "L4", 1, 24),
    _aws("g6.16xlarge", "L4", 1, 24),
    _aws("g6.12xlarge", "L4", 4, 24),
    _aws("g6.24xlarge", "L4", 4, 24),
    _aws("g6.48xlarge", "L4", 8, 24),
    # AWS G6e (L40S)
    _aws("g6e.xlarge", "L40S", 1, 48),
    _aws("g6e.2xlarge", "L40S", 1, 48),
    _aws("g6e.4xlarge", "L40S", 1, 48),
    _aws("g6e.8xlarge", "L40S", 1, 48),
    _aws("g6e.16xlarge", "L40S", 1, 48),
    _aws("g6e.12xlarge", "L40S", 4, 48),
    _aws("g6e.24xlarge", "L40S", 4, 48),
    _aws("g6e.48xlarge", "L40S", 8, 48),
    # AWS P4d/P4de (A100), P5 (H100), P5e/P5en (H200)
    _aws("p4d.24xlarge", "A100", 8, 40),
    _aws("p4de.24xlarge", "A100", 8, 80),
    _aws("p5.48xlarge", "H100", 8, 80),
    _aws("p5e.48xlarge", "H200", 8, 141),
    _aws("p5en.48xlarge", "H200", 8, 141),
)

_BY_NAME: dict[str, GpuSku] = {sku.name.lower(): sku for sku in _SKUS}


def find_sku(name: str) -> GpuSku | None:
    """The SKU called ``name`` (case-insensitive), or ``None`` when it is not in the catalog."""
    return _BY_NAME.get(name.strip().lower())


def list_skus() -> list[GpuSku]:
    """Every SKU in the catalog, Azure first, in catalog order."""
    return list(_SKUS)
