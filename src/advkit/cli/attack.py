"""``advkit attack``: craft on one model, save the examples, print white-box success and distortion (the run is
:func:`advkit.study.attack_run.run_attack`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli.common import bars, console, fail, invocation, parse_number, warn

__all__ = ["attack"]

STEPS_WARN = 10_000_000  # gradient passes (images x steps) above which the command says what it will cost


def _value(text: str) -> object:
    """A --set value: an integer, a number (fractions like 16/255 too), true/false, or the text itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return parse_number(text, "--set")
    except typer.BadParameter:
        return text


# the options that set an attack setting: setting -> option
OPTIONS = {"eps": "--eps", "steps": "--steps", "alpha": "--alpha", "norm": "--norm", "gamma": "--gamma",
           "sgm_variant": "--variant", "decay": "--decay", "ti_kernel": "--ti-kernel", "loss": "--loss",
           "max_queries": "--max-queries"}


def _check_loss(loss: str | None, targeted: bool) -> None:
    """Refuse a targeted-only loss (``potrip``) without ``--targeted`` before any model is loaded."""
    from advkit.attacks.core.losses import LOSSES

    entry = LOSSES.get(loss) if loss is not None else None
    if entry is not None and entry.targeted_only and not targeted:
        raise ValueError(f"--loss {loss} ({entry.paper}) is defined only for targeted attacks: add --targeted, or "
                         f"pick another loss ({', '.join(n for n, e in LOSSES.items() if not e.targeted_only)})")


def _aliases(name: str) -> dict[str, str]:
    """The other names of the attack's settings (``mu`` for ``decay``), to setting names; ``{}`` for a standalone
    attack or a name ``create`` will refuse."""
    from advkit.attacks import parse, parts, standalone_key

    if standalone_key(name) is not None:
        return {}
    try:
        tokens = parse(name)
    except ValueError:
        return {}
    return {alias: field for t in tokens for alias, field in parts()[t].aliases.items()}


def _settings(name: str, options: dict[str, object], items: list[str]) -> dict[str, object]:
    """The attack's settings from its options (``{"eps": "16/255", "steps": 10}``, as typed) and ``--set KEY=VALUE``
    items. A setting given twice (an option and a --set, two --set, or a name and its alias) is an error naming
    both, never "the last wins"."""
    aliases = _aliases(name)
    kw: dict[str, object] = {}
    given: dict[str, str] = {}  # setting -> how it was given, for the error
    for key, val in options.items():
        kw[key] = parse_number(val, OPTIONS[key]) if key in ("eps", "alpha") and isinstance(val, str) else val
        given[aliases.get(key, key)] = f"{OPTIONS[key]} {val}"
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key:
            fail(f"--set takes KEY=VALUE (e.g. --set p_init=0.8), got {item!r}")
        field = aliases.get(key, key)
        if field in given:
            fail(f"{given[field]} and --set {item} both set {field}; give each setting once")
        given[field] = f"--set {item}"
        kw[key] = _value(text.strip())
    return kw


def _check_eps(name: str, kw: dict[str, object], dataset: str, allow_large: bool) -> None:
    """Refuse an eps larger than the whole pixel box, in the norm the attack uses (its default, or --norm): an
    L-inf radius above 1 (unless --allow-large-eps), an L2 radius above sqrt(C * H * W) of the dataset's images."""
    from advkit.attacks import budget_norm, check_budget, standalone, standalone_key
    from advkit.data import get_spec

    eps = kw.get("eps")
    norm = budget_norm(name, kw.get("norm"))
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or norm is None:
        return  # create() names a wrong value; a uap file decides its own norm
    key = standalone_key(name)
    query = key is not None and standalone()[key].black_box  # refuse an L-inf eps > 1 whatever the flag
    spec = get_spec(dataset)
    check_budget(float(eps), norm, allow_large=allow_large and not query, flag=None if query else "--allow-large-eps",
                 shape=spec.shape if spec.loader is None else None)


