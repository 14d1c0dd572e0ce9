"""Issue 24: the documentation follows the code. The attack pages list every registered attack with its defaults,
the experiment-file reference every schema field, the zoo page every shipped checkpoint; the README is short and
its links work; every page is in the site's navigation and every include has a generated fragment."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import advkit.attacks as attacks
import advkit.models as models
from advkit.study import schema

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def attack_pages(gen: ModuleType) -> dict[str, str]:
    return gen.attack_pages()


def _section(page: str, name: str) -> str:
    """The text of the ``### `name``` section of a generated page."""
    m = re.search(rf"^### `{re.escape(name)}`\n(.*?)(?=^### |\Z)", page, flags=re.M | re.S)
    assert m, f"no section for {name!r}"
    return m.group(1)


def _row(section: str, setting: str, default: str) -> bool:
    return re.search(rf"^\| `{re.escape(setting)}` \| {re.escape(default)} \|", section, flags=re.M) is not None


def test_every_part_is_documented_with_its_paper_and_defaults(gen: ModuleType, attack_pages: dict[str, str]) -> None:
    page = attack_pages["attacks-gradient.md"]
    for token, cls in attacks.parts().items():
        section = _section(page, token)
        assert cls.paper in section
        for f in dataclasses.fields(cls):
            assert _row(section, f.name, gen.field_default(f)), f"{token}: {f.name} missing or wrong default"
    for macro, tokens in attacks.macros().items():
        assert f"| `{macro}` | `{'+'.join(tokens)}` |" in page
    # the common settings of every composition, with the engine's defaults
    assert _row(page, "eps", "`8/255`") and _row(page, "steps", "`10`")


def test_every_standalone_attack_is_on_its_family_page_with_defaults(gen: ModuleType,
                                                                     attack_pages: dict[str, str]) -> None:
    overview = attack_pages["attacks-overview.md"]
    for name, cls in attacks.standalone().items():
        page = attack_pages[f"attacks-{gen.FAMILY_PAGES[gen.family_of(cls)][:-3]}.md"]
        section = _section(page, name)
        for f in dataclasses.fields(cls):
            if f.init and f.name not in cls.unused and f.name != "path":
                assert _row(section, f.name, gen.field_default(f)), f"{name}: {f.name} missing or wrong default"
        assert f"[`{name}`]" in overview
    for token in attacks.parts():
        assert f"[`{token}`](gradient.md#{token})" in overview
    assert "black box, labels" in overview  # hsj, decision-based
    assert gen.value(8 / 255) == "`8/255`" and gen.value(0.05) == "`0.05`"


def test_query_pages_say_score_or_decision_based(attack_pages: dict[str, str]) -> None:
    page = attack_pages["attacks-query.md"]
    assert "black box, decision-based" in _section(page, "hsj")
    assert "black box, score-based" in _section(page, "square")


def test_experiment_file_reference_lists_every_schema_field(gen: ModuleType) -> None:
    page = gen.schema_page()
    classes = [c for c in vars(schema).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == schema.__name__]
    assert {"StudyConfig", "AttackSpec", "SampleSpec"} <= {c.__name__ for c in classes}
    for cls in classes:
        block = page.split(f"## `{cls.__name__}`", 1)[1].split("\n## ", 1)[0]
        for f in dataclasses.fields(cls):
            if f.init:
                assert re.search(rf"^\| `{f.name}` \| `.*` \| {re.escape(gen.field_default(f))} \|", block,
                                 flags=re.M), f"{cls.__name__}.{f.name}"
    assert "```" in page  # the module docstring's example file became a code block


def test_zoo_page_lists_every_shipped_checkpoint_with_accuracy(gen: ModuleType) -> None:
    page = gen.models_page()
    for row in models.list():
        if row.dataset is not None and row.test_accuracy is not None:
            assert re.search(rf"`{re.escape(row.name)}` \| `{row.arch}`.*\| {100 * row.test_accuracy:.2f}% \|", page)
    for folder, prefix in (("generators", "generator"), ("universal", "uap")):
        for card in (models.WEIGHTS_DIR / folder).glob("*.json"):
            assert f"`{prefix}:{card.stem}`" in page


def test_docstring_text_becomes_markdown(gen: ModuleType) -> None:
    md = gen.to_markdown("See :mod:`~advkit.attacks.query.oracle` and :func:`advkit.attacks.create`:\n"
                         "* one\n* two\n\nA file::\n\n    a: 1\n    b: 2\n\nAfter.")
    assert "`oracle`" in md and "`advkit.attacks.create`" in md
    assert "create`:\n\n* one" in md  # a list needs a blank line before it in Markdown
    assert "```\na: 1\nb: 2\n```" in md


def test_readme_is_short_and_its_relative_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 160
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [u for u in links if not re.match(r"[a-z]+:", u)]
    assert len(relative) >= 10
    for url in relative:
        assert (ROOT / url.split("#")[0]).exists(), f"README links to missing {url}"
    assert "make test" in text and "make demo" in text and "pip install" in text


def _nav_pages(nav: object) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in _nav_pages(v)]
    return []


def test_every_page_is_in_the_nav_and_every_include_is_generated(gen: ModuleType) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == on_disk
    generated = set(gen.fragment_names())
    included = {m for p in DOCS.rglob("*.md") for m in re.findall(r'^--8<-- "([^"]+)"', p.read_text(), flags=re.M)}
    assert included and included <= generated, included - generated
    for family_page in gen.FAMILY_PAGES.values():
        assert (DOCS / "attacks" / family_page).is_file()


def test_make_test_builds_the_docs_strictly_and_runs_mypy() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in recipe and "docs" in recipe and "mypy src/advkit" in recipe
    docs_recipe = makefile.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "gen_docs.py" in docs_recipe and "mkdocs build --strict" in docs_recipe


def test_reproductions_page_lists_every_registered_reproduction(gen: ModuleType) -> None:
    from advkit.reproduce import registry

    page = gen.reproductions_page()
    assert registry.REPRODUCTIONS
    for name, rep in registry.REPRODUCTIONS.items():
        section = _section(page, name)
        for setting, full, _quick in registry.settings_table(rep):
            assert f"| `{setting}` | `{gen.cell(full)}` |" in section, f"{name}: {setting}"
