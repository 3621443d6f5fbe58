"""Image names and tags live once, in kaito_sdk.images: the charts and Dockerfiles agree.

Also checks the Dockerfiles' conventions that hadolint does not know about: a pinned
slim Python base, non-root uid 10001 in the final stage, OCI labels whose title and
version match kaito_sdk.images, an entrypoint that is the service's console script,
COPY sources that exist, and the build command documented in docs/images.md.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_sdk.images import IMAGE_REGISTRY, IMAGE_TAG, SERVICE_IMAGES, image_for

ROOT = Path(__file__).resolve().parents[2]
#: The workload images each chart's operator creates pods from.
CHART_WORKLOADS = {
    "kaito-workspace": ("inference", "tuning"),
    "kaito-ragengine": ("ragengine",),
}
BASE_IMAGE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def chart_values(chart: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((ROOT / "charts" / chart / "values.yaml").read_text())
    return values


@pytest.mark.parametrize("chart", sorted(CHART_WORKLOADS))
def test_chart_images_equal_the_sdk(chart: str) -> None:
    assert chart_values(chart)["images"] == {
        "registry": IMAGE_REGISTRY,
        "tag": IMAGE_TAG,
        "pullPolicy": "IfNotPresent",
        "operator": SERVICE_IMAGES["operator"],
    }


@pytest.mark.parametrize("chart", sorted(CHART_WORKLOADS))
def test_chart_version_follows_the_image_tag(chart: str) -> None:
    meta = yaml.safe_load((ROOT / "charts" / chart / "Chart.yaml").read_text())
    assert meta["appVersion"] == IMAGE_TAG
    assert meta["version"] == IMAGE_TAG


@pytest.mark.parametrize("chart", sorted(CHART_WORKLOADS))
def test_operator_runs_the_sdk_image(render: Any, chart: str) -> None:
    [deployment] = [o for o in render(chart) if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image_for("operator")


def test_every_service_image_is_run_by_a_chart() -> None:
    workloads = {s for services in CHART_WORKLOADS.values() for s in services}
    assert workloads | {"operator"} == set(SERVICE_IMAGES)


class Dockerfile:
    """A parsed Dockerfile: build-arg defaults and the instructions per stage."""

    def __init__(self, path: Path) -> None:
        text = re.sub(r"\\\n", " ", path.read_text())
        self.args: dict[str, str] = {}
        self.stages: list[list[tuple[str, str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            instruction, _, rest = line.partition(" ")
            instruction = instruction.upper()
            if instruction == "FROM":
                self.stages.append([])
            if instruction == "ARG" and "=" in rest:
                name, _, default = rest.partition("=")
                self.args.setdefault(name.strip(), default.strip().strip('"'))
            if self.stages:
                self.stages[-1].append((instruction, rest.strip()))

    def final(self, instruction: str) -> list[str]:
        """Arguments of ``instruction`` in the final stage."""
        return [rest for name, rest in self.stages[-1] if name == instruction]

    def all(self, instruction: str) -> list[str]:
        return [rest for stage in self.stages for name, rest in stage if name == instruction]


SERVICES = sorted(SERVICE_IMAGES)


@pytest.fixture(params=SERVICES)
def service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def dockerfile(service: str) -> Dockerfile:
    path = ROOT / "services" / service / "Dockerfile"
    assert path.is_file(), f"missing {path.relative_to(ROOT)}"
    return Dockerfile(path)


def test_base_image_is_pinned_and_multi_stage(service: str) -> None:
    parsed = dockerfile(service)
    assert len(parsed.stages) >= 2, "expected a builder stage and a final stage"
    assert BASE_IMAGE.match(parsed.args["PYTHON_IMAGE"]), parsed.args["PYTHON_IMAGE"]
    stages: list[str] = []  # a stage may start from an earlier one (deps, then code)
    for source in parsed.all("FROM"):
        image, *alias = source.split()
        assert image == "${PYTHON_IMAGE}" or image in stages, source
        stages += alias[1:]


def test_final_stage_runs_as_uid_10001(service: str) -> None:
    parsed = dockerfile(service)
    assert parsed.final("USER")[-1] == "10001:10001"
    [user_setup] = [run for run in parsed.final("RUN") if "useradd" in run]
    assert "--uid 10001" in user_setup


def test_final_stage_has_no_build_tools(service: str) -> None:
    final_runs = " ".join(dockerfile(service).final("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "pip wheel"):
        assert tool not in final_runs, f"final stage runs {tool!r}"


def test_labels_carry_name_version_and_source(service: str) -> None:
    parsed = dockerfile(service)
    labels = dict(
        re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', " ".join(parsed.final("LABEL")))
    )
    assert labels["org.opencontainers.image.title"] == SERVICE_IMAGES[service]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.source"] == "${SOURCE}"
    assert parsed.args["VERSION"] == IMAGE_TAG
    assert parsed.args["SOURCE"].startswith("https://")


def test_entrypoint_is_the_service_console_script(service: str) -> None:
    parsed = dockerfile(service)
    [entrypoint] = parsed.final("ENTRYPOINT")
    command = yaml.safe_load(entrypoint)[0]
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    assert command in project["project"]["scripts"]


def test_copy_sources_exist(service: str) -> None:
    for copy in dockerfile(service).all("COPY"):
        if copy.startswith("--from="):
            continue
        *sources, _dest = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


def test_healthcheck_where_it_applies(service: str) -> None:
    [healthcheck] = dockerfile(service).final("HEALTHCHECK")
    if service == "tuning":
        assert healthcheck == "NONE"
    else:
        path = "/healthz" if service == "operator" else "/health"
        assert "http://127.0.0.1:" in healthcheck
        assert f"{path}'" in healthcheck


def test_build_command_is_documented(service: str) -> None:
    docs = (ROOT / "docs" / "images.md").read_text()
    assert f"docker build -f services/{service}/Dockerfile" in docs
