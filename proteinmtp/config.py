"""Dataclass fields as command-line flags: one place for a hyper-parameter's name, default, type and help.

A configuration dataclass (``proteinmtp.model.ModelSpec``, ``proteinmtp.heads.HeadConfig``) marks a field
as a flag with ``field(default=..., metadata=flag("help", ...))``. ``add_flags`` adds every marked field to
an argparse group with the field's default, so the library and the CLI cannot disagree; ``from_args``
reads the values back by field name. The whole dataclass is stored in the run (``training_config.json``)
and compared whole on resume, as nanoGPT rebuilds its model from the checkpoint's ``model_args``.

The standard library's argparse is used rather than ``transformers.HfArgumentParser`` because the flags
of two dataclasses share one parser with the script's own flags, some flags keep their historical names
(``--model_name`` for ``base_model``), and tuple-valued fields take comma-separated values.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields


def flag(help: str, *, name: str | None = None, **argparse_kwargs) -> dict:
    """Field metadata that makes a dataclass field the flag ``--<name>`` (the field's name by default).

    ``argparse_kwargs`` go to ``add_argument`` (``choices``, ``action``, ``type``...); the default is always
    the field's own. ``action="BooleanOptionalAction"`` gives ``--x / --no-x``.
    """
    return {"flag": {"name": name, "help": help, **argparse_kwargs}}


def cli_flags(cls) -> list[tuple[str, str, dict]]:
    """(field name, flag name, argparse keyword arguments) of every flag field of ``cls``, in field order."""
    out = []
    for f in fields(cls):
        if "flag" not in f.metadata:
            continue
        kw = dict(f.metadata["flag"])
        flag_name = kw.pop("name", None) or f.name
        if kw.get("action") == "BooleanOptionalAction":
            kw["action"] = argparse.BooleanOptionalAction
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if isinstance(default, tuple):              # tuples are given comma-separated on the command line
            kw.setdefault("type", str)
            default = ",".join(map(str, default))
        kw["default"] = default
        if "action" not in kw:
            kw.setdefault("type", type(default))
        out.append((f.name, flag_name, kw))
    return out


def add_flags(group, cls) -> None:
    """Add every flag field of ``cls`` to the argparse ``group`` (or parser)."""
    for _, flag_name, kw in cli_flags(cls):
        group.add_argument(f"--{flag_name}", **kw)


def from_args(args: argparse.Namespace, cls) -> dict:
    """{field name: value} of every flag field of ``cls`` as parsed into ``args`` (tuples still as strings)."""
    return {field_name: getattr(args, flag_name) for field_name, flag_name, _ in cli_flags(cls)}




class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each flag's default, except where there is none to show (None, or an on/off
    switch that is off)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS or (
                isinstance(action, argparse._StoreTrueAction) and action.default is False):
            return action.help
        return super()._get_help_string(action)


__all__ = ["flag", "cli_flags", "add_flags", "from_args", "HelpFormatter"]
