"""kaito-cli: the ``kaito`` command line (presets, SKUs, estimates, validation, ``kaito up``).

The commands are built on the SDK core (:mod:`kaito_sdk`); this package adds only the
terminal side (typer, rich) and ``kaito up``, which runs a Workspace's workload as local
processes of the services' console scripts. Other packages add subcommands through the
``kaito.cli`` entry-point group (the operator adds ``kaito render``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
