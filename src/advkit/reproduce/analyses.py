"""The analyses of finished runs as registered objects, in the shape of the reproductions
(:mod:`advkit.reproduce.registry`): a name, a description, checked settings with defaults
(:mod:`advkit.analysis.settings`), the inputs (run folders), and a run that writes its output folder under the one
run-folder rule (``analysis.json``, ``report.md`` and ``report.html``; a finished or foreign folder is refused
naming ``--force``), with progress through :data:`advkit.progress.ProgressFn`::

    from advkit.reproduce.analyses import get_analysis
    outcome = get_analysis("clusters").run(["runs/zoo"], settings=None, progress=print)

* ``clusters``: PCA then k-means over a transfer run's perturbations (:mod:`advkit.analysis.clusters`);
* ``surrogates``: grey-box choice of source, attack and gamma (:mod:`advkit.analysis.surrogates`);
* ``perception``: JSMA examples' distance to the clean images of both classes (:mod:`advkit.analysis.perception`).

They live here, above the report layer, because each run writes its files with :mod:`advkit.report`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from advkit.analysis.settings import ClustersSettings, PerceptionSettings, SurrogatesSettings
from advkit.progress import ProgressFn
from advkit.report.html import Block, Document, Figure, Heading, Para, Table
from advkit.reproduce.registry import Outcome, Registered, RunContext, lookup, settings_dict

__all__ = ["ANALYSES", "Analysis", "get_analysis", "register_analysis"]

AnalysisWork = Callable[[list[Path], Path, Any, RunContext], Outcome]


@dataclass(frozen=True)
class Analysis(Registered):
    """A registered analysis (the fields of :class:`~advkit.reproduce.registry.Registered`, then these).

    Attributes:
        work: ``work(inputs, out, settings, context) -> Outcome``: reads the input folders, writes the files.
        inputs: what the inputs are, for messages and ``--list`` (``"RUN_DIR"``, ``"RUN_DIR..."``).
        many: more than one input folder is accepted.
        check_inputs: raises ``ValueError`` saying what an input is unless it is what the analysis reads; called
            before the output folder is touched.
        default_out: the output folder when none is given (``None``: ``--out`` is required).
    """

    kind: ClassVar[str] = "analysis"
    manifest_name: ClassVar[str] = "analysis.json"
    list_command: ClassVar[str] = "advkit analyze --list"

    work: AnalysisWork | None = None
    inputs: str = "RUN_DIR"
    many: bool = False
    check_inputs: Callable[[list[Path]], None] | None = None
    default_out: Callable[[list[Path]], Path] | None = None

    def run(self, inputs: Sequence[str | Path], out: str | Path | None = None, settings: Any = None, *,
            force: bool = False, progress: ProgressFn | None = None, command: str = "") -> Outcome:
        """Analyse ``inputs`` into ``out`` (default: :attr:`default_out`) under the one run-folder rule.

        Raises:
            RunExistsError: ``out`` holds a finished run, another run, or files advkit did not write, and
                ``force`` is false.
            ValueError: bad inputs or settings, no ``out`` where one is required, or what the work raises.
        """
        paths = [Path(p) for p in inputs]
        if not paths or (len(paths) > 1 and not self.many):
            raise ValueError(f"{self.name} takes {'one or more run folders' if self.many else 'one run folder'} "
                             f"({self.inputs}), got {len(paths)}: advkit analyze {self.name} {self.inputs}")
        s = self.make_settings() if settings is None else settings
        if not isinstance(s, self.settings):
            raise ValueError(f"{self.name}: settings must be a {self.settings.__name__}, got {type(s).__name__}")
        if self.check_inputs is not None:
            self.check_inputs(paths)
        if out is None:
            if self.default_out is None:
                raise ValueError(f"--out: give an output folder for {self.name}")
            out = self.default_out(paths)
        folder, work = Path(out), self.work
        if work is None:
            raise ValueError(f"{self.name} has no work to run")
        wanted = {"analysis": self.name, "input_runs": [str(p.resolve()) for p in paths], "settings": settings_dict(s)}
        return self._execute(folder, wanted, lambda context: work(paths, folder, s, context), force=force,
                             progress=progress, command=command)


ANALYSES: dict[str, Analysis] = {}


def register_analysis(analysis: Analysis) -> Analysis:
    """Add ``analysis`` to :data:`ANALYSES`.

    Raises:
        ValueError: the name is taken, or its settings' defaults fail their own checks.
    """
    if analysis.name in ANALYSES:
        raise ValueError(f"an analysis named {analysis.name!r} is already registered")
    analysis.make_settings()
    ANALYSES[analysis.name] = analysis
    return analysis


def get_analysis(name: str) -> Analysis:
    """The analysis registered as ``name`` (``ValueError`` listing the registered ones when there is none)."""
    return lookup(ANALYSES, name)


def _document(out: Path) -> Document:
    """``out/report.md`` (as the report writers wrote it: headings, paragraphs, pipe tables, figure links) as a
    :class:`~advkit.report.html.Document`, for ``report.html``."""
    lines = (out / "report.md").read_text(encoding="utf-8").splitlines()
    title = lines[0][2:] if lines and lines[0].startswith("# ") else "Analysis"
    blocks: list[Block] = []
    para: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            blocks.append(Para(" ".join(para)))
            para.clear()
        if table:
            blocks.append(Table(table[0], table[2:]))
            table.clear()

    for line in lines[1 if title != "Analysis" else 0:]:
        figures = re.findall(r"!\[([^]]*)\]\(([^)]+)\)", line)
        if line.startswith("|"):
            if para:
                flush()
            table.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
            continue
        flush()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            blocks.append(Heading(line[level:].strip(), min(max(level, 2), 3)))
        elif figures:
            blocks += [Figure(path, (out / path).read_bytes(), alt) for alt, path in figures if (out / path).is_file()]
        elif line.strip():
            para.append(line.strip())
    flush()
    return Document(title).add(*blocks)


def _finish(out: Path, lines: list[str], result: Any) -> Outcome:
    return Outcome(_document(out), lines=lines, result=result)


def _clusters(inputs: list[Path], out: Path, s: ClustersSettings, run: RunContext) -> Outcome:
    from advkit.analysis.clusters import cluster_perturbations
    from advkit.report.cluster_report import write_cluster_report

    (run_dir,) = inputs
    results = cluster_perturbations(run_dir, k_min=s.k_min, k_max=s.k_max, components=s.components, seed=s.seed,
                                    eps=s.eps, silhouette_sample=s.silhouette_sample, progress=run.progress)
    settings = {"k_min": s.k_min, "k_max": s.k_max, "components": s.components, "seed": s.seed, "eps": s.eps,
                "silhouette_sample": s.silhouette_sample}
    write_cluster_report(results, run_dir, out, command=run.command, settings=settings)
    return _finish(out, [f"eps {r.eps}: {r.n} perturbations, k = {r.k} (silhouette {r.silhouette[r.k]:.3f}); "
                         f"attack purity {100 * r.purity_attack:.1f}%, ARI attack {r.adjusted_rand_attack:.3f}, "
                         f"source {r.adjusted_rand_source:.3f}, class {r.adjusted_rand_label:.3f}" for r in results],
                   results)


def _surrogates(inputs: list[Path], out: Path, s: SurrogatesSettings, run: RunContext) -> Outcome:
    from advkit.analysis.surrogates import choose_surrogates, load_outcomes
    from advkit.report.surrogate_report import write_surrogate_report

    outcomes = load_outcomes(list(inputs), s.eps, progress=run.progress)
    targets = list(s.targets) or None
    choices = choose_surrogates(outcomes, targets, selection=s.selection, seed=s.seed, bootstrap=s.bootstrap,
                                knowledge=s.knowledge, progress=run.progress)
    settings = {"eps": outcomes.eps, "selection": s.selection, "seed": s.seed, "bootstrap": s.bootstrap,
                "targets": targets or "all", "knowledge": s.knowledge}
    write_surrogate_report(choices, outcomes, out, command=run.command, settings=settings)
    return _finish(out, [f"{c.target} ({c.group}): pick {c.pick['label']} {100 * c.pick['rate']:.1f}%, oracle "
                         f"{c.oracle['label']} {100 * c.oracle['rate']:.1f}%, average {100 * c.average['rate']:.1f}%"
                         for c in choices], choices)


def _perception(inputs: list[Path], out: Path, s: PerceptionSettings, run: RunContext) -> Outcome:
    from advkit.analysis.perception import perception_study
    from advkit.report.perception_report import write_perception_report

    (run_dir,) = inputs
    study = perception_study(run_dir, s.reference, progress=run.progress)
    write_perception_report(study, out, command=run.command, extremes=s.extremes)
    m = study.summary
    return _finish(out, [f"{m['examples']} examples: {100 * m['share_nearer_target']:.2f}% nearer their target "
                         f"class than their source class; mean distance {m['mean_distance_source']:.3f} to the "
                         f"source class, {m['mean_distance_target']:.3f} to the target class"], study)


def _transfer_run(inputs: list[Path]) -> None:
    from advkit.study.runstate import RunDir

    for p in inputs:
        RunDir(p).records()  # says what the folder is unless a finished transfer run


def _jsma_run(inputs: list[Path]) -> None:
    from advkit.analysis.perception import check_jsma_run

    check_jsma_run(inputs[0])


register_analysis(Analysis(
    "clusters", "Perturbation clusters of a finished transfer run: PCA then k-means (k by silhouette); what fills "
    "each cluster, its mean perturbation, its transfer success, its purity against the attack labels.",
    ClustersSettings, work=_clusters, check_inputs=_transfer_run,
    default_out=lambda inputs: inputs[0] / "analysis" / "clusters"))
register_analysis(Analysis(
    "surrogates", "Grey-box surrogate choice over transfer runs of the same images: knowing only the target's "
    "family, rank sources x attacks x gamma; the pick's success on fresh images vs the oracle's and the average's.",
    SurrogatesSettings, work=_surrogates, inputs="RUN_DIR...", many=True, check_inputs=_transfer_run))
register_analysis(Analysis(
    "perception", "Human perception by proxy: each JSMA example's distance to the nearest clean training image of "
    "its source and of its target class, per class pair.",
    PerceptionSettings, work=_perception, inputs="JSMA_RUN", check_inputs=_jsma_run,
    default_out=lambda inputs: inputs[0] / "analysis" / "perception"))
