"""Config dataclasses that are the command line's schema.

A field made with ``setting(default, "help")`` documents itself, and a ``Literal[...]`` annotation
lists its choices. ``check_choices(config)`` (from ``__post_init__``) refuses a value outside them
with one line, for the command line and for Python callers alike. A `cli` command declared with
``cls=Configured, config="module:Class"`` gets its options generated from the same fields (name,
type, default, help, choices); a command whose config is not one yet takes a config's options with
``@options(ConfigClass)``. So a setting and its choices are written once, beside the code that uses
them, and checked once.

Metadata a setting may carry for the command line: ``option`` (its name when not ``--field-name``),
``required`` (a command must be given it although Python callers have a default), ``parse`` (turns
the command line's text into the field's value, e.g. a comma-separated list into a tuple) and
``argument`` (a positional argument, FIELD_NAME, instead of an option) and ``multiple`` (a repeatable
option whose values make a tuple).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal

import click

from common import UserError

MISSING = dataclasses.MISSING


SEED_MAX = 2**32 - 1  # numpy and torch take seeds in [0, 2**32)


def available_cpus() -> int:
    """The CPUs this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def setting(default: Any = MISSING, help: str = "", *, option: str | None = None, required: bool = False,
            parse: Callable[[str], Any] | None = None, argument: bool = False, default_factory: Any = MISSING,
            multiple: bool = False, at_least: int | None = None, at_most: int | Callable[[], int] | None = None) -> Any:
    """A documented dataclass field (see the module docstring); ``at_least`` / ``at_most`` bound a number
    (``at_most`` may be a function, read when the value is checked)."""
    metadata = {"help": help, "option": option, "required": required, "parse": parse, "argument": argument,
                "multiple": multiple, "at_least": at_least, "at_most": at_most}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def option_name(field: dataclasses.Field) -> str:
    return field.metadata.get("option") or "--" + field.name.replace("_", "-")


def field_types(config_class: type) -> dict[str, Any]:
    """Each field's annotation, evaluated (configs use ``from __future__ import annotations``)."""
    return typing.get_type_hints(config_class)


def choices(annotation: Any) -> tuple | None:
    """The values a ``Literal`` (or an optional ``Literal``) annotation allows; None for any other type."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            found = choices(member)
            if found is not None:
                return found
    return None


def check_choices(config: Any) -> None:
    """A UserError naming the option for the first field whose value is outside its ``Literal`` choices
    or its bounds."""
    types_of = field_types(type(config))
    for field in dataclasses.fields(config):
        allowed = choices(types_of[field.name])
        value = getattr(config, field.name)
        if allowed is not None and value is not None and value not in allowed:
            raise UserError(f"unknown {option_name(field)} {value!r} (choose from {', '.join(map(str, allowed))})")
        if value is not None and not isinstance(value, bool) and isinstance(value, int):
            check_bounds(value, option_name(field), field.metadata.get("at_least"), field.metadata.get("at_most"))


def check_bounds(value: int, option: str, at_least: int | None, at_most: int | Callable[[], int] | None) -> int:
    """``value`` when it lies within the bounds; else a UserError naming the option."""
    if at_least is not None and value < at_least:
        raise UserError(f"{option} must be at least {at_least}, got {value}")
    limit = at_most() if callable(at_most) else at_most
    if limit is not None and value > limit:
        why = " (the CPUs this process may use)" if at_most is available_cpus else ""
        raise UserError(f"{option} must be at most {limit}{why}, got {value}")
    return value


def check_seed(seed: int, option: str = "--seed") -> int:
    return check_bounds(seed, option, 0, SEED_MAX)


class Configured(click.Command):
    """A click command whose options are generated from the documented fields of a config dataclass,
    nested configs included, and whose callback gets ``config`` built from them (besides its own
    options). ``config`` is "module:Class", imported only when the command is used, so listing a
    group's commands imports nothing."""

    def __init__(self, *args, config: str, **kwargs):
        self._config, self._entries, self._all_params = config, None, None
        super().__init__(*args, **kwargs)

    @property
    def config_class(self) -> type:
        module, name = self._config.split(":")
        return getattr(importlib.import_module(module), name)

    @property
    def entries(self) -> list[tuple[tuple[str, ...], dataclasses.Field, Any]]:
        if self._entries is None:
            self._entries = documented_fields(self.config_class)
        return self._entries

    @property
    def params(self) -> list:
        """The generated options, then the command's own: one list, which click appends its help option to."""
        if self._all_params is None:
            generated = [_parameter(path, field, annotation) for path, field, annotation in self.entries]
            self._all_params = generated + self._own_params
        return self._all_params

    @params.setter
    def params(self, value: list) -> None:
        self._own_params, self._all_params = value, None

    def invoke(self, ctx: click.Context):
        values = {path: ctx.params.pop("__".join(path)) for path, _, _ in self.entries}
        ctx.params["config"] = build_config(self.config_class, values)
        return super().invoke(ctx)


