"""docs/contracts.md is the contract the code cites: its key list is the code's, every citation resolves."""

from __future__ import annotations

import re

from proteinmtp.eval_report import CONFIDENCE_KEYS
from proteinmtp.metric_registry import REQUIRED_KEYS


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_required_keys_match_the_code(repo_root):
    text = (repo_root / "docs" / "contracts.md").read_text()
    block = text.split("<!-- required-keys -->")[1].split("<!-- /required-keys -->")[0]
    assert tuple(re.findall(r"`([a-zA-Z0-9_]+)`", block)) == REQUIRED_KEYS
    block = text.split("<!-- confidence-keys -->")[1].split("<!-- /confidence-keys -->")[0]
    assert tuple(re.findall(r"`([a-zA-Z0-9_]+)`", block)) == CONFIDENCE_KEYS


def test_every_citation_of_the_contracts_resolves(repo_root):
    text = (repo_root / "docs" / "contracts.md").read_text()
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    cited = set()
    for path in list((repo_root / "proteinmtp").rglob("*.py")) + [repo_root / "DISCUSSION.md"]:
        src = path.read_text()
        cited |= set(re.findall(r"docs/contracts\.md#([\w\-]+)", src))
    assert cited and cited <= anchors, cited - anchors


# ----------------------------------------------------------------------------- drift: docs vs code

FOREIGN_FLAGS = {"--no-deps": "pip install", "--nproc_per_node": "torchrun"}   # flags of other tools' commands


def _parsers():
    """The argparse parsers of the four scripts (build_parser() where a script has one, else the parser its
    parse_args builds)."""
    import argparse

    import create_distmat_data
    import evaluate_distmat_model
    import infer_distmat
    import train_distmat
    from proteinmtp import weights

    out = []
    for mod in (create_distmat_data, train_distmat, infer_distmat, evaluate_distmat_model, weights):
        if hasattr(mod, "build_parser"):
            out.append(mod.build_parser())
            continue
        seen: list = []
        real = argparse.ArgumentParser.parse_args

        def capture(self, *a, _seen=seen, **k):
            _seen.append(self)
            raise SystemExit(0)

        argparse.ArgumentParser.parse_args = capture
        try:
            mod.parse_args([])
        except SystemExit:
            pass
        finally:
            argparse.ArgumentParser.parse_args = real
        assert seen, f"{mod.__name__}: no parser found"
        out.extend(seen)
    return out


def _actions():
    import argparse

    parsers = _parsers()
    for p in list(parsers):           # sub-commands (python -m proteinmtp.weights fetch/verify)
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                parsers.extend(a.choices.values())
    return [a for p in parsers for a in p._actions]


def test_every_flag_the_readme_names_exists(repo_root):
    flags = {o for a in _actions() for o in a.option_strings}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", (repo_root / "README.md").read_text()))
    assert named - flags - set(FOREIGN_FLAGS) == set()


def _dataclass_default(cls_name: str, field_name: str):
    import dataclasses
    import importlib
    import pkgutil

    import proteinmtp

    for info in pkgutil.walk_packages(proteinmtp.__path__, "proteinmtp."):
        mod = importlib.import_module(info.name)
        cls = getattr(mod, cls_name, None)
        if cls is not None and dataclasses.is_dataclass(cls):
            f = {f.name: f for f in dataclasses.fields(cls)}[field_name]
            return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    raise AssertionError(f"no dataclass {cls_name} in proteinmtp")


def test_defaults_quoted_in_the_docs_are_the_code_defaults(repo_root):
    """'`Class.field` defaults to V', '`--flag`, on by default' / '(default `--flag`)' and '`choice` (default'
    in README.md and docs/*.md agree with the dataclass fields and the scripts' parsers."""
    text = "\n".join(p.read_text() for p in [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))])
    text = " ".join(text.split())
    actions = _actions()
    by_flag = {o: a for a in actions for o in a.option_strings}
    checked = 0
    for cls, name, value in re.findall(r"`([A-Z]\w+)\.(\w+)` defaults to ([-\w.]+\w)", text):
        assert str(_dataclass_default(cls, name)) == value, f"{cls}.{name}"
        checked += 1
    for flag in re.findall(r"`(--\w+)`, on by default", text) + re.findall(r"\(default `(--\w+)`\)", text):
        assert bool(by_flag[flag].default), f"{flag} is said to be on by default"
        checked += 1
    for choice in re.findall(r"`(\w+)` \(default", text):
        owners = [a for a in actions if a.choices and choice in a.choices]
        assert owners and all(a.default == choice for a in owners), f"{choice} is said to be a default"
        checked += 1
    assert checked >= 5   # the claims of today's docs: ss_weight, --ss_weight, --prior_input (twice), refine, direct


