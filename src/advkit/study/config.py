"""Loading the transfer study's experiment: a YAML file (or a dict, or a config) plus overrides, validated up front.

The format is described in :mod:`advkit.study.schema`; the checks live in :mod:`advkit.study.validate`. This
module is the one entry point, and re-exports the schema's names::

    cfg = load_config("examples/transfer_small.yaml", {"sample.n": 50})

A ``.json`` file is read as JSON, anything else as YAML. A key given twice in one mapping (two ``eps:`` lines, at
any level) is an error naming the key and both lines, never "the last one wins".
"""

from __future__ import annotations

import json
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
    """Read and validate an experiment: a YAML (or ``.json``) file path, a dict, or a config (re-validated with
    overrides).

    Args:
        source: the experiment.
        overrides: settings that replace the file's (``{"eps": ["8/255"], "sample.n": 50}``), e.g. from the CLI.

    Raises:
        ConfigError: every problem found, each naming its field (a key given twice in the file: the key and both
            lines).
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
        raw = _read_json(text, path) if path.suffix.lower() == ".json" else _read_yaml(text, path)
    return validate(apply_overrides(raw, overrides))


class _DuplicateKeys(ValueError):
    """Keys given twice in one mapping of an experiment file; ``problems`` holds one line per repeat."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last one silently).

    Before the document is built, every mapping is checked, and each repeat is named by its dotted path
    (``sample.n``, ``attacks[2].settings.gamma``) and both lines. Merge keys (``<<: *anchor``) are YAML's way to
    override a mapping and are not repeats.
    """

    reader = "YAML"

    def construct_document(self, node: yaml.Node) -> Any:
        problems: list[tuple[int, str]] = []
        self._check_keys(node, "", problems, set())
        if problems:
            raise _DuplicateKeys([p for _, p in sorted(problems)])
        return super().construct_document(node)

    def _check_keys(self, node: yaml.Node, path: str, problems: list[tuple[int, str]], done: set[int]) -> None:
        if id(node) in done:  # an alias of a node already checked
            return
        done.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._check_keys(v, f"{path}[{i}]", problems, done)
        if not isinstance(node, yaml.MappingNode):
            return
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            where = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the safe constructor explains it
                continue
            if first is None:
                seen[key] = line
            else:
                lines = f"lines {first} and {line}" if first != line else f"line {line}"
                problems.append((line, f"{where}: given twice, on {lines}; keep one ({self.reader} readers silently "
                                       f"keep the last)"))
            self._check_keys(value_node, where, problems, done)


class _UniqueKeyJsonLocator(_UniqueKeyLoader):
    """The same check, to find the lines of a repeated key in a JSON file (JSON's parser knows none)."""

    reader = "JSON"


def read_yaml_value(text: str, what: str) -> Any:
    """One YAML value given on a command line (``--set KEY=VALUE``), read like an experiment file: plain data
    only, and a key given twice inside it is a ``ConfigError`` naming ``what``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: plain data only
    except _DuplicateKeys as e:
        raise ConfigError([f"({what}) {p.split(';')[0]}; keep one" for p in e.problems]) from None


def _read_yaml(text: str, path: Path) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader) or {}  # a SafeLoader subclass: plain data only
    except _DuplicateKeys as e:
        raise ConfigError([f"(file {path}) {p}" for p in e.problems]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"(file {path}): not valid YAML: {e}"]) from e


def _read_json(text: str, path: Path) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise _DuplicateKeys([f"{k}: given twice in one object; keep one (JSON readers silently keep the last)"
                                  for k in twice])
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except _DuplicateKeys as e:
        problems = e.problems
    except json.JSONDecodeError as e:
        raise ConfigError([f"(file {path}): not valid JSON: {e}"]) from None
    try:  # valid JSON is YAML once its tabs (whitespace outside strings) are spaces: the lines come from there
        yaml.load(text.replace("\t", " "), Loader=_UniqueKeyJsonLocator)  # a SafeLoader subclass: plain data only
    except _DuplicateKeys as located:
        problems = located.problems
    except yaml.YAMLError:
        pass
    raise ConfigError([f"(file {path}) {p}" for p in problems])
