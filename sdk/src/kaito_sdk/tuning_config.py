"""KAITO's ``training_config.yaml`` (the tuning ConfigMap) as pydantic models.

The document has one top-level key, ``training_config``, holding up to six sections::

    training_config:
      ModelConfig:          # AutoModelForCausalLM.from_pretrained(...) arguments
      QuantizationConfig:   # transformers.BitsAndBytesConfig arguments
      LoraConfig:           # peft.LoraConfig arguments
      TrainingArguments:    # trl.SFTConfig / transformers.TrainingArguments arguments
      DatasetConfig:        # KAITO's own dataset options (closed set of keys)
      DataCollator:         # DataCollatorForLanguageModeling arguments

The sections that map onto Hugging Face classes accept any further key and pass it
through unchanged (:meth:`HFSection.hf_kwargs`); the tuning job hands them to the library
class, which rejects what it does not know. Any other section name is refused with the
list of allowed ones.

Rules (each error names the key and the rule):

* ``qlora`` needs ``load_in_4bit`` or ``load_in_8bit``; ``lora`` forbids both; both at
  once is always invalid;
* ``TrainingArguments.output_dir`` is a directory strictly under ``/mnt`` (a relative
  path is taken relative to ``/mnt``, as KAITO does; ``..`` cannot escape it);
* ``DatasetConfig.dataset_path`` is a relative path inside the input directory.

The operator's admission calls :func:`parse_training_config` on the ConfigMap text before
a Job is created; the tuning job calls it again on the mounted file.
"""

from __future__ import annotations

import posixpath
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CONFIG_FILE_NAME",
    "OUTPUT_BASE_DIR",
    "SECTION_NAMES",
    "DataCollatorSection",
    "DatasetSection",
    "HFSection",
    "LoraSection",
    "ModelSection",
    "QuantizationSection",
    "TrainingArgumentsSection",
    "TrainingConfig",
    "TuningConfigError",
    "TuningMethod",
    "parse_training_config",
    "resolve_output_dir",
]

#: Key of the training config inside the ConfigMap (and file name of the mounted file).
CONFIG_FILE_NAME: Final = "training_config.yaml"
#: Every output directory must lie under this directory.
OUTPUT_BASE_DIR: Final = "/mnt"
#: The section names KAITO accepts under ``training_config``, in document order.
SECTION_NAMES: Final = (
    "ModelConfig",
    "QuantizationConfig",
    "LoraConfig",
    "TrainingArguments",
    "DatasetConfig",
    "DataCollator",
)

TuningMethod = Literal["lora", "qlora"]

_TORCH_DTYPES: Final = frozenset(
    {"auto", "bfloat16", "float16", "float32", "float64", "half", "float", "double"}
)
_DATASET_EXTENSIONS: Final = ("csv", "json", "jsonl", "parquet", "arrow")