def test_the_reconstruction_help_names_every_method():
    from proteinmtp.reconstruction import METHODS

    helps = [a.help for a in _actions() if "--mds_method" in a.option_strings]
    assert len(helps) == 2
    for h in helps:
        assert all(m in h for m in METHODS), h


def test_committed_demo_dataset_is_what_its_readme_command_builds(repo_root, tmp_path):
    """data/demo/README.md's create_distmat_data.py command, run again (into a temporary directory), writes
    byte for byte the files committed in data/demo/dataset/ (~10 s on 2 cores)."""
    import shlex
    import subprocess
    import sys

    text = (repo_root / "data" / "demo" / "README.md").read_text()
    m = re.search(r"^\s*python (create_distmat_data\.py .+?)(?<!\\)$", text.replace("\\\n", " "), flags=re.M)
    assert m, "data/demo/README.md shows no create_distmat_data.py command"
    args = shlex.split(m.group(1))
    k = args.index("--output_dir")
    assert args[k + 1] == "data/demo/dataset"
    args[k + 1] = str(tmp_path / "dataset")
    r = subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    committed = repo_root / "data" / "demo" / "dataset"
    built = sorted(p.name for p in (tmp_path / "dataset").iterdir())
    assert sorted(p.name for p in committed.iterdir()) == built
    for name in built:
        assert (committed / name).read_bytes() == (tmp_path / "dataset" / name).read_bytes(), name


# inputs a text may cite; outputs (benchmarks/results/, runs/, experiments/, a user's data/pdb/) are not checked
CITED_PATH = re.compile(r"(?<![\w./-])((?:docs/|data/demo/|tests/|proteinmtp/|scripts/)[\w./-]*\w)")


def test_every_repo_path_cited_exists(repo_root):
    """Every repository file or folder that the README, docs/, DISCUSSION.md, the package, the scripts or
    their --help name exists (a renamed or removed file fails)."""
    texts = {p: p.read_text() for p in [repo_root / "README.md", repo_root / "DISCUSSION.md",
                                        *(repo_root / "docs").glob("*.md"), *(repo_root / "proteinmtp").rglob("*.py"),
                                        *repo_root.glob("*.py")]}
    texts["--help"] = "\n".join(str(a.help) for a in _actions())
    missing = sorted({(str(getattr(p, "name", p)), m) for p, t in texts.items() for m in CITED_PATH.findall(t)
                      if not (repo_root / m).exists()})
    assert missing == []


def test_every_package_import_in_the_docs_and_scripts_resolves(repo_root):
    """`from proteinmtp.X import Y` in the README, the docs, the demo script and the package docstrings names
    a module and a name that exist (the demo's last step once imported a function that had moved)."""
    import importlib
    import re

    files = [repo_root / "README.md", repo_root / "docs" / "contracts.md", repo_root / "scripts" / "demo.sh",
             *sorted((repo_root / "proteinmtp").rglob("*.py"))]
    pattern = re.compile(r"from (proteinmtp(?:\.\w+)*) import ([\w, ]+)")
    seen = 0
    for f in files:
        for mod, names in pattern.findall(f.read_text()):
            module = importlib.import_module(mod)
            for name in (n.strip().split(" as ")[0] for n in names.split(",") if n.strip()):
                assert hasattr(module, name) or importlib.util.find_spec(f"{mod}.{name}") is not None, \
                    f"{f.relative_to(repo_root)}: from {mod} import {name}: no such name"
                seen += 1
    assert seen > 50
