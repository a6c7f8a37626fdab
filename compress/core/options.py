"""Command-line options declared once, on the config dataclasses.

A config field made with :func:`option` carries its flag, help text and (through its type: a
str-Enum, ``bool``, ``int``, ...) its choices; its dataclass default is the option's default.
From that one declaration:

- :func:`command` builds a typer command whose parameters are the config tree's options (typer
  reads ``__signature__``), and hands the command a config built by keyword;
- :func:`to_argv` renders a config as the flags that reproduce it (the card's command), so that
  parsing them back gives the same config;
- ``--help`` shows the help, default and choices typer derives from the same fields.

A field without :func:`option` metadata is internal (derived or set by the program). A field whose
type is itself a dataclass is a sub-config: its options join the parent's command. An option
without a default is required (a required flag, or a positional argument that must be given).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import MISSING, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from compress.core.claim import check_writable, output_lock
from compress.core.errors import BadInputError

_KEY = "compress.option"


@dataclass(frozen=True)
class OptionSpec:
    """How one config field appears on the command line.

    ``flags``: the option's names (first one canonical); empty for a positional argument.
    ``reproduce``: False for options about one attempt rather than its result (``--overwrite``,
    ``--resume``, ``--push-to-hub``): a recorded command leaves them out.
    ``negative``: the bool's off form when it is not ``--no-`` + the flag (``--by-type`` for
    ``--layers``).
    ``metavar``: the value's placeholder in ``--help`` (typer's own when None).
    ``writes``: the option names a file or folder the command writes; :func:`command` checks it
    can be written before any work (:func:`compress.core.claim.check_writable`).
    ``lock``: the command holds the output's lock (:func:`compress.core.claim.output_lock`) while
    it runs, so a second run into it is refused (implies ``writes``).
    ``panel``: the ``--help`` panel the option is listed in; None: its config's ``PANEL`` (a
    class attribute of a sub-config, inherited by the sub-configs below it), else typer's
    default panel.
    ``to_cli`` / ``from_cli``: convert between the field's value and what the flag carries, for
    fields whose CLI form differs (``PATTERN=S`` strings for a dict, say).
    """

    help: str
    flags: tuple[str, ...] = ()
    argument: bool = False
    hidden: bool = False
    reproduce: bool = True
    cli_type: Any = None
    to_cli: Callable[[Any], Any] | None = None
    from_cli: Callable[[Any], Any] | None = None
    negative: str | None = None
    metavar: str | None = None
    writes: bool = False
    lock: bool = False
    panel: str | None = None


def choice(enum: type[Enum], value: object, flag: str) -> Enum:
    """``value`` as a member of ``enum``, or a one-line error naming ``flag`` and the choices."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise BadInputError(f"{flag} {value!r}: choose {choices}") from None


