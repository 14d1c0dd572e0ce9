"""Whether a model that training uses (a generator's source, a UAP's source, an ensemble's static model) fits the
dataset it is used on, checked from its card before any data is loaded or any step is taken."""

from __future__ import annotations

from torch import nn

from advkit.data import get_spec

__all__ = ["check_model_fits"]


def check_model_fits(model: nn.Module, spec: str, dataset: str, role: str, *, same_classes: bool,
                     allow_other_dataset: bool = False, allowed_by: str | None = None) -> None:
    """``ValueError`` naming ``role`` and ``spec`` when ``model`` was made for other data than ``dataset``.

    Checked where the dataset has fixed classes and shape (mnist, fashion-mnist, cifar10; an image folder's are
    known only once loaded): the model's input shape against the images'; with ``same_classes``, its class count
    against the dataset's; and the dataset its card says it was trained on.

    Args:
        model: a loaded classifier (:func:`advkit.models.load`); its ``card`` says what it was trained on.
        spec: how the user named it (for the message).
        dataset: the dataset it is about to be used on.
        role: what it is, for the message (``"source"``, ``"static model"``).
        same_classes: the dataset's labels are used with the model's logits (ensemble adversarial training), so
            the class count must match; a generator or a UAP uses the model's own predictions.
        allow_other_dataset: a model trained on another dataset of the same shape is fine (a cross-domain
            generator or UAP, Naseer et al. 2019, asked for on purpose).
        allowed_by: the option that sets ``allow_other_dataset``, offered in the message.
    """
    try:
        ds = get_spec(dataset)
    except ValueError:
        return
    if not ds.classes or ds.loader is not None:  # image folders (imagenet too): the files decide size and classes
        return
    card = getattr(model, "card", None) or {}
    shape = tuple(getattr(model, "input_shape", None) or card.get("input_shape") or ())
    if shape and shape != tuple(ds.shape):
        raise ValueError(f"{role} {spec} takes {'x'.join(map(str, shape))} images but {dataset} images are "
                         f"{'x'.join(map(str, ds.shape))}; choose a {role} trained on {dataset} (advkit models list "
                         f"--dataset {dataset})")
    classes = getattr(model, "num_classes", None) or card.get("num_classes")
    if same_classes and classes is not None and classes != len(ds.classes):
        raise ValueError(f"{role} {spec} has {classes} classes but {dataset} has {len(ds.classes)}; choose a {role} "
                         f"trained on {dataset} (advkit models list --dataset {dataset})")
    trained_on = card.get("dataset")
    if not allow_other_dataset and isinstance(trained_on, str) and trained_on != dataset:
        fix = f"choose a {role} trained on {dataset} (advkit models list --dataset {dataset})"
        if allowed_by:
            fix = (f"give --dataset {trained_on}, a {role} trained on {dataset}, or {allowed_by} to train on "
                   f"{dataset} images against a {trained_on} model on purpose (cross-domain, Naseer et al. 2019)")
        elif same_classes:
            fix = f"its classes are {trained_on}'s, not {dataset}'s; {fix}"
        raise ValueError(f"{role} {spec} was trained on {trained_on}, not {dataset}: {fix}")
