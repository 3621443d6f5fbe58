"""CustomResourceDefinitions generated from the :mod:`kaito_sdk.api` models.

``build_crd(Workspace)`` gives the ``apiextensions.k8s.io/v1`` CRD as a dict;
``python -m kaito_sdk.crd write charts/`` writes every CRD file into the charts and
``python -m kaito_sdk.crd check charts/`` fails when a file has drifted.
"""

from kaito_sdk.crd.build import build_crd
from kaito_sdk.crd.files import CRD_FILES, HEADER, CrdFile, check_files, render_crd, write_files
from kaito_sdk.crd.schema import StructuralSchemaError, structural_schema

__all__ = [
    "CRD_FILES",
    "HEADER",
    "CrdFile",
    "StructuralSchemaError",
    "build_crd",
    "check_files",
    "render_crd",
    "structural_schema",
    "write_files",
]