def attack(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Attack name: fgsm, ifgsm, pgd, mi, di, ti, sgm, jsma, a combination "
                                              "such as sgm+mi+di, or a query attack (advkit attacks list shows "
                                              "each with its kind).")],
    model: Annotated[str, typer.Option(help="Source model: zoo name, .safetensors path, torchvision:/timm:NAME.")],
    dataset: Annotated[str, typer.Option(help="Dataset (test split).")] = "fashion-mnist",
    eps: Annotated[str | None, typer.Option(help="Budget in pixel units of [0,1], in the attack's norm (an L-inf "
                                                    "radius; an L2 one for hsj, simba or --norm l2); fractions like "
                                                    "16/255 accepted.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Iterations.")] = None,
    alpha: Annotated[str | None, typer.Option(help="Step size in pixel units (default eps/steps; PGD "
                                                      "2.5*eps/steps).")] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2.")] = None,
    gamma: Annotated[float | None, typer.Option(help="SGM decay in (0, 1] on residual gradients.")] = None,
    variant: Annotated[str | None, typer.Option(help="SGM variant: formula or original.")] = None,
    decay: Annotated[float | None, typer.Option(help="MI momentum decay mu.")] = None,
    ti_kernel: Annotated[int | None, typer.Option(min=1, help="TI Gaussian kernel size (odd).")] = None,
    # the names of advkit.attacks.core.losses.LOSSES (written here so that starting the CLI does not import torch;
    # tests/test_i25_losses.py checks the help names every registered loss)
    loss: Annotated[str | None, typer.Option(help="The loss the attack ascends: ce (cross-entropy), logit (the "
                                             "target's logit, Zhao et al. 2021), margin (C&W logit margin) or potrip "
                                             "(Po+Trip, Li et al. 2020, needs --targeted); query attacks take ce or "
                                             "margin.")] = None,
    max_queries: Annotated[int | None, typer.Option(min=1, help="Query attacks: the per-image query budget.")] = None,
    start: Annotated[str | None, typer.Option(help="Query attacks: start from a transfer example crafted with "
                                                   "this attack (e.g. sgm+mi) on --surrogate.")] = None,
    surrogate: Annotated[str | None, typer.Option(help="Query attacks: the model --start is crafted on.")] = None,
    oracle: Annotated[str | None, typer.Option(help="Query attacks: what the target answers, scores or label "
                                                    "(default: what the attack needs).")] = None,
    setting: Annotated[list[str] | None, typer.Option("--set", help="Any other attack setting, KEY=VALUE "
                                                      "(repeatable), e.g. --set p_init=0.8 --set basis=pixel.")]
    = None,
    targeted: Annotated[bool, typer.Option(help="Attack toward a random other class (seeded).")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Test images loaded (only correctly classified ones are attacked).")]
    = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the attack's randomness and of the targets.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run directory: config, results, float tensors, PNGs.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite a finished run in --out.")] = False,
    allow_large_eps: Annotated[bool, typer.Option(help="Accept an L-inf --eps above 1 (budgets are in pixel units "
                                                       "of [0, 1]: 8 on the 0-255 scale is 8/255).")] = False,
) -> None:
    """Craft adversarial examples on one model, save them, and print white-box success and distortion."""
    from advkit.study.attack_run import run_attack

    if steps is not None and limit * steps > STEPS_WARN:
        warn(f"--steps {steps} on up to {limit} images is up to {limit * steps:,} forward and backward passes, "
             f"which can take days; the usual is 10 to 1,000 steps. Ctrl-C stops it")
    options = {"eps": eps, "steps": steps, "alpha": alpha, "norm": norm, "gamma": gamma, "sgm_variant": variant,
               "decay": decay, "ti_kernel": ti_kernel, "loss": loss, "max_queries": max_queries}
    _check_loss(loss, targeted)
    kw = _settings(name, {k: v for k, v in options.items() if v is not None}, setting or [])
    _check_eps(name, kw, dataset, allow_large_eps)
    command = invocation(ctx)
    with bars(transient=True) as bar:
        s = run_attack(name, model, dataset, out, attack_kwargs=kw, limit=limit, seed=seed, targeted=targeted,
                       force=force, command=command, start=start, surrogate=surrogate, oracle=oracle,
                       progress=lambda stage, done, total, detail: bar(f"{name} on {model}: {stage}", done, total,
                                                                       detail))
    succ, succ8 = s["success"], s["success_8bit"]
    console.print(f"{name} on {s['model']} ({dataset}): clean accuracy {100 * s['clean_accuracy']:.2f}% of "
                  f"{s['clean_n']}; attacked {s['attacked']} {s['success_over']}")
    console.print(f"white-box success {100 * succ['k'] / max(succ['n'], 1):.2f}% [{100 * succ['low']:.2f}, "
                  f"{100 * succ['high']:.2f}]; after 8-bit rounding {100 * succ8['k'] / max(succ8['n'], 1):.2f}%")
    if s["attack_config"].get("norm") == "l2":
        console.print(f"L2 max {s['l2_max']:.4f} (8-bit {s['l2_max_8bit']:.4f}; rounded images are re-projected "
                      f"into the radius)")
    console.print(f"distortion: Linf max {s['linf_max']:.4f} (8-bit {s['linf_max_8bit']:.4f}), L2 mean "
                  f"{s['l2_mean']:.3f}, L0 mean {100 * s['l0_mean']:.1f}% of features; {s['forward_passes']} "
                  f"forward / {s['backward_passes']} backward passes in {s['seconds']:.1f}s")
    if "queries" in s:
        q, w = s["queries"], s["queries"]["within"]
        shares = ", ".join(f"{k if k == 'budget' else 'within ' + k}: {100 * v['k'] / max(v['n'], 1):.1f}%"
                           for k, v in w.items())
        console.print(f"queries ({s['oracle']} oracle, budget {q['budget']}): median {q['median_queries_success']:.0f}"
                      f", mean {q['mean_queries_success']:.1f} over fooled images; mean {q['mean_queries_all']:.1f} "
                      f"over all; fooled {shares}")
    if "start" in s:
        st = s["start"]
        console.print(f"start: {st['attack']} on {st['surrogate']} (white-box there "
                      f"{100 * st['surrogate_success']['k'] / max(st['surrogate_success']['n'], 1):.1f}%); "
                      f"{st['transfer_success']['k']} of {st['transfer_success']['n']} already fooled the target "
                      f"(1 query each)")
    if s.get("info", {}).get("sgm"):
        console.print(f"SGM: {s['info']['sgm']}")
    if s.get("data_note"):
        console.print(f"note: {s['data_note']}")
    if out is not None:
        console.print(f"saved to {out}")
