"""The transfer study: craft on some sources, count how many examples fool each target.

    cfg = advkit.study.load_config("examples/transfer_small.yaml", {"sample.n": 50})
    result = advkit.study.run_study(cfg, "runs/transfer-small")          # resumable; backend="ray" fans out

Where things are:

* :mod:`~advkit.study.schema`, :mod:`~advkit.study.validate`, :mod:`~advkit.study.attack_checks`,
  :mod:`~advkit.study.config`: the experiment file (dataclasses, checks naming the field, :func:`load_config`);
* :mod:`~advkit.study.sweep`: sweeps over any attack setting and the one builder of an attack's arguments;
* :mod:`~advkit.study.plan`: the experiment resolved once into frozen, fully specified cells (:func:`plan_cells`),
  which the runner, the backends and the records only read; :mod:`~advkit.study.sample`: which images are attacked;
* :mod:`~advkit.study.cells`: one shard of a cell (craft on the source, evaluate every model);
* :mod:`~advkit.study.runstate`: the run directory, atomic writes, resume; :mod:`~advkit.study.aggregate`: tidy
  records; :mod:`~advkit.study.ray_backend`: the Ray backend; :mod:`~advkit.study.runner`: :func:`run_study`;
* :mod:`~advkit.study.attack_run`: the single-model ``advkit attack`` run;
* :mod:`~advkit.study.errors`: :class:`ConfigError`, :class:`RunExistsError`, :class:`RunConfigMismatchError`.
"""

from advkit.study.config import AttackSpec, SampleSpec, StudyConfig, apply_overrides, load_config
from advkit.study.errors import ConfigError, RunConfigMismatchError, RunExistsError
from advkit.study.plan import Cell, plan_cells
from advkit.study.ray_backend import WorkerLostError
from advkit.study.runlock import RunLockedError
from advkit.study.runner import StudyResult, run_study
from advkit.study.runstate import DiskFullError, RunDir
from advkit.study.sample import ProgressFn

__all__ = ["AttackSpec", "Cell", "ConfigError", "DiskFullError", "ProgressFn", "RunConfigMismatchError", "RunDir",
           "RunExistsError", "RunLockedError", "SampleSpec", "StudyConfig", "StudyResult", "WorkerLostError",
           "apply_overrides", "load_config", "plan_cells", "run_study"]
