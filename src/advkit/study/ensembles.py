"""Ensembles of surrogates in a transfer study: the experiment file's mapping form and the hold-out protocol.

A source or target may be written as a mapping (``{ensemble: [A, B, C], fuse: logits, weights: [1, 2, 1]}``;
``fuse`` and ``weights`` optional). It is normalised to one string, the study's spec of that model, so that cells,
records and resumed runs name it the same way whichever way it was written:

* without weights, the name :func:`advkit.models.load` takes: ``ensemble:A+B+C`` (``@probs`` / ``@loss``
  appended for those fuses; ``@logits`` is the default and is dropped, as in :class:`~advkit.models.Ensemble`'s
  own name), so ``{ensemble: [A, B]}`` and ``ensemble:A+B`` are the same model;
* with weights, that name followed by the weights in brackets, ``ensemble:A+B+C@logits[1,2,1]`` (the fuse always
  written), which :func:`advkit.models.load` (and so ``advkit attack``) takes as well.

``holdout: true`` (Liu et al., ICLR 2017; Tramer et al., ICLR 2018): for each model of ``targets``, the source is
the ensemble of all the *other* targets (:func:`holdout_sources`), and that target alone is evaluated on its
examples (with the ensemble itself, for white-box success).

A defended model, ``{model: A, defence: jpeg}`` or ``{model: A, defence: {name: jpeg, quality: 50}}``, becomes
``defended:jpeg[quality=50]:A`` (:mod:`advkit.study.defended`; ``A`` may be an ensemble mapping or name).
"""

from __future__ import annotations

import re
from typing import Any

from advkit.defences import PREFIX as DEFENDED
from advkit.models.ensemble import FUSES, PREFIX, is_ensemble_name, parse_name, split_weights
from advkit.study.defended import canonical_spec, defended_entry

__all__ = ["holdout_label", "holdout_sources", "member_stems", "model_entry", "split_weights"]

MAPPING_KEYS = {"ensemble", "fuse", "weights"}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _weights_text(weights: list[Any]) -> str:
    return ",".join(f"{float(w):g}" for w in weights)


def model_entry(item: Any, where: str, problems: list[str]) -> str | None:
    """One entry of ``sources`` / ``targets`` as the study's spec string (see the module docstring), or ``None``
    after appending what is wrong to ``problems``."""
    if isinstance(item, str) and item.strip():
        spec = item.strip()
        if spec.startswith(DEFENDED):  # checked and written canonically (advkit.study.defended)
            return canonical_spec(spec, where, problems)
        if is_ensemble_name(spec):
            try:
                split_weights(spec)
            except ValueError as err:
                problems.append(f"{where}: {err}")
                return None
        return spec
    if not isinstance(item, dict):
        problems.append(f"{where}: expected a model name or path, {{ensemble: [A, B], fuse: logits}} or "
                        f"{{model: A, defence: jpeg}}, got {item!r}")
        return None
    if "defence" in item:  # {model: A, defence: jpeg | {name: jpeg, quality: 50}} (advkit.study.defended)
        return defended_entry(item, where, problems, model_entry)
    extra = set(item) - MAPPING_KEYS
    members, fuse, weights = item.get("ensemble"), item.get("fuse", "logits"), item.get("weights")
    bad = []
    if extra:
        bad.append(f"unknown key(s) {sorted(extra)} (allowed: ensemble, fuse, weights)")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, str) and m.strip()
                                                                    for m in members):
        bad.append(f"ensemble: expected a list of two or more model names, got {members!r}")
    if fuse not in FUSES:
        bad.append(f"fuse: expected one of {', '.join(FUSES)}, got {fuse!r}")
    if weights is not None and (not isinstance(weights, list) or not all(_number(w) and w >= 0 for w in weights)
                                or not isinstance(members, list) or len(weights) != len(members)
                                or not sum(weights) > 0):
        bad.append(f"weights: expected one number >= 0 per member (not all 0), got {weights!r}")
    if bad:
        problems += [f"{where}.{b}" if not b.startswith("unknown") else f"{where}: {b}" for b in bad]
        return None
    assert isinstance(members, list)
    body = PREFIX + "+".join(m.strip() for m in members)
    if weights is not None:
        return f"{body}@{fuse}[{_weights_text(weights)}]"
    return body + ("" if fuse == "logits" else f"@{fuse}")


def member_stems(spec: str) -> list[str]:
    """The members of an ensemble spec, each shortened to its file stem (``/zoo/tres.safetensors`` -> ``tres``)."""
    members, _ = parse_name(split_weights(spec)[0])
    return [re.sub(r"\.safetensors$", "", m.replace("\\", "/").rsplit("/", 1)[-1]) for m in members]


def holdout_sources(targets: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``{source: held-out target}``: for each target, the ensemble of all the other targets (in file order).

    Raises:
        ValueError: fewer than three targets (a hold-out ensemble needs two members).
    """
    if len(targets) < 3:
        raise ValueError(f"holdout: needs at least three targets (each target's hold-out ensemble has all the "
                         f"others, and an ensemble needs two members), got {len(targets)}")
    out = {}
    for t in targets:
        others = [o for o in targets if o != t]
        nested = [o for o in others if is_ensemble_name(o)]
        if nested:
            raise ValueError(f"holdout: target {nested[0]!r} is itself an ensemble; list single models as targets")
        out[PREFIX + "+".join(others)] = t
    return out


def holdout_label(target_name: str) -> str:
    """How reports name a hold-out source: ``hold-out ensemble (all but X)``."""
    return f"hold-out ensemble (all but {target_name})"
