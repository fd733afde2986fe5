"""One source of configuration: the dataclasses' defaults are the CLI's, and the CLI builds them back."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from proteinmtp import train_command
from proteinmtp.config import HelpFormatter, add_flags, cli_flags, flag, from_args
from proteinmtp.heads import REGISTRY, HeadConfig
from proteinmtp.model import ModelSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_distmat  # noqa: E402


@dataclass
class Toy:
    width: int = field(default=3, metadata=flag("width in residues"))
    shape: tuple[int, ...] = field(default=(1, 2), metadata=flag("blocks"))
    on: bool = field(default=True, metadata=flag("switch", action="BooleanOptionalAction"))
    renamed: str = field(default="a", metadata=flag("named otherwise", name="other_name", choices=("a", "b")))
    hidden: float = 0.5


def test_flags_carry_the_field_defaults_names_and_types():
    p = argparse.ArgumentParser()
    add_flags(p, Toy)
    assert [name for name, _, _ in cli_flags(Toy)] == ["width", "shape", "on", "renamed"]   # `hidden` is no flag
    assert from_args(p.parse_args([]), Toy) == {"width": 3, "shape": "1,2", "on": True, "renamed": "a"}
    got = from_args(p.parse_args(["--width", "7", "--shape", "4", "--no-on", "--other_name", "b"]), Toy)
    assert got == {"width": 7, "shape": "4", "on": False, "renamed": "b"}


def test_cli_defaults_build_the_library_defaults(tmp_path):
    """train_distmat.py with no model flags builds exactly ModelSpec() / HeadConfig() (plus what the script
    derives from the data and the crop), so the library and the recipe cannot disagree."""
    args = train_distmat.parse_args(["--train_data", "x.json", "--output_dir", str(tmp_path)])
    dil = train_command.check_args(args)
    spec = train_command.model_spec(args, dil, {"log_dist_mean": 2.0})
    lib = ModelSpec()
    for name, _, _ in cli_flags(ModelSpec):
        assert getattr(spec, name) == getattr(lib, name), name
    head = HeadConfig.from_dict(spec.head)
    expect = asdict(HeadConfig(max_rel_sep=args.max_seq_len - 1))
    assert asdict(head) == expect
    assert spec.layout == "direct" and head.prior_input is True      # the defaults the issue found disagreeing


def test_head_type_choices_are_the_registry():
    (kw,) = [kw for name, _, kw in cli_flags(HeadConfig) if name == "head_type"]
    assert tuple(kw["choices"]) == tuple(sorted(REGISTRY))


def test_only_the_distance_head_takes_the_prior():
    assert HeadConfig(head_type="coords", prior_input=True).prior_input is False
    assert HeadConfig(head_type="distance").prior_input is True


def test_help_shows_defaults_except_none_and_off_switches():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", type=int, default=4, help="a")
    p.add_argument("--b", default=None, help="b")
    p.add_argument("--c", action="store_true", help="c")
    text = p.format_help()
    assert "(default: 4)" in text
    assert "default: None" not in text and "default: False" not in text