def option(
    default: Any = MISSING,
    *,
    help: str,
    flags: tuple[str, ...] | str = (),
    default_factory: Callable[[], Any] | Any = MISSING,
    argument: bool = False,
    hidden: bool = False,
    reproduce: bool = True,
    cli_type: Any = None,
    to_cli: Callable[[Any], Any] | None = None,
    from_cli: Callable[[Any], Any] | None = None,
    negative: str | None = None,
    metavar: str | None = None,
    writes: bool = False,
    lock: bool = False,
    panel: str | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    spec = OptionSpec(
        help=help,
        flags=(flags,) if isinstance(flags, str) else tuple(flags),
        argument=argument,
        hidden=hidden,
        reproduce=reproduce,
        cli_type=cli_type,
        to_cli=to_cli,
        from_cli=from_cli,
        negative=negative,
        metavar=metavar,
        writes=writes or lock,
        lock=lock,
        panel=panel,
    )
    return field(default=default, default_factory=default_factory, metadata={_KEY: spec})


@dataclass(frozen=True)
class Option:
    """One option of a config tree: where it lives (``path``), how it is spelt and the
    ``--help`` panel it is listed in (None: typer's default)."""

    path: tuple[str, ...]
    spec: OptionSpec
    annotation: Any
    default: Any
    panel: str | None = None

    @property
    def name(self) -> str:
        """The Python parameter name: the canonical flag without dashes, else the field name."""
        if self.spec.flags:
            return self.spec.flags[0].lstrip("-").replace("-", "_")
        return self.path[-1]

    @property
    def flag(self) -> str:
        return self.spec.flags[0] if self.spec.flags else "--" + self.name.replace("_", "-")

    @property
    def is_bool(self) -> bool:
        """A switch: the field is a ``bool`` or ``bool | None`` (None: decided later)."""
        return self.annotation is bool or set(typing.get_args(self.annotation)) == {
            bool,
            type(None),
        }

    @property
    def negative_flag(self) -> str:
        return self.spec.negative or "--no-" + self.flag.removeprefix("--")

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def cli_annotation(self) -> Any:
        return self.spec.cli_type if self.spec.cli_type is not None else self.annotation

    @property
    def cli_default(self) -> Any:
        if self.required:
            return inspect.Parameter.empty
        return self.spec.to_cli(self.default) if self.spec.to_cli else self.default


def flag_of(cls: type, field_name: str) -> str:
    """The flag of ``cls``'s option ``field_name`` as its spec spells it, with its aliases
    (``--batch-size/--recon-batch``), for error messages: whichever one the user typed is named."""
    f = next(f for f in dataclasses.fields(cls) if f.name == field_name)
    option = Option((f.name,), f.metadata[_KEY], None, MISSING)
    return "/".join(option.spec.flags) if option.spec.flags else option.flag


def options_of(cls: type, path: tuple[str, ...] = (), panel: str | None = None) -> Iterator[Option]:
    """Every option of the config tree rooted at ``cls``, sub-configs depth first.

    An option's panel is its own ``panel``, else the nearest ``PANEL`` of the configs holding
    it, else ``panel``.
    """
    hints = typing.get_type_hints(cls)
    panel = getattr(cls, "PANEL", panel)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from options_of(kind, (*path, f.name), panel)
        elif _KEY in f.metadata:
            spec = f.metadata[_KEY]
            yield Option((*path, f.name), spec, kind, _default_of(f), spec.panel or panel)


def _default_of(f: dataclasses.Field) -> Any:
    """The field's default; ``MISSING`` for a required option."""
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _typer_info(opt: Option) -> Any:
    import typer

    decls = list(opt.spec.flags)
    if opt.is_bool:  # --flag/--no-flag, as typer spells a bool option
        decls = [f"{decls[0] if decls else opt.flag}/{opt.negative_flag}", *decls[1:]]
    if opt.spec.argument:
        return typer.Argument(
            help=opt.spec.help,
            hidden=opt.spec.hidden,
            show_default=False,
            metavar=opt.spec.metavar,
            rich_help_panel=opt.panel,
        )
    return typer.Option(
        *decls,
        help=opt.spec.help,
        hidden=opt.spec.hidden,
        metavar=opt.spec.metavar,
        rich_help_panel=opt.panel,
    )


def parameters(cls: type) -> list[inspect.Parameter]:
    """typer-ready parameters for every option of ``cls``'s tree, panel by panel in the order of
    ``cls.PANELS`` where it names them (options of typer's default panel first).

    Raises:
        TypeError: two options of the tree share a name (one would shadow the other).
    """
    result = []
    names = [opt.name for opt in options_of(cls)]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise TypeError(f"{cls.__name__}: options declared twice: {', '.join(twice)}")
    order = getattr(cls, "PANELS", ())
    ranked = sorted(
        options_of(cls), key=lambda opt: order.index(opt.panel) if opt.panel in order else -1
    )
    for opt in ranked:
        annotation = Annotated[opt.cli_annotation, _typer_info(opt)]
        result.append(
            inspect.Parameter(
                opt.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=opt.cli_default,
                annotation=annotation,
            )
        )
    return result


def build(cls: type, values: dict[str, Any], path: tuple[str, ...] = ()) -> Any:
    """``cls`` built by keyword from parsed option values (keyed by :attr:`Option.name`).

    Options absent from ``values`` keep their defaults; sub-configs are built the same way.
    """
    specs = {opt.path: opt for opt in options_of(cls, path)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = (*path, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = build(hints[f.name], values, where)
        elif where in specs and specs[where].name in values:
            opt = specs[where]
            value = values[opt.name]
            kwargs[f.name] = opt.spec.from_cli(value) if opt.spec.from_cli else value
    return cls(**kwargs)


def value_at(config: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` of a config, or of its record (``asdict``-style nested dicts;
    ``MISSING`` where the record lacks it)."""
    for part in path:
        config = config.get(part, MISSING) if isinstance(config, dict) else getattr(config, part)
        if config is MISSING:
            break
    return config


def to_argv(config: Any, cls: type | None = None, *, complete: bool = False) -> list[str]:
    """The arguments that rebuild ``config`` through :func:`command`, in declaration order
    (positional arguments first): every option whose value differs from its default.

    ``config`` is a config object, or its record (nested dicts, as in recipe.json) with ``cls``
    naming the config class. A config class may define ``applies(config, path) -> bool``: the
    options it denies are left out (another pruning method's options). ``complete`` is for a record of what was run (the card's command):
    every value is spelt out, also where it equals today's default (a later default must not
    change what the command does), and options about the attempt (``reproduce=False``) are
    left out.
    """
    positional: list[str] = []
    flags: list[str] = []
    applies = getattr(cls or type(config), "applies", None)
    for opt in options_of(cls or type(config)):
        value = value_at(config, opt.path)
        if value is MISSING or (complete and not opt.spec.reproduce):
            continue
        if applies is not None and not applies(config, opt.path):
            continue
        if _same(value, opt.default) and not (complete and not isinstance(value, bool)):
            continue
        if opt.spec.to_cli:
            value = opt.spec.to_cli(value)
        if opt.spec.argument:
            if isinstance(value, (list, tuple)):
                positional += [_text(item) for item in value]
            elif value is not None:
                positional.append(_text(value))
        elif isinstance(value, bool):
            if value is not None and not _same(value, opt.default):
                flags.append(opt.flag if value else opt.negative_flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                flags += [opt.flag, _text(item)]
        elif value is not None:
            flags += [opt.flag, _text(value)]
    return positional + flags


def unknown_fields(cls: type, record: dict, path: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of set entries of ``record`` that no option of ``cls`` expresses."""
    hints = typing.get_type_hints(cls)
    names = []
    for key, value in record.items():
        kind = hints.get(key)
        if kind is not None and dataclasses.is_dataclass(kind) and isinstance(value, dict):
            names += unknown_fields(kind, value, (*path, key))
        elif kind is None and value not in (None, False, [], {}, ""):
            names.append(".".join((*path, key)))
    return names


def _same(value: Any, default: Any) -> bool:
    if isinstance(value, Enum) or isinstance(default, Enum):
        return _text(value) == _text(default)
    return value == default


def _text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def read_recipe(path: Path, file_name: str) -> dict:
    """The record in ``path``: a JSON file, or a folder holding ``file_name``.

    Raises:
        BadInputError: there is no such file, or it is not a JSON object.
    """
    file = path / file_name if path.is_dir() else path
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(
            f"--recipe {path}: no such file or folder holding {file_name}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"--recipe {file}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"--recipe {file}: not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise BadInputError(f"--recipe {file}: not a recipe (a JSON object of options)")
    return record


def recipe_defaults(
    cls: type, record: dict, extras: tuple[str, ...] = (), source: str = "the recipe"
) -> dict[str, Any]:
    """The values a record (nested dicts, as :meth:`to_dict`-style recipe.json holds) gives the
    options of ``cls``'s tree, keyed by :attr:`Option.name` in their command-line form.

    Options about one attempt (``reproduce=False``: ``--overwrite``, ``--resume``, ...) are left
    out: running a recipe again must not replace its own folder or push again unless asked.
    ``extras``: top-level keys the record may hold beside the options (``versions``);
    ``source``: what the error messages call the record.

    Raises:
        BadInputError: the record holds keys no option expresses, or a section that is not one.
    """
    record = renamed(cls, record)
    unknown = [key for key in unknown_fields(cls, record) if key not in extras]
    if unknown:
        raise BadInputError(
            f"{source}: no option takes {', '.join(unknown)} (written by another version?)"
        )
    values = {}
    for opt in options_of(cls):
        value: Any = record
        for depth, part in enumerate(opt.path):
            if not isinstance(value, dict):
                section = ".".join(opt.path[:depth])
                raise BadInputError(f"{source}: {section} is not a section of options")
            value = value.get(part, MISSING)
            if value is MISSING:
                break
        if value is MISSING or not opt.spec.reproduce:
            continue
        values[opt.name] = opt.spec.to_cli(value) if opt.spec.to_cli else value
    return values


def renamed(cls: type, record: dict) -> dict:
    """``record`` with the top-level keys of an earlier version that ``cls.RENAMED`` maps (old
    key -> path of the option now) moved to their paths; a key holding None is dropped."""
    record = dict(record)
    for old, path in getattr(cls, "RENAMED", {}).items():
        if old not in record:
            continue
        value = record.pop(old)
        if value is None:
            continue
        where = record
        for part in path[:-1]:
            where[part] = dict(where.get(part) or {})
            where = where[part]
        where[path[-1]] = value
    return record


def _recipe_parameter(cls: type, file_name: str, extras: tuple[str, ...]) -> inspect.Parameter:
    """``--recipe FILE|DIR``: read first (eager), its values become the other options' defaults
    (click's ``default_map``), so a flag given beside it wins and each value is converted and
    checked as the flag's would be."""
    import typer

    def load(ctx: Any, value: Path | None) -> Path | None:
        if value is None:
            return None
        value = Path(value)
        defaults = recipe_defaults(cls, read_recipe(value, file_name), extras, f"--recipe {value}")
        keys = {opt.name: ".".join(opt.path) for opt in options_of(cls)}
        for param in ctx.command.params:
            if param.name in defaults:  # converted and checked as the typed flag would be
                try:
                    param.process_value(ctx, defaults[param.name])
                except typer.BadParameter as exc:
                    shown = defaults[param.name]
                    raise BadInputError(
                        f"--recipe {value}: {keys[param.name]} {shown!r}: {exc.message}"
                    ) from None
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
        return value

    info = typer.Option(
        "--recipe",
        metavar="FILE|DIR",
        is_eager=True,
        callback=load,
        help=f"Run a recorded {file_name} (or the folder holding it) again; flags given beside "
        "it override its values. Options about one attempt (--overwrite, --resume, "
        "--push-to-hub, ...) are not taken from it.",
    )
    return inspect.Parameter(
        "recipe",
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[Path | None, info],
    )


def command(
    cls: type,
    run: Callable[[Any], Any],
    doc: str,
    *,
    name: str,
    recipe: str | None = None,
    recipe_extras: tuple[str, ...] = (),
) -> Callable[..., Any]:
    """A typer command taking every option of ``cls``'s tree, calling ``run(config)``.

    ``recipe``: the file name a config of ``cls`` is recorded in (``recipe.json``); the command
    then also takes ``--recipe FILE|DIR`` to run a record again (:func:`recipe_defaults`), the
    record's top-level ``recipe_extras`` keys (``versions``) being no options.
    """
    params = parameters(cls)
    if recipe is not None:
        if any(param.name == "recipe" for param in params):
            raise TypeError(f"{cls.__name__}: an option named recipe hides --recipe")
        params.insert(0, _recipe_parameter(cls, recipe, recipe_extras))

    def invoke(**values: Any) -> Any:
        if recipe is not None:
            values.pop("recipe")
        config = build(cls, values)
        outputs = [(opt, value_at(config, opt.path)) for opt in options_of(cls) if opt.spec.writes]
        outputs = [(opt, Path(value)) for opt, value in outputs if value]
        for opt, path in outputs:
            check_writable(path, opt.flag)
        with ExitStack() as held:
            for opt, path in outputs:
                if opt.spec.lock:
                    held.enter_context(output_lock(path))
            return run(config)

    invoke.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    invoke.__doc__ = doc
    invoke.__name__ = name
    invoke.__qualname__ = name
    return invoke
