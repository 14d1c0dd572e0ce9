"""The shared core every attack family builds on: the contract (:class:`~advkit.attacks.core.base.Attack`, its
finishing step, :class:`~advkit.attacks.core.base.AttackResult`), the input checks, the registry, and the
random-noise control that every transfer table compares against."""
