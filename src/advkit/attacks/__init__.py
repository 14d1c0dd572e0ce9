"""Attacks: the contract (:class:`Attack`, :class:`AttackResult`), the iterative engine and its parts, the
registry and the name grammar.

    attack = advkit.attacks.create("sgm+mi", eps=16/255, steps=10, gamma=0.2)
    result = attack(model, x, y, target=None, generator=torch.Generator().manual_seed(0))
"""

from advkit.attacks import jsma as _jsma  # noqa: F401  (JSMA registers itself on import)
from advkit.attacks.base import Attack, AttackResult, Counter, attack_loss, project, validate_inputs
from advkit.attacks.engine import Iterative
from advkit.attacks.grammar import create, parse
from advkit.attacks.registry import register_attack, standalone

NAMES = ("fgsm", "ifgsm", "pgd", "mi", "di", "ti", "sgm", "sgm+mi", "sgm+di", "sgm+mi+di", "mi+di", "mi+di+ti")


def names() -> list[str]:
    """Attack names for listings and registry-wide tests: the compositions above and every standalone attack."""
    return [*NAMES, *sorted(standalone())]


__all__ = ["Attack", "AttackResult", "Counter", "Iterative", "attack_loss", "create", "names", "parse", "project",
           "register_attack", "standalone", "validate_inputs"]
