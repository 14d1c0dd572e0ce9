"""Loading the transfer study's experiment: a YAML file (or a dict, or a config) plus overrides, validated up front.

The format is described in :mod:`advkit.study.schema`; the checks live in :mod:`advkit.study.validate`. This
module is the one entry point, and re-exports the schema's names::

    cfg = load_config("examples/transfer_small.yaml", {"sample.n": 50})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from advkit.study.errors import ConfigError
from advkit.study.schema import (
    AttackSpec,
    SampleSpec,
    StudyConfig,
    apply_overrides,
    eps_label,
    parse_alpha,
    parse_fraction,
)
from advkit.study.validate import validate

__all__ = ["AttackSpec", "ConfigError", "SampleSpec", "StudyConfig", "apply_overrides", "eps_label", "load_config",
           "parse_alpha", "parse_fraction", "validate"]


def load_config(source: str | Path | dict[str, Any] | StudyConfig,
                overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Read and validate an experiment: a YAML file path, a dict, or a config (re-validated with overrides).

    Args:
        source: the experiment.
        overrides: settings that replace the file's (``{"eps": ["8/255"], "sample.n": 50}``), e.g. from the CLI.

    Raises:
        ConfigError: every problem found, each naming its field.
        FileNotFoundError: the YAML file does not exist.
    """
    if isinstance(source, StudyConfig):
        raw = source.to_dict()
    elif isinstance(source, dict):
        raw = source
    else:
        path = Path(source)
        if path.is_dir():
            raise ConfigError([f"(file {path}): a folder, not an experiment file; give the YAML file's path"])
        if not path.exists():
            raise ConfigError([f"(file {path}): no such experiment file; check the path (examples/*.yaml holds "
                               f"examples)"])
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError([f"(file {path}): not UTF-8 text (byte {e.start}: {e.reason}); save the experiment "
                               f"file as UTF-8"]) from None
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError([f"(file {path}): not valid YAML: {e}"]) from e
    return validate(apply_overrides(raw, overrides))
