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
        assert "design.md" not in src, path
        cited |= set(re.findall(r"docs/contracts\.md#([\w\-]+)", src))
    assert cited and cited <= anchors, cited - anchors
