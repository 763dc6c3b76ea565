"""Option groups (after Polygraphy's argument groups): each declares its options once, turns their values
into the request's fields, and turns a request back into options, so one command can name the run of
another on the same request (a failed build names its diagnose; diagnose names the build with its fix)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import click

from converter.builds.request import BuildRequest, default_out


@dataclass(frozen=True)
class Group:
    options: tuple[Callable, ...]  # click.option decorators
    parse: Callable[[dict], dict]  # option values -> BuildRequest fields
    render: Callable[[BuildRequest], dict]  # BuildRequest -> option values (parse's inverse)

    @property
    def params(self) -> list[click.Option]:
        """The click options, as a command holding them has them."""
        holder = click.Command("holder")
        for option in self.options:
            option(holder)
        return holder.params

    def only(self, *names: str) -> Group:
        """This group with only the options named (by parameter name); the others parse as their defaults."""
        ctx = click.Context(click.Command("holder"))
        kept = tuple(o for o, p in zip(self.options, self.params) if p.name in names)
        defaults = {p.name: p.type_cast_value(ctx, p.get_default(ctx)) for p in self.params if p.name not in names}
        return Group(kept, lambda values: self.parse({**defaults, **values}),
                     lambda req: {k: v for k, v in self.render(req).items() if k in names})


def parsed(groups: tuple[Group, ...], values: dict) -> dict[str, Any]:
    """The fields `groups` parse their options' `values` into."""
    fields: dict[str, Any] = {}
    for group in groups:
        fields.update(group.parse({p.name: values[p.name] for p in group.params}))
    return fields


def parse_request(groups: tuple[Group, ...], values: dict, command: str | None = None) -> BuildRequest:
    """The BuildRequest `groups` parse their options' `values` into (UserError for a bad model or target)."""
    fields = parsed(groups, values)
    if fields.get("out") is None:
        fields["out"] = default_out(fields["source"], fields["chip"])
    return BuildRequest(**fields, command=command)


def group_options(*groups: Group):
    """Declare the groups' options on a command, whose function gets the fields they parse into, and its
    own options as they are, by name."""
    return _declaring(groups, lambda values: parsed(groups, values))


def request_options(*groups: Group):
    """Declare the groups' options on a command, whose function gets the BuildRequest they parse into as
    `request` (with the command line), and its own options as they are."""
    return _declaring(groups, lambda values: {"request": parse_request(groups, values, _command_line())})


def _declaring(groups: tuple[Group, ...], parse: Callable[[dict], dict]):
    def decorate(fn):
        names = {p.name for g in groups for p in g.params}

        @functools.wraps(fn)
        def callback(**values):
            return fn(**parse(values), **{k: v for k, v in values.items() if k not in names})

        for group in reversed(groups):
            for option in reversed(group.options):
                callback = option(callback)
        return callback

    return decorate


def _command_line() -> str:
    import shlex
    import sys

    return shlex.join(["rkconvert", *sys.argv[1:]])


def arguments(request: BuildRequest, groups: tuple[Group, ...], leave_out: tuple[str, ...] = ()) -> list[str]:
    """`request` as the options of `groups` that differ from their defaults: how one command names the run
    of another on the same request."""
    values = {k: v for group in groups for k, v in group.render(request).items() if k not in leave_out}
    return as_arguments(values, [p for group in groups for p in group.params])


def as_arguments(values: dict, params: list[click.Parameter]) -> list[str]:
    """The options among `params` that `values` (by parameter name) set away from their defaults, as arguments."""
    ctx = click.Context(click.Command("holder"))
    args = []
    for option in params:
        if not isinstance(option, click.Option) or option.name not in values:
            continue
        value, default, flag = values[option.name], option.get_default(ctx), option.opts[-1]
        if option.is_flag:
            if bool(value) != bool(default):
                args.append(flag if value else option.secondary_opts[0])
        elif value is not None and value != default and not (option.multiple and not value):
            args += [a for v in (value if option.multiple else [value]) for a in (flag, str(v))]
    return args


def option_kinds(command: click.Command) -> dict[str, str]:
    """A command's options by long name: flag, switch (--x/--no-x), multiple (repeatable) or value."""
    kinds = {}
    for param in command.params:
        if isinstance(param, click.Option):
            kind = "switch" if param.secondary_opts else "flag" if param.is_flag else \
                "multiple" if param.multiple else "value"
            kinds[param.opts[0].removeprefix("--")] = kind
    return kinds
