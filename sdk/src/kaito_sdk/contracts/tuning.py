"""How the operator launches ``kaito-tuning``: command lines, mount paths, file names.

A tuning Job has up to two containers built from these:

* ``fetch`` (an init container, for ``tuning.input.urls``):
  :func:`fetch_argv` downloads the URLs into :data:`DATA_DIR`;
* ``run`` (the main container): :func:`run_argv` trains on :data:`DATA_DIR` with the
  config mounted at :data:`CONFIG_PATH` (the ConfigMap's ``training_config.yaml`` key)
  and writes the adapter to the output directory (the config's
  ``TrainingArguments.output_dir``, :data:`RESULTS_DIR` by default), then writes
  :data:`COMPLETION_MARKER`. With ``tuning.output.image`` it also pushes the adapter to
  that reference, with the ``imagePushSecret`` (a ``kubernetes.io/dockerconfigjson``
  Secret) mounted at :data:`DOCKER_CONFIG_DIR`.

``kaito-tuning``'s own test parses every argv produced here with its real CLI parser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from kaito_sdk.tuning_config import CONFIG_FILE_NAME, TuningMethod

__all__ = [
    "ADAPTER_FILES",
    "COMMAND",
    "COMPLETION_MARKER",
    "CONFIG_DIR",
    "CONFIG_FILE_NAME",
    "CONFIG_PATH",
    "DATA_DIR",
    "DOCKER_CONFIG_DIR",
    "DOCKER_CONFIG_FILE",
    "DOCKER_CONFIG_PATH",
    "METRICS_PORT",
    "RESULTS_DIR",
    "fetch_argv",
    "run_argv",
]

#: The console script in the tuning image.
COMMAND: Final = "kaito-tuning"
#: Where the dataset lives (URL downloads, the image puller's copy, or the volume).
DATA_DIR: Final = "/mnt/data"
#: Where the training-config ConfigMap is mounted.
CONFIG_DIR: Final = "/mnt/config"
#: The mounted config file (the ConfigMap key is :data:`CONFIG_FILE_NAME`).
CONFIG_PATH: Final = f"{CONFIG_DIR}/{CONFIG_FILE_NAME}"
#: Default output directory (KAITO's template ``output_dir``).
RESULTS_DIR: Final = "/mnt/results"
#: Written into the output directory, last, once the adapter is saved (KAITO's sentinel).
COMPLETION_MARKER: Final = "fine_tuning_completed.txt"
#: The adapter files the job leaves in the output directory (and pushes under ``/data``).
ADAPTER_FILES: Final = ("adapter_config.json", "adapter_model.safetensors")
#: Where the ``imagePushSecret`` is mounted.
DOCKER_CONFIG_DIR: Final = "/mnt/docker-config"
#: Key of a ``kubernetes.io/dockerconfigjson`` Secret (the docker config file).
DOCKER_CONFIG_FILE: Final = ".dockerconfigjson"
#: The docker config file ``run --push`` reads credentials from.
DOCKER_CONFIG_PATH: Final = f"{DOCKER_CONFIG_DIR}/{DOCKER_CONFIG_FILE}"
#: Port of the Prometheus ``/metrics`` endpoint while training.
METRICS_PORT: Final = 5000


def run_argv(
    *,
    method: TuningMethod,
    preset: str | None = None,
    model_dir: str | None = None,
    config_path: str = CONFIG_PATH,
    input_dir: str = DATA_DIR,
    output_dir: str = RESULTS_DIR,
    push_image: str | None = None,
    docker_config: str = DOCKER_CONFIG_PATH,
) -> list[str]:
    """Argv of the main container: train ``method`` on the preset (or a model directory).

    ``push_image`` (``tuning.output.image``) adds the push of the adapter with the
    credentials in ``docker_config``.
    """
    if (preset is None) == (model_dir is None):
        raise ValueError("exactly one of preset and model_dir must be given")
    argv = [COMMAND, "run", "--method", method]
    argv += ["--preset", preset] if preset is not None else ["--model", str(model_dir)]
    argv += ["--config", config_path, "--input", input_dir, "--output", output_dir]
    if push_image is not None:
        argv += ["--push", push_image, "--docker-config", docker_config]
    return argv


def fetch_argv(urls: Sequence[str], *, dest: str = DATA_DIR) -> list[str]:
    """Argv of the download init container for ``tuning.input.urls``."""
    if not urls:
        raise ValueError("fetch needs at least one URL")
    argv = [COMMAND, "fetch"]
    for url in urls:
        argv += ["--url", url]
    return [*argv, "--dest", dest]
