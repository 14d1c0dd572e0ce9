"""Generate the documentation's reference fragments from the code, for `make docs` (then `mkdocs build --strict`).

Every table a reader could see go stale is read from the code at build time:

* ``attacks-<family>.md``: each registered attack and part with its paper, formula (its docstring) and defaults,
  from :func:`advkit.attacks.parts`, :func:`advkit.attacks.macros` and :func:`advkit.attacks.standalone`;
* ``experiment-file.md``: every dataclass of :mod:`advkit.study.schema`, field by field (type, default,
  description from its docstring's ``Attributes`` section);
* ``models.md``: the zoo, from :func:`advkit.models.list` and the shipped model, generator and UAP cards;
* ``cli.md``: every command and option, rendered by typer's own ``typer advkit.cli utils docs``.

The hand-written pages under ``docs/`` include the fragments with ``--8<-- "NAME.md"`` (pymdownx.snippets, base
path ``.docs-gen/``, which is git-ignored; ``python scripts/gen_docs.py OUT`` writes them elsewhere). A registered
attack whose family has no page fails the build.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import griffe

if TYPE_CHECKING:
    from advkit.attacks import Attack, Part

ROOT = Path(__file__).resolve().parent.parent

# Attack families (an attack's ``kind`` from its registration; a part is a gradient attack): page and title.
FAMILIES = {
    "gradient": "White-box gradient attacks",
    "saliency": "Saliency (JSMA)",
    "query": "Black-box query attacks",
    "artefact": "Artefact attacks",
    "control": "The noise control",
}
FAMILY_PAGES = {"gradient": "gradient.md", "saliency": "saliency.md", "query": "query.md",
                "artefact": "artefact.md", "control": "noise.md"}
_SUBPACKAGE_KIND = {"core": "control"}  # before attacks carried a ``kind``: the subpackage that defines them

_ROLE = re.compile(r":(?:mod|class|func|meth|attr|data|exc|obj):`(~?)([\w.]+)`")


# ------------------------------------------------------------------------------------------------ text helpers
def roles(text: str) -> str:
    """Sphinx cross-reference roles (``:func:`~a.b```) as inline code (`` `b` ``)."""
    return _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


def to_markdown(text: str) -> str:
    """A docstring's prose as Markdown: Sphinx roles become code, ``::`` blocks become fenced code, and lists get
    the blank line before them that Markdown needs."""
    text = roles(text)
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            out.append(line.rstrip()[:-1])
            block: list[str] = []
            i += 2
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```", *block, "```", ""]
            continue
        is_item = bool(re.match(r"^[*-] ", line))
        if is_item and out and out[-1].strip() and not re.match(r"^([*-] |  )", out[-1]):
            out.append("")
        out.append(line)
        i += 1
    return "\n".join(out).strip()


def doc_parts(obj: object) -> tuple[str, dict[str, str]]:
    """An object's docstring parsed as Google style (by griffe, as mkdocstrings reads it): its prose and the
    descriptions of its ``Args`` / ``Attributes`` entries by name."""
    raw = inspect.getdoc(obj) or ""
    if not raw or (inspect.isclass(obj) and obj.__doc__ is None):
        return "", {}
    prose: list[str] = []
    described: dict[str, str] = {}
    for section in griffe.Docstring(raw).parse("google", warnings=False):
        if section.kind.value == "text":
            prose.append(section.value)
        elif section.kind.value in ("parameters", "attributes"):
            for item in section.value:
                described[item.name] = roles(" ".join(item.description.split()))
        elif section.kind.value == "admonition":
            prose.append(f"**{section.title}**\n\n{section.value.description}")
    return to_markdown("\n\n".join(prose)), described


def value(v: Any) -> str:
    """A default as a reader writes it: ``8/255`` rather than 0.03137254901960784."""
    if isinstance(v, float) and not v.is_integer() and len(repr(v)) > 8:
        frac = Fraction(v).limit_denominator(1000)
        if abs(float(frac) - v) < 1e-12:
            return f"`{frac}`"
    if isinstance(v, (frozenset, set)):
        v = sorted(v)
    return f"`{v!r}`" if not isinstance(v, str) else f'`"{v}"`'


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def field_default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        return value(made) if not dataclasses.is_dataclass(made) else f"`{type(made).__name__}()`"
    return "required"


# ------------------------------------------------------------------------------------------------ attacks
def family_of(cls: type) -> str:
    """The family of an attack class: its registered ``kind``, else the subpackage of ``advkit.attacks`` that
    defines it. A family without a page stops the build."""
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str):
        sub = cls.__module__.split(".")
        kind = _SUBPACKAGE_KIND.get(sub[2], sub[2]) if len(sub) > 3 and sub[:2] == ["advkit", "attacks"] else ""
    if kind not in FAMILIES:
        raise SystemExit(f"gen_docs: {cls.__module__}.{cls.__name__} is registered with kind {kind!r}, which has no "
                         f"documentation page; add it to FAMILIES in scripts/gen_docs.py and a docs/attacks page")
    return kind


def settings_table(rows: list[tuple[str, str, str]]) -> list[str]:
    if not rows:
        return ["No settings of its own.", ""]
    if not any(m for _, _, m in rows):
        return ["| setting | default |", "| --- | --- |", *(f"| `{n}` | {d} |" for n, d, _ in rows), ""]
    out = ["| setting | default | meaning |", "| --- | --- | --- |"]
    out += [f"| `{n}` | {d} | {cell(m)} |" for n, d, m in rows]
    return [*out, ""]


def part_section(token: str, cls: type[Part]) -> list[str]:
    prose, described = doc_parts(cls)
    inverse: dict[str, list[str]] = {}
    for alias, target in getattr(cls, "aliases", {}).items():
        inverse.setdefault(target, []).append(alias)
    rows = []
    for f in dataclasses.fields(cls):
        also = ", ".join(f"`{a}`" for a in inverse.get(f.name, []))
        rows.append((f.name, field_default(f), described.get(f.name, "") + (f" (also: {also})" if also else "")))
    out = [f"### `{token}`", "", f"*{cls.paper}*. Hook `{cls.hook}`, order {cls.order}; "
           f"`{cls.__module__}.{cls.__name__}`.", "", prose, ""]
    if cls.sets:
        out += ["Sets the common settings: " + ", ".join(f"`{k}` = {value(v)}" for k, v in cls.sets.items()) + ".", ""]
    for other, why in cls.excludes.items():
        out += [f"Not combined with `{other}`: {why}.", ""]
    if cls.needs_skip_connections:
        out += ["Works only on models with residual or dense connections.", ""]
    return out + settings_table(rows)


def attack_section(name: str, cls: type[Attack]) -> list[str]:
    prose, described = doc_parts(cls)
    module_prose, module_described = doc_parts(sys.modules[cls.__module__])
    unused = set(getattr(cls, "unused", ()))
    rows = [(f.name, field_default(f), described.get(f.name) or module_described.get(f.name, ""))
            for f in dataclasses.fields(cls) if f.init and f.name not in unused and f.name != "path"]
    norm = getattr(cls, "norm", None)
    norm = norm if isinstance(norm, str) else None
    facts = [f"`{cls.__module__}.{cls.__name__}`"]
    if getattr(cls, "black_box", False):
        kind = "score-based" if getattr(cls, "oracle_output", "scores") == "scores" else "decision-based (label only)"
        facts.append(f"black box, {kind}")
    if norm:
        facts.append(f"budget norm `{norm}`")
    if getattr(cls, "takes_path", False):
        facts.append(f"named `{name}:PATH` (or a shipped `{name}:NAME`)")
    if getattr(cls, "targeted_only", False):
        facts.append("targeted only")
    if unused:
        facts.append("ignores " + ", ".join(f"`{u}`" for u in sorted(unused)))
    out = [f"### `{name}`", "", "; ".join(facts) + ".", "", prose, ""]
    if module_prose:
        out += ['??? note "The method, from its module"', ""]
        out += ["    " + line if line else "" for line in module_prose.splitlines()] + [""]
    return out + settings_table(rows)


def attack_pages() -> dict[str, str]:
    import advkit.attacks as attacks
    from advkit.attacks.gradient.engine import Iterative
    from advkit.attacks.gradient.parts import HOOKS

    pages: dict[str, list[str]] = {fam: [] for fam in FAMILIES}
    overview = ["| name | family | paper | kind | budget |", "| --- | --- | --- | --- | --- |"]
    parts = attacks.parts()
    for token, cls in parts.items():
        overview.append(f"| [`{token}`](gradient.md#{token}) | part ({cls.hook}) | {cls.paper} | "
                        f"white box | eps, `linf` or `l2` |")
    for name, tokens in attacks.macros().items():
        overview.append(f"| [`{name}`](gradient.md#macros) | macro: `{'+'.join(tokens)}` | | white box | |")
    for name, acls in sorted(attacks.standalone().items()):
        fam = family_of(acls)
        paper = (inspect.getdoc(acls) or "").split("\n")[0]
        kind = ("black box, " + ("scores" if getattr(acls, "oracle_output", "scores") == "scores" else "labels")
                if acls.black_box else "white box" if fam in ("gradient", "saliency") else
                "none (pre-computed)" if fam == "artefact" else "none")
        norm = getattr(acls, "norm", None)
        norm_s = f"`{norm}`" if isinstance(norm, str) else "from the file"
        overview.append(f"| [`{name}`]({FAMILY_PAGES[fam]}#{name}) | {FAMILIES[fam]} | {cell(paper)} | "
                        f"{kind} | {norm_s} |")
        pages[fam] += attack_section(name, acls)

    common_prose, described = doc_parts(Iterative)
    grad = ["## Common settings", "", "Every composition takes these (`advkit.attacks.gradient.engine.Iterative`):",
            ""]
    common = getattr(sys.modules["advkit.attacks.grammar"], "COMMON", ("eps", "steps", "alpha", "norm", "loss"))
    grad += settings_table([(f.name, field_default(f), described.get(f.name, ""))
                            for f in dataclasses.fields(Iterative) if f.name in common])
    from advkit.attacks.core.losses import LOSSES  # the loss registry: every loss= an iterative attack takes
    grad += ["### Losses", "", "| `loss=` | ascends | paper | targeted only |", "| --- | --- | --- | --- |"]
    grad += [f"| `{n}` | {cell(e.summary)} | {cell(e.paper)} | {'yes' if e.targeted_only else ''} |"
             for n, e in LOSSES.items()] + [""]
    grad += ["## Parts by hook", "", "| hook | parts, in the order they run |", "| --- | --- |"]
    for hook in HOOKS:
        members = sorted((c.order, t) for t, c in parts.items() if c.hook == hook)
        grad.append(f"| `{hook}` | " + ", ".join(f"[`{t}`](#{t})" for _, t in members) + " |")
    grad.append("")
    for hook in HOOKS:
        for _, token in sorted((c.order, t) for t, c in parts.items() if c.hook == hook):
            grad += part_section(token, parts[token])
    grad += ["### Macros", "", "| name | stands for |", "| --- | --- |"]
    grad += [f"| `{m}` | `{'+'.join(t)}` |" for m, t in attacks.macros().items()]
    grad += ["", "Combinations listed by `advkit attacks list` and tested beside every single part: "
             + ", ".join(f"`{c}`" for c in attacks.COMBINATIONS) + ".", ""]
    pages["gradient"] = grad + pages["gradient"]
    out = {f"attacks-{FAMILY_PAGES[fam][:-3]}.md": "\n".join(lines) for fam, lines in pages.items()}
    out["attacks-overview.md"] = "\n".join(overview) + "\n"
    return out


# ------------------------------------------------------------------------------------------------ schema
def schema_page() -> str:
    from advkit.study import schema

    classes = [c for _, c in inspect.getmembers(schema, inspect.isclass)
               if dataclasses.is_dataclass(c) and c.__module__ == schema.__name__]
    classes.sort(key=lambda c: (c.__name__ != "StudyConfig", c.__name__))
    module_prose, _ = doc_parts(schema)
    out = [module_prose, ""]
    for cls in classes:
        prose, described = doc_parts(cls)
        out += [f"## `{cls.__name__}`", "", prose, "", "| field | type | default | meaning |",
                "| --- | --- | --- | --- |"]
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            out.append(f"| `{f.name}` | `{cell(str(f.type))}` | {field_default(f)} | "
                       f"{cell(described.get(f.name, ''))} |")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ models
def models_page() -> str:
    import advkit.models as models

    weights = models.WEIGHTS_DIR
    out: list[str] = []
    rows = models.list()
    for dataset in sorted({r.dataset for r in rows if r.dataset}):
        out += [f"### {dataset}", "", "| model | architecture | connections | test accuracy | parameters | notes | "
                "trained by |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in sorted((r for r in rows if r.dataset == dataset), key=lambda r: r.name):
            card = json.loads(Path(str(r.path)).with_suffix(".json").read_text())
            notes = []
            if card.get("sgm_gamma") is not None:
                notes.append(f"SGM gamma {card['sgm_gamma']}")
            if models.adversarially_trained(card):
                notes.append("adversarially trained")
            robust = card.get("robust_test_accuracy")
            if isinstance(robust, dict) and "accuracy" in robust:
                notes.append(f"robust {100 * robust['accuracy']:.2f}%")
            acc = f"{100 * r.test_accuracy:.2f}%" if r.test_accuracy is not None else ""
            params = f"{r.params:,}" if r.params else ""
            out.append(f"| `{r.name}` | `{r.arch}` ({r.family}) | {r.connections} | {acc} | {params} | "
                       f"{'; '.join(notes)} | `{cell(r.command or '')}` |")
        out.append("")
    untrained = [r for r in rows if r.dataset is None]
    if untrained:
        out += ["### Architectures without a shipped checkpoint", "", "| architecture | family | connections | paper |",
                "| --- | --- | --- | --- |"]
        out += [f"| `{r.arch}` | {r.family} | {r.connections} | {cell(r.paper)} |" for r in untrained]
        out.append("")
    for folder, prefix, title in (("generators", "generator", "Perturbation generators"),
                                  ("universal", "uap", "Universal perturbations")):
        out += [f"### {title}", "", "| attack name | dataset | eps | fooling rate (own source, test) | made by |",
                "| --- | --- | --- | --- | --- |"]
        for card_path in sorted((weights / folder).glob("*.json")):
            card = json.loads(card_path.read_text())
            fool = card.get("fooling_rate_test")
            fool_s = (", ".join(f"{k} {100 * v:.1f}%" for k, v in fool.items()) if isinstance(fool, dict)
                      else f"{100 * fool:.1f}%" if isinstance(fool, (int, float)) else "")
            out.append(f"| `{prefix}:{card_path.stem}` | {card.get('dataset', '')} | {card.get('eps', '')} | "
                       f"{fool_s} | `{cell(card.get('command', ''))}` |")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ reproductions
def reproductions_page() -> str:
    """Every registered reproduction (``advkit reproduce --list``) with its settings, defaults and quick values."""
    import advkit.reproduce  # noqa: F401  (registers the built-in reproductions)

    try:
        from advkit.reproduce import registry
    except ImportError:  # before reproductions were registered objects: the CLI reference lists them
        return "The reproductions are the `advkit reproduce` commands of the [command line](reference/cli.md)."
    return "\n".join(registered_sections(registry.REPRODUCTIONS, "advkit reproduce {name} [--quick] [--set "
                                                                  "key=value] --out DIR"))


def analyses_page() -> str:
    """Every registered analysis (``advkit analyze --list``) with its inputs, settings and defaults."""
    from advkit.reproduce.analyses import ANALYSES

    return "\n".join(registered_sections(ANALYSES, "advkit analyze {name} {inputs} [--set key=value] [--out DIR]"))


def registered_sections(registered: dict[str, Any], usage: str) -> list[str]:
    """One section per registered reproduction or analysis: its description, command and settings table."""
    from advkit.reproduce import registry

    out: list[str] = []
    for name, rep in sorted(registered.items()):
        _, described = doc_parts(rep.settings)
        quick = bool(rep.quick)
        head = "| setting | default | `--quick` | meaning |" if quick else "| setting | default | meaning |"
        out += [f"### `{name}`", "", to_markdown(rep.description), "",
                f"`{usage.format(name=name, inputs=getattr(rep, 'inputs', ''))}`", "",
                head, "| --- | --- | --- | --- |" if quick else "| --- | --- | --- |"]
        for k, full, q in registry.settings_table(rep):
            mid = f" {f'`{cell(q)}`' if q else ''} |" if quick else ""
            out.append(f"| `{k}` | `{cell(full)}` |{mid} {cell(described.get(k, ''))} |")
        out.append("")
    return out


# ------------------------------------------------------------------------------------------------ CLI
def cli_page(tmp: Path) -> str:
    """typer's own Markdown for the whole app, headings moved one level down under the page's title."""
    target = tmp / "cli-raw.md"
    subprocess.run([sys.executable, "-m", "typer", "advkit.cli", "utils", "docs", "--name", "advkit", "--output",
                    str(target)], check=True, cwd=ROOT, capture_output=True, text=True)
    text = target.read_text()
    target.unlink()
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


# Fragment name -> what writes it (the attack pages come as one group: one fragment per family and the overview).
FRAGMENTS: dict[str, Callable[[Path], str]] = {
    "experiment-file.md": lambda tmp: schema_page(),
    "models.md": lambda tmp: models_page(),
    "reproductions.md": lambda tmp: reproductions_page(),
    "analyses.md": lambda tmp: analyses_page(),
    "cli.md": cli_page,
}


def fragment_names() -> list[str]:
    """Every fragment :func:`main` writes, for the pages' ``--8<--`` includes."""
    return [*(f"attacks-{page[:-3]}.md" for page in FAMILY_PAGES.values()), "attacks-overview.md", *FRAGMENTS]


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=ROOT / ".docs-gen", help="where the fragments go")
    out = ap.parse_args(argv).out
    out.mkdir(parents=True, exist_ok=True)
    files = attack_pages()
    for name, make in FRAGMENTS.items():
        files[name] = make(out)
    for name, text in files.items():
        (out / name).write_text(text.rstrip() + "\n")
    print(f"gen_docs: {len(files)} fragments in {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