def options(config_class: type):
    """A decorator adding the options of ``config_class``'s documented fields to a hand-written command
    (whose function then takes them as keywords, named after the fields)."""
    def decorate(command):
        for path, field, annotation in reversed(documented_fields(config_class)):
            command.__dict__.setdefault("__click_params__", []).append(_parameter(path, field, annotation))
        return command

    return decorate


def documented_fields(config_class: type, prefix: tuple[str, ...] = ()) -> list:
    """(path, field, annotation) of every documented field, the class's own before inherited ones."""
    types_of = field_types(config_class)
    own = config_class.__dict__.get("__annotations__", {})
    found = []
    for field in sorted(dataclasses.fields(config_class), key=lambda f: f.name not in own):
        annotation = types_of[field.name]
        if dataclasses.is_dataclass(annotation):
            found += documented_fields(annotation, (*prefix, field.name))
        elif field.metadata.get("help"):
            found.append(((*prefix, field.name), field, annotation))
    return found


def build_config(config_class: type, values: dict[tuple[str, ...], Any], prefix: tuple[str, ...] = ()) -> Any:
    """The config from the command line's values by field path; a setting's ``parse`` turns its text into its value."""
    settings = {}
    for field in dataclasses.fields(config_class):
        path = (*prefix, field.name)
        annotation = field_types(config_class)[field.name]
        if dataclasses.is_dataclass(annotation):
            if any(key[:len(path)] == path for key in values):
                settings[field.name] = build_config(annotation, values, path)
        elif path in values:
            value, parse = values[path], field.metadata.get("parse")
            settings[field.name] = parse(value) if parse and isinstance(value, str) else value
    return config_class(**settings)


def _parameter(path: tuple[str, ...], field: dataclasses.Field, annotation: Any) -> click.Parameter:
    kwargs = _option_kwargs(field, annotation)
    if field.metadata.get("argument"):
        kwargs.pop("help")
        return click.Argument(["__".join(path)], required=kwargs.pop("required", False),
                              **{k: v for k, v in kwargs.items() if k != "show_default"})
    return click.Option([_option_name(field, annotation), "__".join(path)], **kwargs)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not MISSING else None


def _option_name(field: dataclasses.Field, annotation: Any) -> str:
    name = option_name(field)
    if _base_type(annotation) is bool and field.default is not False and "/" not in name:
        name = f"{name}/--no-{name[2:]}"  # a switch whose default is on, or decided later (None)
    return name


def _option_kwargs(field: dataclasses.Field, annotation: Any) -> dict:
    kwargs: dict[str, Any] = {"help": field.metadata["help"]}
    default, kind, allowed = _default(field), _base_type(annotation), choices(annotation)
    if kind is bool:  # --name (off by default), or --name/--no-name
        return {**kwargs, "is_flag": True} if default is False else {**kwargs, "default": default,
                                                                     "show_default": default is not None}
    if field.metadata.get("multiple"):
        return {**kwargs, "multiple": True}
    if field.metadata.get("parse") and isinstance(default, tuple):
        default = ",".join(map(str, default))
    if allowed is not None:  # checked by the config itself (check_choices), with its one-line error
        kwargs["metavar"] = "[" + "|".join(map(str, allowed)) + "]"
    elif kind in (int, float):
        kwargs["type"] = kind
    elif kind is Path:
        kwargs["type"] = click.Path(path_type=Path)
    if field.metadata.get("required") or (field.default is MISSING and field.default_factory is MISSING):
        return {**kwargs, "required": True}
    return {**kwargs, "default": default, "show_default": default is not None}


def _base_type(annotation: Any) -> Any:
    """The annotation without None: ``int | None`` -> int."""
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(members) == 1:
        return members[0]
    return annotation
