"""The human perception study of Papernot et al., "The Limitations of Deep Learning in Adversarial Settings"
(EuroS&P 2016), Section V-C, run with people: a local web study over a finished ``advkit reproduce jsma`` run.

- :mod:`advkit.humans.store`: ``RUN_DIR/humans.sqlite`` (schema, one transaction per answer, :func:`connect`).
- :mod:`advkit.humans.items`: the item set (adversarial examples, clean controls, attention checks) and the balanced
  assignment of items to participants.
- :mod:`advkit.humans.app`: the Starlette app (``create_app``) and ``serve`` (uvicorn), ``advkit humans serve``.
- :mod:`advkit.humans.analysis` and :mod:`advkit.humans.report`: the answers' analysis and its report,
  ``advkit analyze humans``.

The web parts need the optional extra: ``pip install 'advkit[humans]'`` (starlette, uvicorn, python-multipart).
Importing this package imports none of them.
"""

from __future__ import annotations

__all__ = ["EXTRA_HINT", "missing_extra"]

EXTRA_HINT = "pip install 'advkit[humans]'"


def missing_extra(name: str | None) -> ModuleNotFoundError:
    """The error for a missing web dependency, naming the extra that installs it."""
    what = name.split(".")[0] if name else "starlette / uvicorn / python-multipart"
    return ModuleNotFoundError(f"the web study needs {what}, which is not installed: {EXTRA_HINT}")
