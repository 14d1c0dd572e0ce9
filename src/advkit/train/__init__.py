"""Training: deterministic clean and adversarial training of the zoo's architectures.

    model, card = advkit.train.train("resnet20", "fashion-mnist", recipe=advkit.train.Recipe(epochs=8), seed=0,
                                     out="resnet20.safetensors")

:mod:`advkit.train.recipe` holds the hyper-parameters a card records (:class:`Recipe`) and the command that
reproduces them; :mod:`advkit.train.loop` the training loop; :mod:`advkit.train.adversarial` the adversarial
training of Goodfellow, Shlens & Szegedy 2015 (FGSM crafted on the fly, the mixed objective).
"""

from advkit.train.adversarial import adversarial_objective, fgsm_accuracy, fgsm_craft
from advkit.train.loop import NO_FLIP, TrainingDivergedError, accuracy, augment_batch, bf16_supported, train
from advkit.train.recipe import (
    ADVERSARIAL_DEFAULTS,
    OBJECTIVE,
    SCHEDULE_NOTES,
    SCHEDULES,
    Recipe,
    adversarial_settings,
    card_recipe_notes,
    train_command,
)

__all__ = ["ADVERSARIAL_DEFAULTS", "NO_FLIP", "OBJECTIVE", "SCHEDULES", "SCHEDULE_NOTES", "Recipe",
           "TrainingDivergedError", "accuracy",
           "adversarial_objective", "adversarial_settings", "augment_batch", "bf16_supported", "card_recipe_notes",
           "fgsm_accuracy", "fgsm_craft", "train", "train_command"]
