"""The architecture registry: every zoo architecture with its metadata.

An entry says which family it belongs to, which paper it follows and what connections it has (``residual``,
``dense`` or ``none``), which the Skip Gradient Method and the transfer study use to group models.

Another installed package adds architectures through the entry-point group ``advkit.architectures``: each entry
point's name is the architecture's name and it loads a builder ``(in_channels, num_classes, image_size) ->
nn.Module`` like the zoo's (optional attributes ``family``, ``connections``, ``paper``, ``description`` fill in
its metadata) or a whole :class:`ArchSpec`. They are read once, the first time a name is looked up, so
``advkit models list``, ``advkit train``, ``advkit models import`` and the checkpoints in experiment files all see
them. An entry point that fails to load, or that takes a built-in name, is skipped with a warning naming its
distribution, never a crash.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from torch import nn

from advkit.models.zoo import densenet, inception, mobilenet, resnet, simple

Builder = Callable[[int, int, int], nn.Module]


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture.

    Attributes:
        name: registry name, e.g. ``"resnet20"``.
        build: ``(in_channels, num_classes, image_size) -> nn.Module`` taking normalised inputs.
        family: ``linear``, ``maxout``, ``mlp``, ``lenet``, ``vgg``, ``resnet``, ``densenet``, ``inception``,
            ``mobilenet``.
        connections: ``"residual"``, ``"dense"`` or ``"none"``.
        paper: the architecture's source.
        description: one line for listings.
    """

    name: str
    build: Builder
    family: str
    connections: str
    paper: str
    description: str


_ARCHS: dict[str, ArchSpec] = {}
ENTRY_POINT_GROUP = "advkit.architectures"
_BUILTIN: frozenset[str] = frozenset()  # the zoo's names, set below once they are registered
_entry_points_read = False


NameLoader = Callable[[str, str], nn.Module]
_NAME_SCHEMES: dict[str, NameLoader] = {}
# prefixes a later layer registers, and the package that registers each (imported by advkit.attacks)
KNOWN_SCHEMES = {"defended:": "advkit.defences"}


def register_name_scheme(prefix: str, loader: NameLoader) -> None:
    """Let :func:`advkit.models.load` accept names starting with ``prefix`` (``"defended:"``): ``loader(name,
    dataset)`` builds the model. A later layer registers its scheme when imported (``advkit.defences``); a prefix
    registered twice raises ``ValueError``."""
    if prefix in _NAME_SCHEMES:
        raise ValueError(f"model name scheme {prefix!r} is already registered")
    _NAME_SCHEMES[prefix] = loader


