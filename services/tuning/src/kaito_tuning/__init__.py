"""kaito-tuning: the job behind every tuning Workspace (LoRA/QLoRA with PEFT and TRL)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
