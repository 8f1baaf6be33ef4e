"""Bundles on disk and `python -m trainer promote|rollback|bundles` (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.retrieval import bundles
from trainer.__main__ import main


def fake_bundle(root: Path, version: str, ndcg: float = 0.05) -> None:
    """A directory with every file of a bundle (contents are not read by promotion)."""
    directory = root / version
    directory.mkdir(parents=True)
    for name in (bundles.USER_TOWER, bundles.ITEM_INDEX):
        (directory / name).write_bytes(b"x")
    (directory / bundles.ITEM_IDS).write_text("a\nb\n", encoding="utf-8")
    meta = {"version": version, "items": 2, "index": {"kind": "IndexFlatIP"}, "metrics": {"NDCG@10": ndcg}}
    (directory / bundles.META).write_text(json.dumps(meta), encoding="utf-8")


def test_promote_and_rollback_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for version in ("v1", "v2", "v3"):
        fake_bundle(tmp_path, version)
    root = str(tmp_path)
    assert main(["promote", "--bundles", root, "v1"]) == 0
    assert main(["promote", "--bundles", root, "v2"]) == 0
    assert main(["promote", "--bundles", root, "v2"]) == 0  # promoting the served one again is a no-op
    assert main(["promote", "--bundles", root, "v3"]) == 0
    assert (tmp_path / bundles.CURRENT).read_text() == "v3\n"
    assert (tmp_path / bundles.HISTORY).read_text() == "v1\nv2\nv3\n"

    assert main(["rollback", "--bundles", root]) == 0
    assert bundles.current(tmp_path) == "v2" and bundles.history(tmp_path) == ["v1", "v2"]
    assert main(["rollback", "--bundles", root]) == 0
    assert bundles.current(tmp_path) == "v1" and bundles.history(tmp_path) == ["v1"]
    capsys.readouterr()

    assert main(["rollback", "--bundles", root]) == 1  # nothing left to roll back to
    assert "nothing to roll back" in capsys.readouterr().err
    assert bundles.current(tmp_path) == "v1"

    assert main(["bundles", "--bundles", root]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == ["*", "v2", "v3"]
    assert listing[0].split()[1] == "v1"


def test_promote_refuses_unknown_incomplete_and_bad_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_bundle(tmp_path, "v1")
    (tmp_path / "half").mkdir()  # what a crashed writer could leave if it did not write atomically
    (tmp_path / "half" / bundles.META).write_text("{}", encoding="utf-8")
    root = str(tmp_path)
    assert main(["promote", "--bundles", root, "nope"]) == 1
    assert "not a complete bundle" in capsys.readouterr().err
    assert main(["promote", "--bundles", root, "half"]) == 1
    assert main(["promote", "--bundles", root, "../v1"]) == 1
    assert "bad bundle version" in capsys.readouterr().err
    assert bundles.current(tmp_path) is None and bundles.versions(tmp_path) == ["v1"]


def test_rollback_with_no_promotions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollback", "--bundles", str(tmp_path)]) == 1
    assert "0 promotion(s)" in capsys.readouterr().err
    assert main(["bundles", "--bundles", str(tmp_path)]) == 0
    assert "no bundles" in capsys.readouterr().out
