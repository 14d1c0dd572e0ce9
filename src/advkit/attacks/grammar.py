"""The name grammar: ``create("sgm+mi+di", eps=16/255, gamma=0.2)``.

A name is ``+``-joined tokens. At most one base: ``fgsm`` (one step of size eps, Goodfellow et al. 2015),
``ifgsm`` / ``bim`` (iterative FGSM, Kurakin et al. 2017; the default base) or ``pgd`` (random start, Madry et
al. 2018). Any of the modifiers: ``mi`` (momentum, Dong et al. 2018), ``di`` (input diversity, Xie et al. 2019),
``ti`` (translation-invariant smoothing, Dong et al. 2019), ``sgm`` (skip gradient, Wu et al. 2020). Standalone
attacks such as ``jsma`` are looked up by their own name.

Each token brings the paper's defaults; keyword arguments override them and must belong to a token in the name
(``gamma`` without ``sgm`` is an error rather than a silent no-op).
"""

from __future__ import annotations

from typing import Any

from advkit.attacks.base import Attack
from advkit.attacks.engine import Iterative
from advkit.attacks.registry import register_part, standalone

# Common keyword arguments of every iterative attack.
COMMON = {"eps", "steps", "alpha", "norm", "loss"}

# token -> (defaults it brings, keyword arguments it owns, aliases mapping user names to fields)
TOKENS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "fgsm": ({"steps": 1}, set()),
    "ifgsm": ({}, set()),
    "bim": ({}, set()),
    "pgd": ({"random_init": True}, {"random_init"}),
    "mi": ({"decay": 1.0}, {"decay"}),
    "di": ({"di_prob": 0.5, "di_resize_rate": 1.1}, {"di_prob", "di_resize_rate"}),
    "ti": ({"ti_kernel": 15, "ti_nsig": 3.0}, {"ti_kernel", "ti_nsig"}),
    # SGM brings only its decay, "auto" by default: the zoo card's tuned gamma, else the authors' 0.2 for ResNet
    # sources and 0.5 for DenseNets (see Iterative.gamma). The step
    # schedule stays the base attack's so that "ifgsm" and "sgm" differ in SGM alone; the authors' schedule
    # (eps 16/255, 10 steps of 2/255) is create("sgm", eps=16/255, steps=10, alpha=2/255).
    "sgm": ({"gamma": "auto"}, {"gamma", "sgm_variant"}),
}
BASES = ("fgsm", "ifgsm", "bim", "pgd")
# Friendlier keyword names accepted by create().
ALIASES = {"momentum": "decay", "mu": "decay", "prob": "di_prob", "p": "di_prob", "resize_rate": "di_resize_rate",
           "kernel_size": "ti_kernel", "nsig": "ti_nsig", "variant": "sgm_variant", "random_start": "random_init"}

for _tok in TOKENS:
    register_part(_tok, Iterative)


def parse(name: str) -> list[str]:
    """Split and check a composed name; returns the tokens in canonical order (base first)."""
    tokens = [t.strip().lower() for t in name.split("+")]
    if any(not t for t in tokens):
        raise ValueError(f"empty part in attack name {name!r}; write parts joined by '+', e.g. 'sgm+mi+di'")
    unknown = [t for t in tokens if t not in TOKENS]
    if unknown:
        known = sorted(set(TOKENS) | set(standalone()))
        raise ValueError(f"unknown attack part(s) {unknown} in {name!r}; known: {', '.join(known)}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"attack name {name!r} repeats a part")
    bases = [t for t in tokens if t in BASES]
    if len(bases) > 1:
        raise ValueError(f"attack name {name!r} has more than one base ({', '.join(bases)}); pick one")
    base = bases[0] if bases else "ifgsm"
    mods = [t for t in ("sgm", "mi", "di", "ti") if t in tokens]
    return [base, *mods]


def create(name: str, **kwargs: Any) -> Attack:
    """Build an attack from its name and keyword arguments.

    Args:
        name: a standalone attack (``"jsma"``) or a composition (``"pgd"``, ``"sgm+mi+di"``, ...).
        **kwargs: the attack's settings; eps and step sizes are in pixel units of ``[0, 1]`` (``16/255``).

    Returns:
        A frozen attack; call it as ``attack(model, x, y, target=None, generator=g)``.

    Raises:
        ValueError: unknown name or part, a setting that no part of the name uses, or an invalid value.
    """
    key = name.strip().lower()
    solo = standalone()
    if key in solo:
        return solo[key](**kwargs)
    tokens = parse(key)
    config: dict[str, Any] = {}
    owned = set(COMMON)
    for t in tokens:
        defaults, own = TOKENS[t]
        config.update(defaults)
        owned |= own | set(defaults)
    for k, v in kwargs.items():
        field = ALIASES.get(k, k)
        if field not in owned:
            raise ValueError(f"{k!r} does not apply to {name!r} (its settings: {', '.join(sorted(owned))})")
        config[field] = v
    if tokens[0] == "fgsm":
        if config.get("steps", 1) != 1:
            raise ValueError("fgsm is a single step; use 'ifgsm' for several steps")
        config.setdefault("alpha", None)
        if config["alpha"] is None:
            config["alpha"] = config.get("eps", 8 / 255)
    return Iterative(label="+".join(t for t in tokens if not (t == "ifgsm" and len(tokens) > 1)), **config)
