"""Backends register by (stage, name); pipelines are built from names and plain-data configs.

A new backend is one new module that decorates its factory with ``@register(stage, name)``; callers
never import backends directly, so adding one touches no caller.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

STAGES = ("regions", "key", "describe", "text", "generate")

# Modules imported on first lookup so that their @register decorators run. Heavy optional
# backends (torch, transformers) are listed here too; they import their libraries lazily.
_BUILTIN_MODULES = (
    "semcom.codec.regions",
    "semcom.codec.key",
    "semcom.codec.describe",
    "semcom.codec.text",
    "semcom.codec.generate",
)

_FACTORIES: dict[tuple[str, str], Callable[..., Any]] = {}
_loaded = False


def register(stage: str, name: str):
    """Decorator: make ``factory(**config)`` available as backend ``name`` of ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")

    def decorate(factory):
        key = (stage, name)
        if key in _FACTORIES and _FACTORIES[key] is not factory:
            raise ValueError(f"backend {name!r} registered twice for stage {stage!r}")
        codec_id = getattr(factory, "codec_id", None)
        if codec_id is not None:
            taken = _codec_names(stage).get(codec_id)
            if taken not in (None, name):
                raise ValueError(f"{stage} codec id {codec_id} of {name!r} is already {taken!r}'s")
        _FACTORIES[key] = factory
        return factory

    return decorate


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _loaded = True


def available(stage: str) -> list[str]:
    """Names of the backends registered for ``stage``."""
    _load_builtins()
    return sorted(name for (s, name) in _FACTORIES if s == stage)


def factory(stage: str, name: str) -> Callable[..., Any]:
    """The registered factory (usually the backend class) without building it: lets callers read
    class attributes such as ``codec_id`` of backends that need model weights to construct."""
    _load_builtins()
    try:
        return _FACTORIES[(stage, name)]
    except KeyError:
        raise KeyError(f"no {stage} backend named {name!r}; available: {available(stage)}") from None


def _codec_names(stage: str) -> dict[int, str]:
    return {f.codec_id: n for (s, n), f in _FACTORIES.items() if s == stage and hasattr(f, "codec_id")}


def codec_names(stage: str) -> dict[int, str]:
    """Wire codec id -> backend name for ``stage`` ("key" or "text"), read off the backends' own
    ``codec_id`` class attributes, so a new codec is registered in one place. Ids are never reused."""
    _load_builtins()
    return _codec_names(stage)


def name_for_codec_id(stage: str, codec_id: int) -> str:
    """Backend name of a codec id read off the wire; ValueError for ids this build lacks."""
    names = codec_names(stage)
    try:
        return names[codec_id]
    except KeyError:
        raise ValueError(f"unknown {stage} codec id {codec_id}; known: {names}") from None


def create(stage: str, name: str, **config: Any) -> Any:
    """Build backend ``name`` of ``stage`` from keyword config; unknown names list the known ones."""
    _load_builtins()
    try:
        factory = _FACTORIES[(stage, name)]
    except KeyError:
        raise KeyError(f"no {stage} backend named {name!r}; available: {available(stage)}") from None
    return factory(**config)
