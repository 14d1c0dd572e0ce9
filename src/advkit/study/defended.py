"""Defended models in a transfer study: the experiment file's ``defence:`` form, seeded random defences, labels.

Input-transformation defences (JPEG, Guo et al., ICLR 2018; bit depth and median smoothing, Xu et al., NDSS 2018;
random resizing and padding, Xie et al., ICLR 2018; :mod:`advkit.defences`) are targets (or sources) like any model.

* **Mapping form.** ``{model: lenet, defence: jpeg}`` or ``{model: lenet, defence: {name: jpeg, quality: 50,
  bpda: true}}`` is normalised to the one spec :func:`advkit.models.load` takes,
  ``defended:jpeg[quality=50,bpda=true]:lenet``: settings in the defence's own order
  (:data:`advkit.defences.wrapper.DEFENCES`), a setting equal to its fixed default dropped, so the mapping, the
  string and a string with its settings in another order name the same cell and resumed runs match. Checked at
  file-load time, every problem reported (:func:`defended_entry`, :func:`canonical_spec`).
* **Random defences.** ``random_resize_pad`` draws from its transform's generator on every forward pass, so a
  study reseeds it before each use (:func:`study_predict`, :func:`reseed_for`) from ``(seed, spec, image index)``
  (:func:`draw_seed`): a top-level random defence is evaluated *per image*, each image transformed with its own
  draw, so predictions do not depend on batch size, batch order, resuming or what ran before; attacking through
  one (a source) reseeds before each attack batch from the index of the batch's first image.
* **Labels and order.** :func:`defence_label`: ``lenet + jpeg (q=75)``, the report's name for a defended model;
  :func:`order_targets` puts each defended target right after its undefended model, as transfer papers do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from advkit.defences import PREFIX, Defended, Transform, parse_name
from advkit.defences.wrapper import DEFENCES, resolve_settings
from advkit.models import frozen_eval

__all__ = ["RANDOM", "canonical_spec", "defence_label", "defended_entry", "draw_seed", "is_random", "order_targets",
           "reseed_for", "study_predict", "undefended_of"]

RANDOM = ("random_resize_pad",)
MAPPING_KEYS = {"model", "defence"}
_SHORT = {"quality": "q", "bits": "bits", "size": "size", "seed": "seed"}
_LOOSE = (3, 4096, 4096)  # a shape that passes the shape-dependent checks; the model's own are made at load time


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def _settings_problems(defence: str, settings: dict[str, Any], where: str) -> list[str]:
    """Every problem with ``settings`` of ``defence``, each setting checked on its own by
    :func:`~advkit.defences.wrapper.resolve_settings` (an unknown defence or setting reported at ``where``, listing
    the known ones; a bad value at ``where.key``)."""
    if defence not in DEFENCES:
        return [f"{where}: unknown defence {defence!r}; known: {', '.join(DEFENCES)}"]
    out = []
    for k, v in settings.items():
        try:
            resolve_settings(defence, {k: v}, _LOOSE, None)
        except ValueError as err:
            out.append(f"{where}{'.' + k if k in DEFENCES[defence] else ''}: {err}")
    return out


def _spec(defence: str, settings: dict[str, Any], inner: str) -> str:
    """The canonical string: settings in the defence's order, fixed defaults dropped."""
    known = DEFENCES[defence]
    kept = [(k, settings[k]) for k in known if k in settings and settings[k] != known[k]]
    body = defence + ("[" + ",".join(f"{k}={_text(v)}" for k, v in kept) + "]" if kept else "")
    return f"{PREFIX}{body}:{inner}"


def canonical_spec(spec: str, where: str, problems: list[str]) -> str | None:
    """A ``defended:`` string checked and rewritten canonically (see the module docstring), or ``None`` after
    appending what is wrong to ``problems``."""
    try:
        defence, settings, inner = parse_name(spec)
    except ValueError as err:
        problems.append(f"{where}: {err}")
        return None
    bad = _settings_problems(defence, settings, where)
    problems += bad
    return None if bad else _spec(defence, settings, inner)


def defended_entry(item: dict[str, Any], where: str, problems: list[str],
                   inner_entry: Callable[[Any, str, list[str]], str | None]) -> str | None:
    """``{model: M, defence: D}`` (``D`` a name or ``{name: D, setting: value, ...}``) as the canonical spec, or
    ``None`` after appending every problem to ``problems``. ``inner_entry`` reads the inner model (a name, or an
    ensemble mapping)."""
    bad: list[str] = []
    extra = sorted(set(item) - MAPPING_KEYS)
    if extra:
        bad.append(f"{where}: unknown key(s) {extra} (allowed: model, defence)")
    raw = item.get("defence")
    settings: dict[str, Any] = {}
    if isinstance(raw, dict):
        settings = {k: v for k, v in raw.items() if k != "name"}
        raw = raw.get("name")
    if not isinstance(raw, str) or not raw.strip():
        bad.append(f"{where}.defence: expected a defence name ({', '.join(DEFENCES)}) or {{name: jpeg, quality: "
                   f"75}}, got {item.get('defence')!r}")
    else:
        bad += _settings_problems(raw.strip(), settings, f"{where}.defence")
    inner = None
    if "model" not in item:
        bad.append(f"{where}.model: missing; give the model to defend (a name, or an ensemble)")
    else:
        inner = inner_entry(item["model"], f"{where}.model", bad)
    problems += bad
    if bad or inner is None or not isinstance(raw, str):
        return None
    return _spec(raw.strip(), settings, inner)


