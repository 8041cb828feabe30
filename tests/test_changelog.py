"""CHANGELOG.md keeps the Keep a Changelog shape, and the package's version is its latest release."""

from __future__ import annotations

import re
from pathlib import Path

import kvstore

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("Added", "Changed", "Deprecated", "Removed", "Fixed", "Security")


def _releases() -> list[tuple[str, str]]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)


def test_unreleased_first_then_releases_newest_first() -> None:
    releases = _releases()
    assert releases[0] == ("Unreleased", "")
    versions = [tuple(map(int, v.split("."))) for v, _ in releases[1:]]
    dates = [d for _, d in releases[1:]]
    assert versions and all(dates), releases
    assert versions == sorted(versions, reverse=True) and dates == sorted(dates, reverse=True)


def test_only_keep_a_changelog_sections() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^### (.+)$", text, re.M)) <= set(SECTIONS)


def test_version_is_the_latest_release() -> None:
    latest = _releases()[1][0]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"$', pyproject, re.M).group(1) == latest
    assert kvstore.__version__ == latest
