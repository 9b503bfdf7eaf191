"""``mura train``'s options, generated from TrainConfig's fields (names, types, defaults and help are
defined once, in ``mura_utils.config``), and the config they give: ``--config FILE``, then explicit flags."""

from __future__ import annotations

import argparse

# Short spellings of generated TrainConfig options, kept as the documented ones (--out as in every other
# command; issue 21 forbids dropping an option users type): flag -> (field, value or None for "takes a value")
TRAIN_ALIASES = {
    "--out": ("out_dir", None),
    "--weights": ("weights_path", None),
    "--ema": ("ema_decay", None),
    "--single-task": ("multitask", False),
    "--no-cache": ("use_cache", False),
}


def optional_value(kind):
    """argparse type for ``int | None`` style fields: 'none' (any case) gives None."""

    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def add_train_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (names, types, defaults and help from the dataclass);
    bools as --flag/--no-flag. Defaults are SUPPRESSed so explicit flags can override --config."""
    import typing
    from dataclasses import MISSING, fields

    from mura_utils.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training settings (TrainConfig fields)")
    types = {}
    for item in fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = hints[item.name]
        default = item.default if item.default is not MISSING else None
        help_text = f"{item.metadata.get('help', '')} (default: {default})"
        if kind is bool:
            group.add_argument(
                flag, dest=item.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
            continue
        optional = type(None) in typing.get_args(kind)
        base = next((arg for arg in typing.get_args(kind) if arg is not type(None)), kind)
        types[item.name] = optional_value(base) if optional else base
        group.add_argument(
            flag,
            dest=item.name,
            type=types[item.name],
            default=argparse.SUPPRESS,
            metavar=item.name.upper(),
            help=help_text,
        )
    for flag, (name, value) in TRAIN_ALIASES.items():
        if value is None:
            group.add_argument(
                flag,
                dest=name,
                type=types[name],
                default=argparse.SUPPRESS,
                metavar=name.upper(),
                help=f"same as --{name.replace('_', '-')}",
            )
        else:
            group.add_argument(
                flag,
                dest=name,
                action="store_const",
                const=value,
                default=argparse.SUPPRESS,
                help=f"same as --{'' if value else 'no-'}{name.replace('_', '-')}",
            )


def train_config(args):
    """TrainConfig from ``--config FILE`` (or the defaults), then every flag given explicitly."""
    from dataclasses import fields, replace

    from mura_utils.config import TrainConfig

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    given = {item.name: getattr(args, item.name) for item in fields(TrainConfig) if hasattr(args, item.name)}
    if not args.config and "out_dir" not in given:
        raise ValueError("--out is required (the run folder) unless --config gives out_dir")
    return replace(config, **given)