def name_scheme(name: str) -> NameLoader | None:
    """The loader registered for ``name``'s prefix; ``ValueError`` naming the package to import for a known
    prefix whose package is not imported yet; ``None`` for other names."""
    for prefix, loader in _NAME_SCHEMES.items():
        if name.startswith(prefix):
            return loader
    for prefix, package in KNOWN_SCHEMES.items():
        if name.startswith(prefix):
            raise ValueError(f"{name!r}: {prefix} names are loaded by {package}; import it first "
                             f"(import {package}; advkit.attacks and the CLI import it)")
    return None


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add an architecture; a name registered twice raises ``ValueError``."""
    if spec.name in _ARCHS:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    if spec.connections not in ("residual", "dense", "none"):
        raise ValueError(f"connections must be residual, dense or none, got {spec.connections!r}")
    _ARCHS[spec.name] = spec
    return spec


def get_arch(name: str) -> ArchSpec:
    """Look up an architecture; unknown names raise ``ValueError`` listing the registered ones."""
    _read_entry_points()
    try:
        return _ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(_ARCHS))}") from None


def arch_names() -> list[str]:
    """Registered architecture names in registration order (the zoo's, then those of installed packages)."""
    _read_entry_points()
    return list(_ARCHS)


def _read_entry_points() -> None:
    """Register the architectures of the ``advkit.architectures`` entry points, once per process."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        problem = _register_entry_point(ep)
        if problem:
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
            warnings.warn(f"architecture {ep.name!r} (entry point {ep.name} = {ep.value} in group "
                          f"{ENTRY_POINT_GROUP}, from {dist}) is not available: {problem}", stacklevel=3)


def _register_entry_point(ep: EntryPoint) -> str | None:
    """Register one entry point's architecture; the reason it is refused, or ``None``."""
    if ep.name in _BUILTIN:
        return "advkit has a built-in architecture of that name; rename the entry point in that package"
    if ep.name in _ARCHS:
        return "another package (or register_arch) registered that name first; rename one of them"
    try:
        obj = ep.load()
    except Exception as e:  # a plug-in's import may fail in any way; it must not stop advkit
        return f"loading it failed ({type(e).__name__}: {e})"
    if isinstance(obj, ArchSpec):
        if obj.name != ep.name:
            return f"it loads ArchSpec {obj.name!r}; the entry point's name must be the architecture's name"
        spec = obj
    elif callable(obj):
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        spec = ArchSpec(ep.name, obj, str(getattr(obj, "family", ep.name)),
                        str(getattr(obj, "connections", "none")), str(getattr(obj, "paper", "-")),
                        str(getattr(obj, "description", doc[0] if doc else ep.value)))
    else:
        return (f"it loads a {type(obj).__name__}, not a builder (in_channels, num_classes, image_size) -> nn.Module "
                f"or an ArchSpec")
    try:
        register_arch(spec)
    except ValueError as e:
        return str(e)
    return None


for _spec in [
    ArchSpec("linear", simple.LinearSoftmax, "linear", "none", "Goodfellow et al. 2015",
             "shallow softmax classifier (one affine layer)"),
    ArchSpec("maxout", simple.MaxoutNet, "maxout", "none", "Goodfellow et al. 2015",
             "maxout network, 2 x 240 units x 5 pieces, dropout"),
    ArchSpec("mlp", simple.MLP, "mlp", "none", "-", "multilayer perceptron, 2 x 512 ReLU units"),
    ArchSpec("lenet", simple.LeNet, "lenet", "none", "Papernot et al. 2016",
             "the JSMA paper's MNIST LeNet (conv32-conv32-pool-conv64-conv64-pool-fc200-fc200)"),
    ArchSpec("lenet5", simple.LeNet5, "lenet", "none", "Ding et al. 2019 (AdverTorch)",
             "AdverTorch's MNIST LeNet-5 (conv32-pool-conv64-pool-fc200); imports its checkpoints as they are"),
    ArchSpec("vgg11_bn", simple.VGG, "vgg", "none", "Simonyan & Zisserman 2015",
             "VGG-11 layout with batch norm at half width"),
    ArchSpec("resnet20", resnet.resnet(20), "resnet", "residual", "He et al. 2016",
             "ResNet-20, 9 basic blocks, widths 16-32-64"),
    ArchSpec("resnet56", resnet.resnet(56), "resnet", "residual", "He et al. 2016",
             "ResNet-56, 27 basic blocks, widths 16-32-64"),
    ArchSpec("resnet110", resnet.resnet(110), "resnet", "residual", "He et al. 2016",
             "ResNet-110, 54 basic blocks, widths 16-32-64"),
    ArchSpec("resnet29_bottleneck", resnet.resnet29_bottleneck, "resnet", "residual", "He et al. 2016",
             "bottleneck ResNet-29, 9 bottleneck blocks"),
    ArchSpec("preact_resnet20", resnet.preact_resnet20, "resnet", "residual", "He et al. 2016b",
             "pre-activation ResNet-20"),
    ArchSpec("wrn16_2", resnet.wrn16_2, "resnet", "residual", "Zagoruyko & Komodakis 2016",
             "Wide ResNet 16-2, pre-activation blocks, widths 32-64-128"),
    ArchSpec("resnext29_4x8d", resnet.resnext29_4x8d, "resnet", "residual", "Xie et al. 2017",
             "ResNeXt-29, cardinality 4, grouped bottlenecks"),
    ArchSpec("se_resnet20", resnet.se_resnet20, "resnet", "residual", "Hu et al. 2018",
             "SE-ResNet-20, squeeze-and-excitation on each residual branch"),
    ArchSpec("densenet_bc40", densenet.densenet_bc40, "densenet", "dense", "Huang et al. 2017",
             "DenseNet-BC-40, growth rate 12"),
    ArchSpec("inception", inception.InceptionNet, "inception", "none", "Szegedy et al. 2015",
             "small GoogLeNet-style Inception net, no skip connections"),
    ArchSpec("inception_resnet", inception.InceptionResNet, "inception", "residual", "Szegedy et al. 2017",
             "small Inception-ResNet, residuals scaled by 0.2"),
    ArchSpec("mobilenet_v2", mobilenet.MobileNetV2, "mobilenet", "residual", "Sandler et al. 2018",
             "MobileNetV2 at width 0.5, inverted residuals"),
]:
    register_arch(_spec)
_BUILTIN = frozenset(_ARCHS)
