"""What the index publishes (only sealed, verified notebooks, sanitized), and symlinks in a record."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from irkit.errors import BadInputError, RecordBroken
from irkit.record import Record

ID = "INC-PUB-1"
XSS = [
    ("text/markdown", "[click](javascript:alert(1)) <img src=x onerror=alert(2)> > 10x"),
    ("text/html", '<img src=x onerror="alert(3)"><script>alert(4)</script><a href="javascript:alert(5)">x</a>'),
    ("application/javascript", "alert(6)"),
    ("image/svg+xml", '<svg onload="alert(7)"></svg>'),
]


def hostile_notebook() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("show()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={mime: text, "text/plain": "x"}) for mime, text in XSS]
    nb.cells = [cell, nbformat.v4.new_markdown_cell('<a href="javascript:alert(8)">md</a><img src=x onerror=alert(9)>')]
    return nb


def test_index_publishes_only_sealed_verified_notebooks_and_sanitizes_every_output(cli, records: Path) -> None:
    rec = Record.create(records, ID, title="t", service="s", actor="a")
    rec.seal_one("notebooks/01-triage.ipynb", nbformat.writes(hostile_notebook()).encode(), actor="a", kind="nb")
    (rec.path / "notebooks/09-planted.ipynb").write_text(nbformat.writes(hostile_notebook()))  # never sealed
    secret = rec.root.parent / "outside.ipynb"
    secret.write_text(nbformat.writes(hostile_notebook()))
    os.symlink(secret, rec.path / "notebooks/08-link.ipynb")
    assert cli("index", "--records", str(records)).exit_code == 0
    published = sorted(p.name for p in (rec.path / "html").iterdir())
    assert published == ["01-triage.html"]
    html = (rec.path / "html/01-triage.html").read_text()
    for n in range(1, 10):
        assert f"alert({n})" not in html, n
    assert "onerror" not in html and "javascript:" not in html.replace("text/javascript", "")
    # A sealed notebook changed after sealing is not published either.
    (rec.path / "html/01-triage.html").unlink()
    with (rec.path / "notebooks/01-triage.ipynb").open("a") as fh:
        fh.write(" ")
    assert cli("index", "--records", str(records)).exit_code == 0
    assert not (rec.path / "html/01-triage.html").exists()


def test_a_symlinked_html_dir_is_refused_not_written_through(cli, records: Path, tmp_path: Path) -> None:
    rec = Record.create(records, ID, title="t", service="s", actor="a")
    rec.seal_one(
        "notebooks/01-triage.ipynb", nbformat.writes(nbformat.v4.new_notebook()).encode(), actor="a", kind="nb"
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, rec.path / "html")
    res = cli("index", "--records", str(records))
    assert res.exit_code == 0 and list(outside.iterdir()) == []
    assert "symlink" in (records / "index.html").read_text()


def test_a_symlinked_event_log_is_never_written_through(cli, records: Path, tmp_path: Path) -> None:
    rec = Record.create(records, ID, title="t", service="s", actor="a")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(rec.events_path.read_bytes() + b"torn tail without newline")
    before = victim.read_bytes()
    rec.events_path.unlink()
    os.symlink(victim, rec.events_path)
    with pytest.raises(BadInputError, match="symlink"):
        Record.open(records, ID)
    with pytest.raises((BadInputError, RecordBroken)):
        rec.note("append through the link", actor="a")
    assert victim.read_bytes() == before  # not truncated, not appended to
    res = cli("status", ID, "acknowledged", "--records", str(records))
    assert res.exit_code == 2 and "symlink" in res.stderr


def test_verify_names_symlinks_and_files_that_are_not_part_of_the_record(cli, records: Path, tmp_path: Path) -> None:
    rec = Record.create(records, ID, title="t", service="s", actor="a")
    (rec.path / "notebooks/.ipynb_checkpoints").mkdir()
    (rec.path / "notebooks/.ipynb_checkpoints/01-triage-checkpoint.ipynb").write_text("{}")
    res = cli("verify", ID, "--records", str(records))
    assert (
        res.exit_code == 0
        and "not part of the record: notebooks/.ipynb_checkpoints/01-triage-checkpoint.ipynb" in res.stdout
    )
    os.symlink(tmp_path, rec.path / "figures/link")
    res = cli("verify", ID, "--records", str(records))
    assert res.exit_code == 1 and "figures/link: a symlink inside the record" in res.stdout
    assert rec.remove_checkpoints() == 1 and not (rec.path / "notebooks/.ipynb_checkpoints").exists()