def defence_label(spec: str, names: dict[str, str] | None = None, resolved: dict[str, Any] | None = None
                  ) -> str | None:
    """How reports name a defended model, ``lenet + jpeg (q=75)`` (the inner model by its name in ``names``
    when given; the dataset-dependent settings, ``bits`` and ``size``, from the model's ``resolved`` settings
    when given); ``None`` for a spec that is not ``defended:``."""
    if not spec.startswith(PREFIX):
        return None
    try:
        defence, settings, inner = parse_name(spec)
    except ValueError:
        return None
    known, shown = DEFENCES.get(defence, {}), dict(settings)
    if defence == "jpeg":
        shown.setdefault("quality", known["quality"])
    for k, default in known.items():
        if default is None and resolved and k in resolved:
            shown.setdefault(k, resolved[k])
    parts = [f"{_SHORT.get(k, k)}={_text(v)}" for k, v in shown.items() if not isinstance(v, bool)]
    parts += [k.upper() if k == "bpda" else k.replace("_", " ") for k, v in shown.items() if v is True]
    parts += [f"no {k.replace('_', ' ')}" for k, v in shown.items() if v is False and known.get(k)]
    inner_name = (names or {}).get(inner, inner)
    return f"{inner_name} + {defence}" + (f" ({', '.join(parts)})" if parts else "")


def draw_seed(seed: int, spec: str, index: int) -> int:
    """The seed of a random defence's draw for image ``index`` of ``spec`` in a study seeded ``seed``."""
    h = hashlib.sha256(f"{int(seed)}|{spec}|{int(index)}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _random_transforms(model: nn.Module) -> list[Transform]:
    return [m for m in model.modules() if isinstance(m, Transform) and m.defence in RANDOM]


def is_random(model: nn.Module) -> bool:
    """Whether ``model`` contains a random defence (its outputs depend on its transforms' generators)."""
    return bool(_random_transforms(model))


def reseed_for(model: nn.Module, seed: int, spec: str, first: int) -> None:
    """Reseed every random defence inside ``model`` for the batch whose first image has index ``first``."""
    for k, t in enumerate(_random_transforms(model)):
        t.reseed(draw_seed(seed, f"{spec}#{k}", first))


def _per_image_logits(model: Defended, x: torch.Tensor, seed: int, spec: str, indices: Sequence[int]) -> torch.Tensor:
    """``model(x)`` with image ``i`` transformed by its own draw (``draw_seed(seed, spec, indices[i])``); the
    network runs once on the batch."""
    t = model.transform
    state = t.generator.get_state()
    try:
        parts = []
        for i, idx in enumerate(indices):
            t.reseed(draw_seed(seed, spec, idx))
            parts.append(t(x[i:i + 1]))
    finally:
        t.generator.set_state(state)
    return model.net(torch.cat(parts))  # type: ignore[no-any-return]


def study_predict(model: nn.Module, spec: str, x: torch.Tensor, *, seed: int, first: int = 0,
                  indices: Sequence[int] | None = None, batch_size: int = 256, device: str | None = None,
                  logits: bool = False) -> torch.Tensor:
    """Top-1 predictions ``(N,)`` (or the logits ``(N, K)`` on the CPU) of a study's model on pixels ``x``
    ``(N, C, H, W)``: every forward pass a study makes on a batch goes through here.

    A model with a random defence is reseeded from ``(seed, spec, image index)`` (index ``first + i`` of row ``i``,
    or ``indices[i]``): per image for a top-level random defence, per batch otherwise; other models are
    untouched, so their predictions are those of :func:`advkit.evaluate.metrics.predict`.
    """
    n = int(x.shape[0])
    idx = list(range(first, first + n)) if indices is None else [int(i) for i in indices]
    if len(idx) != n:
        raise ValueError(f"study_predict: {len(idx)} indices for {n} images")
    random = is_random(model)
    per_image = isinstance(model, Defended) and model.transform.defence in RANDOM
    out = []
    with torch.no_grad(), frozen_eval(model):
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size]
            if device is not None:
                xb = xb.to(device)
            if per_image:
                z = _per_image_logits(model, xb, seed, spec, idx[i:i + batch_size])  # type: ignore[arg-type]
            else:
                if random:
                    reseed_for(model, seed, spec, idx[i])
                z = model(xb)
            out.append(z.float().cpu() if logits else z.argmax(1).cpu())
    if not out:
        return torch.empty(0, dtype=torch.float32 if logits else torch.long)
    return torch.cat(out)


def undefended_of(name: str, models: dict[str, str]) -> str | None:
    """The name of the undefended model inside the defended model ``name`` (``models``: name -> spec, the
    records' ``meta.models``), or ``None`` when ``name`` is not defended or its inner model is not in ``models``."""
    spec = models.get(name, "")
    if not spec.startswith(PREFIX):
        return None
    try:
        inner = parse_name(spec)[2]
    except ValueError:
        return None
    return next((n for n, s in models.items() if s == inner), None)


def order_targets(targets: Sequence[str], models: dict[str, str]) -> list[str]:
    """``targets`` with each defended target moved right after its undefended model (when that is a target too),
    defended ones in their file order; the others keep theirs."""
    after: dict[str, list[str]] = {}
    for t in targets:
        inner = undefended_of(t, models)
        if inner is not None and inner in targets:
            after.setdefault(inner, []).append(t)
    moved = {t for ts in after.values() for t in ts}
    out: list[str] = []
    for t in targets:
        if t not in moved:
            out += [t, *after.get(t, [])]
    return out
