"""Attacks: the contract (:class:`Attack`, :class:`AttackResult`), the iterative engine and its registered
parts, the batched helper, the registry and the name grammar.

    attack = advkit.attacks.create("sgm+mi", eps=16/255, steps=10, gamma=0.2)
    result = attack(model, x, y, target=None, generator=torch.Generator().manual_seed(0))
    result = advkit.attacks.attack_batched(attack, model, x, y, batch_size=256, seed=0)   # any number of images
"""

# Each module registers its parts (or standalone attack) on import; the order here is the registry's order.
from advkit.attacks.gradient import steps as _steps  # noqa: F401,I001
from advkit.attacks.gradient import scopes as _scopes  # noqa: F401
from advkit.attacks.gradient import momentum as _momentum  # noqa: F401
from advkit.attacks.gradient import inputs as _inputs  # noqa: F401
from advkit.attacks.gradient import gradients as _gradients  # noqa: F401
from advkit.attacks.gradient import ila as _ila  # noqa: F401
from advkit.attacks.saliency import jsma as _jsma  # noqa: F401
from advkit.attacks.core import noise as _noise  # noqa: F401
from advkit.attacks.query import square as _square  # noqa: F401
from advkit.attacks.query import nes as _nes  # noqa: F401
from advkit.attacks.query import simba as _simba  # noqa: F401
from advkit.attacks.query import hsj as _hsj  # noqa: F401
from advkit.attacks.artefact import generator as _generator  # noqa: F401
from advkit.attacks.artefact import universal as _universal  # noqa: F401
from advkit.attacks.gradient import ghost as _ghost  # noqa: F401
from advkit.attacks.ensemble import svre as _svre  # noqa: F401
from advkit.attacks.ensemble import cwa as _cwa  # noqa: F401
from advkit.attacks.gradient import pgn as _pgn  # noqa: F401
from advkit.attacks.gradient import gra as _gra  # noqa: F401
from advkit.attacks.gradient import bsr as _bsr  # noqa: F401
from advkit.attacks.gradient import sia as _sia  # noqa: F401
from advkit.attacks.gradient import fia as _fia  # noqa: F401
from advkit.attacks.gradient import naa as _naa  # noqa: F401
from advkit.attacks.gradient import pi as _pi  # noqa: F401
from advkit.attacks.gradient import decowa as _decowa  # noqa: F401
from advkit.attacks.gradient import eot as _eot  # noqa: F401
from advkit import defences as _defences  # noqa: F401  (registers the defended: model names)
from advkit.attacks.gradient import apgd as _apgd  # noqa: F401
from advkit.attacks.gradient import fab as _fab  # noqa: F401
from advkit.attacks.core.base import Attack, AttackResult, Counter, ModelAttack, attack_loss
from advkit.attacks.core.budget import check_budget, project
from advkit.attacks.core.checks import validate_inputs
from advkit.attacks.batched import attack_batched, batch_seed
from advkit.attacks.gradient.engine import Iterative
from advkit.attacks.grammar import create, label, parse
from advkit.attacks.query.oracle import BlackBoxError, Oracle, QueryBudgetError
from advkit.attacks.gradient.parts import Part, macros, parts, register_macro, register_part
from advkit.attacks.query.base import QueryAttack
from advkit.attacks.core.registry import KINDS, of_kind, register_attack, standalone
from advkit.attacks.gradient.scopes import resolve_gamma

# Combinations listed (and tested) beside every single part and macro: the ones the papers and the SGM tables use.
COMBINATIONS = ("sgm+mi", "sgm+di", "sgm+mi+di", "mi+di", "mi+di+ti", "sgm+linbp", "linbp+mi", "ni+si", "mi+ila",
                "admix+mi+di")


def names() -> list[str]:
    """Attack names for listings and registry-wide tests, derived from the registry: every part, every macro
    that stands for several parts, the combinations above, then every standalone attack."""
    singles = list(parts())
    multi = [m for m, tokens in macros().items() if len(tokens) > 1]
    return [*singles, *multi, *COMBINATIONS, *sorted(standalone())]


def query_attacks() -> list[str]:
    """Names of the registered query (black-box) attacks."""
    return of_kind("query")


def budget_norm(name: str, norm: object = None) -> str | None:
    """The norm ``eps`` bounds for the attack ``name``: ``norm`` when given, else the attack's default (``l2`` for
    hsj and simba, ``linf`` for square, nes and the compositions); ``None`` when a file decides it (``uap:PATH``)."""
    if isinstance(norm, str):
        return norm
    key = standalone_key(name)
    default = standalone()[key].norm if key is not None else Iterative.norm
    return default or None  # a uap's norm is its file's


def standalone_key(name: str) -> str | None:
    """The registry name of a standalone attack (``"generator"`` for ``generator:PATH``), else ``None``."""
    kind, sep, _ = name.strip().partition(":")
    cls = standalone().get(kind.lower())
    if cls is None or (sep and not cls.takes_path):
        return None
    return kind.lower()


def needs_skip_connections(name: str) -> bool:
    """Whether the attack ``name`` works only on models with residual / dense connections (SGM, LinBP)."""
    if standalone_key(name) is not None:
        return False
    return any(parts()[t].needs_skip_connections for t in parse(name))


__all__ = ["Attack", "AttackResult", "BlackBoxError", "COMBINATIONS", "Counter", "Iterative", "KINDS", "ModelAttack",
           "Oracle", "Part", "QueryAttack", "QueryBudgetError", "attack_batched", "attack_loss", "batch_seed",
           "budget_norm", "check_budget", "create", "label", "macros", "names", "needs_skip_connections", "of_kind",
           "parse", "parts", "project", "query_attacks", "register_attack", "register_macro", "register_part",
           "resolve_gamma", "standalone", "standalone_key", "validate_inputs"]
