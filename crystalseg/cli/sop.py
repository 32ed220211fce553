"""``--config SOP.toml``: a command's options from a standard operating procedure file.

An SOP file is TOML whose keys are the command's option names (``min-area`` or
``min_area`` for ``--min-area``). It holds either the options of one command, or one
table per command (``[segment]``, ``[measure]``, ``[report]``, ``[export]``), so that
one file writes down a whole procedure and each command reads its own table::

    [measure]
    min-area = "20um2"
    edge = "exclude"
    bins = [1, 1000, 60]

Options given on the command line win over the file. The file's values go through
click's ``default_map`` (the defaults of this one invocation), so they are converted
and checked exactly as the flags are. A key that is no option of the command is
refused, naming the closest one. What the file said (its path, sha256 and content)
goes into the provenance of what the command made: :func:`sop_request`.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import tomllib
from click.core import ParameterSource

from crystalseg.errors import ConfigError, InputNotFoundError

#: ``ctx.meta`` key of what the SOP file of this invocation holds (see :func:`sop_request`).
_META_KEY = "crystalseg.sop"


def option_keys(command: click.Command) -> dict[str, click.Option]:
    """The keys an SOP file may set for ``command``: each option's long name with
    underscores (``min_area`` for ``--min-area``), to the option. ``--config`` itself,
    hidden options and ``--help`` are not among them."""
    keys: dict[str, click.Option] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or param.name == "config":
            continue
        long = [o for o in param.opts if o.startswith("--")]
        if long:
            keys[long[0][2:].replace("-", "_")] = param
    return keys


def read_sop(path: Path, command: click.Command, commands: set[str]) -> dict[str, Any]:
    """What an SOP file sets for ``command``: ``values`` (option name -> value, as
    click's ``default_map`` takes them) and the ``record`` for the provenance.

    Parameters
    ----------
    path : the TOML file
    command : the command being run
    commands : names of every crystalseg command (a table so named is a section)

    Raises
    ------
    InputNotFoundError
        No such file.
    ConfigError
        Not TOML, a table named after no command, a key that is no option of
        ``command``, or a value of the wrong kind.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputNotFoundError(f"SOP file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"SOP file '{path}' is a folder; expected a .toml file") from None
    try:
        content = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"SOP file '{path}' is not valid TOML ({exc}); write e.g. min-area = \"20um2\""
        ) from None
    name = command.name or ""
    tables = {k for k, v in content.items() if isinstance(v, dict)}
    section: str | None = None
    options = content
    if tables:  # one table per command: this command reads its own
        for table in sorted(tables - commands):
            raise ConfigError(
                f"SOP file '{path}': table [{table}] names no crystalseg command"
                f"{_closest(table, commands)}; tables are commands, e.g. [measure]"
            )
        loose = sorted(set(content) - tables)
        if loose:
            raise ConfigError(
                f"SOP file '{path}': key '{loose[0]}' stands outside the command tables; "
                f"move it into one of [{'], ['.join(sorted(tables))}]"
            )
        if name not in tables:
            raise ConfigError(
                f"SOP file '{path}' has no [{name}] table (it has "
                f"[{'], ['.join(sorted(tables))}]); add one for crystalseg {name}"
            )
        section, options = name, content[name]
    keys = option_keys(command)
    values: dict[str, Any] = {}
    for key, value in options.items():
        option = keys.get(key.replace("-", "_"))
        if option is None or option.name is None:
            valid = ", ".join(k.replace("_", "-") for k in sorted(keys))
            raise ConfigError(
                f"SOP file '{path}': '{key}' is no option of crystalseg {name}"
                f"{_closest(key.replace('-', '_'), keys, dashes=True)}; valid keys: {valid}"
            )
        values[option.name] = value
    return {
        "values": values,
        "keys": {keys[k.replace("-", "_")].name: k for k in options},
        "record": {
            "file": str(path.resolve()),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "section": section,
            "content": content,
        },
    }


def _closest(key: str, choices: Any, *, dashes: bool = False) -> str:
    match = difflib.get_close_matches(key, sorted(choices), n=1, cutoff=0.6)
    if not match:
        return ""
    return f" (did you mean '{match[0].replace('_', '-') if dashes else match[0]}'?)"


def _apply_sop(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    """Eager callback of ``--config``: the file's values become this invocation's
    defaults (so flags still win), checked as the flags are."""
    if value is None:
        return
    root = ctx.find_root().command
    commands = set(root.commands) if isinstance(root, click.Group) else set()
    sop = read_sop(value, ctx.command, commands or {ctx.command.name or ""})
    options = {o.name: o for o in ctx.command.params if o.name}
    for name, given in sop["values"].items():
        option = options[name]
        try:
            converted = option.type_cast_value(ctx, given)
            if option.callback is not None:  # e.g. --bins' own check
                option.callback(ctx, option, converted)
        except click.BadParameter as exc:
            raise ConfigError(
                f"SOP file '{value}': {sop['keys'][name]} = {given!r}: {exc.message}"
            ) from None
    ctx.default_map = {**(ctx.default_map or {}), **sop["values"]}
    ctx.meta[_META_KEY] = sop


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--config SOP.toml``: every other option of the command from a TOML file."""
    return click.option(
        "--config",
        type=click.Path(path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=_apply_sop,
        metavar="SOP.toml",
        help="Take the options from a standard operating procedure file: TOML keys are the "
        'option names (min-area = "20um2"), flat or in a table per command ([measure]); '
        "flags given here win. The file is recorded in the provenance.",
    )(func)


def sop_request(ctx: click.Context) -> dict[str, Any] | None:
    """The provenance of the SOP file this invocation read, or None without ``--config``:
    ``file`` (absolute path), ``sha256`` (of its bytes), ``section`` (the command's
    table, or None for a flat file), ``content`` (the whole file, parsed) and
    ``overridden`` (its keys that a flag on the command line replaced)."""
    sop = ctx.meta.get(_META_KEY)
    if sop is None:
        return None
    overridden = sorted(
        key
        for name, key in sop["keys"].items()
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    )
    return {**sop["record"], "overridden": overridden}


def record_requests(
    ctx: click.Context, run: Path, stages: tuple[str, ...], **extra: Any
) -> dict[str, Any]:
    """Record how this invocation asked for ``stages`` of ``run`` (each finished now):
    the SOP file (:func:`sop_request`) and ``extra`` entries that are not None (e.g.
    ``min_area``: an area given in um2 and the pixels it came to), with
    :func:`crystalseg.store.record_request`. Returns what was recorded ({} for nothing)."""
    from crystalseg.store import record_request

    request = {k: v for k, v in {"sop": sop_request(ctx), **extra}.items() if v is not None}
    if request:
        for stage in stages:
            record_request(run, stage, request)
    return request