class TuningConfigError(ValueError):
    """An invalid training config; ``issues`` lists ``(key, rule)`` pairs.

    The key is a dotted path such as ``training_config.QuantizationConfig.load_in_4bit``.
    """

    def __init__(self, issues: list[tuple[str, str]]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{key}: {rule}" for key, rule in issues))


class HFSection(BaseModel):
    """A section mapped onto a Hugging Face class: unknown keys pass through unchanged."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())

    def hf_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the library class: declared fields and extras, no ``None``."""
        return {key: value for key, value in self.model_dump().items() if value is not None}


class ModelSection(HFSection):
    """``ModelConfig``: arguments of ``AutoModelForCausalLM.from_pretrained``."""

    pretrained_model_name_or_path: str | None = None
    """Model directory; when unset the job uses the Workspace's preset."""
    torch_dtype: str | None = None
    """Weights dtype: ``auto``, ``bfloat16``, ``float16``, ``float32``, ..."""
    local_files_only: bool = True
    """Never download: the job runs offline."""
    device_map: str | dict[str, Any] | None = "auto"
    """Accelerate device map."""
    trust_remote_code: bool = False
    """Whether to run model code shipped with the weights."""
    chat_template: str | None = None
    """A chat template (inline Jinja) overriding the tokenizer's."""

    @field_validator("torch_dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in _TORCH_DTYPES:
            raise ValueError(f"must be one of {', '.join(sorted(_TORCH_DTYPES))}")
        return value


class QuantizationSection(HFSection):
    """``QuantizationConfig``: arguments of ``transformers.BitsAndBytesConfig``."""

    load_in_4bit: bool = False
    """Load the base model in 4-bit (QLoRA)."""
    load_in_8bit: bool = False
    """Load the base model in 8-bit."""
    bnb_4bit_quant_type: Literal["fp4", "nf4"] | None = None
    """4-bit data type."""
    bnb_4bit_compute_dtype: str | None = None
    """Compute dtype of 4-bit layers."""
    bnb_4bit_use_double_quant: bool | None = None
    """Quantise the quantisation constants too."""

    @model_validator(mode="after")
    def _one_bit_width(self) -> QuantizationSection:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit cannot both be true")
        return self

    @property
    def quantized(self) -> bool:
        """Whether the base model is loaded quantised (4- or 8-bit)."""
        return self.load_in_4bit or self.load_in_8bit


class LoraSection(HFSection):
    """``LoraConfig``: arguments of ``peft.LoraConfig``."""

    r: int = Field(default=8, gt=0)
    """Rank of the update matrices."""
    lora_alpha: float = Field(default=8, gt=0)
    """Scaling numerator (``lora_alpha / r``)."""
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] | str | None = None
    """Modules to adapt; PEFT picks per-architecture defaults when unset."""
    bias: Literal["none", "all", "lora_only"] = "none"
    """Which biases are trained."""
    task_type: str = "CAUSAL_LM"
    """PEFT task type."""


class TrainingArgumentsSection(HFSection):
    """``TrainingArguments``: arguments of ``trl.SFTConfig`` (a ``TrainingArguments``)."""

    output_dir: str = "/mnt/results"
    """Where the adapter and checkpoints go; strictly under ``/mnt``."""
    per_device_train_batch_size: int = Field(default=1, ge=1)
    """Batch size per device."""
    num_train_epochs: float = Field(default=3.0, gt=0)
    """Epochs, when ``max_steps`` is not set."""
    max_steps: int = Field(default=-1, ge=-1)
    """Total optimiser steps; -1 uses ``num_train_epochs``."""
    save_strategy: Literal["no", "steps", "epoch", "best"] = "no"
    """When checkpoints are written (a restarted job resumes from the last one)."""
    ddp_find_unused_parameters: bool = False
    """Distributed-training option KAITO sets to false."""
    packing: bool = False
    """Pack several short examples into one sequence (TRL)."""

    @field_validator("output_dir")
    @classmethod
    def _under_mnt(cls, value: str) -> str:
        resolved = resolve_output_dir(value)
        if resolved == OUTPUT_BASE_DIR or not resolved.startswith(OUTPUT_BASE_DIR + "/"):
            raise ValueError(
                f"must be a directory under {OUTPUT_BASE_DIR}/ (got {value!r}, "
                f"which resolves to {resolved!r})"
            )
        return value

    @property
    def resolved_output_dir(self) -> str:
        """``output_dir`` as an absolute, normalised path under ``/mnt``."""
        return resolve_output_dir(self.output_dir)


class DatasetSection(BaseModel):
    """``DatasetConfig``: KAITO's dataset options (a closed set of keys)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    dataset_path: str | None = None
    """A file or directory relative to the input directory; all files when unset."""
    dataset_extension: Literal["csv", "json", "jsonl", "parquet", "arrow"] | None = None
    """File format, when it cannot be told from the file names."""
    shuffle_dataset: bool = True
    """Shuffle before splitting."""
    shuffle_seed: int = 42
    """Seed of the shuffle."""
    context_column: str | None = None
    """Prompt column of prompt/response data."""
    response_column: str = "text"
    """Response column, or the whole text when there is no context column."""
    messages_column: str | None = None
    """Column of conversational ``[{role, content}, ...]`` data."""
    train_test_split: float = Field(default=0.8, gt=0.0, le=1.0)
    """Fraction of rows used for training (1 trains on everything)."""

    @field_validator("dataset_path")
    @classmethod
    def _relative_inside(cls, value: str | None) -> str | None:
        if value is None:
            return None
        normalised = posixpath.normpath(value)
        if posixpath.isabs(value) or normalised == ".." or normalised.startswith("../"):
            raise ValueError(f"must be a relative path inside the input directory (got {value!r})")
        return value


class DataCollatorSection(HFSection):
    """``DataCollator``: arguments of ``DataCollatorForLanguageModeling``."""

    mlm: bool = True
    """Masked-LM; turned off by the job when the tokenizer has no mask token (causal LMs)."""
    mlm_probability: float = Field(default=0.15, gt=0.0, lt=1.0)
    """Share of tokens masked when ``mlm`` is on."""


class TrainingConfig(BaseModel):
    """The ``training_config`` mapping: six optional sections, nothing else."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    model_args: ModelSection = Field(default_factory=ModelSection, alias="ModelConfig")
    """``ModelConfig``."""
    quantization: QuantizationSection = Field(
        default_factory=QuantizationSection, alias="QuantizationConfig"
    )
    """``QuantizationConfig``."""
    lora: LoraSection = Field(default_factory=LoraSection, alias="LoraConfig")
    """``LoraConfig``."""
    training: TrainingArgumentsSection = Field(
        default_factory=TrainingArgumentsSection, alias="TrainingArguments"
    )
    """``TrainingArguments``."""
    dataset: DatasetSection = Field(default_factory=DatasetSection, alias="DatasetConfig")
    """``DatasetConfig``."""
    collator: DataCollatorSection = Field(default_factory=DataCollatorSection, alias="DataCollator")
    """``DataCollator``."""

    @model_validator(mode="before")
    @classmethod
    def _known_sections(cls, data: Any) -> Any:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError("must be a mapping of sections")
        unknown = [str(key) for key in data if key not in SECTION_NAMES]
        if unknown:
            raise ValueError(
                f"unknown section(s) {', '.join(unknown)}; "
                f"allowed sections: {', '.join(SECTION_NAMES)}"
            )
        return {key: ({} if value is None else value) for key, value in data.items()}

    def method_issues(self, method: TuningMethod) -> list[tuple[str, str]]:
        """The ``(key, rule)`` problems of this config for a tuning ``method``."""
        key = "training_config.QuantizationConfig"
        if method == "lora" and self.quantization.quantized:
            return [
                (
                    key,
                    "method 'lora' forbids load_in_4bit and load_in_8bit "
                    "(use method 'qlora' for a quantised base model)",
                )
            ]
        if method == "qlora" and not self.quantization.quantized:
            return [(key, "method 'qlora' needs load_in_4bit or load_in_8bit set to true")]
        return []


def resolve_output_dir(value: str) -> str:
    """Resolve ``output_dir`` the way KAITO does: relative paths are under ``/mnt``."""
    joined = value if posixpath.isabs(value) else posixpath.join(OUTPUT_BASE_DIR, value)
    return posixpath.normpath(joined)


def parse_training_config(text: str, *, method: str | None = None) -> TrainingConfig:
    """Parse and check the YAML text of ``training_config.yaml``.

    ``method`` (``lora`` or ``qlora``, any case) enables the quantisation rules; ``None``
    checks only the method-independent ones. Raises :class:`TuningConfigError`.
    """
    method_name: TuningMethod | None = None
    if method is not None:
        lowered = method.lower()
        if lowered == "lora":
            method_name = "lora"
        elif lowered == "qlora":
            method_name = "qlora"
        else:
            raise TuningConfigError([("method", f"must be lora or qlora (got {method!r})")])
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TuningConfigError([(CONFIG_FILE_NAME, f"is not valid YAML: {exc}")]) from None
    if not isinstance(document, dict) or "training_config" not in document:
        raise TuningConfigError(
            [("training_config", "required top-level key (a mapping of sections)")]
        )
    extra_keys = [str(key) for key in document if key != "training_config"]
    if extra_keys:
        raise TuningConfigError(
            [(key, "unknown top-level key; only training_config is allowed") for key in extra_keys]
        )
    try:
        config = TrainingConfig.model_validate(document["training_config"])
    except ValidationError as exc:
        raise TuningConfigError(_issues(exc)) from None
    if method_name is not None:
        issues = config.method_issues(method_name)
        if issues:
            raise TuningConfigError(issues)
    return config


def _issues(exc: ValidationError) -> list[tuple[str, str]]:
    issues = []
    for error in exc.errors(include_url=False):
        key = ".".join(["training_config", *(str(part) for part in error["loc"])])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(DatasetSection.model_fields)
            message = f"unknown key; allowed keys: {allowed}"
        issues.append((key, message))
    return issues
