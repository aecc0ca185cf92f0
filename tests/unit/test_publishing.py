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


def test_cluster_snapshots_keep_names_and_references_never_values(records: Path) -> None:
    import base64
    import gzip
    import json

    from irkit.cluster import CLUSTER_DIR, ClusterView, snapshot
    from irkit.redact import Redactor
    from irkit.scenarios import pool_exhaustion_cluster as scenario
    from irkit.times import utcnow

    secret = "CanaryClusterSecret-77aa"
    view = ClusterView(source="kubernetes", taken_at=utcnow())
    view.objects = {"pods": scenario.pods(), "deployment": scenario.deployment(), "events": scenario.events()}
    container = view.objects["pods"]["items"][0]["spec"]["containers"][0]
    container["env"] = [
        {"name": "DB_PASSWORD", "value": "literal-value-xyz"},
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    container["args"] = [f"--password={secret}"]
    view.objects["deployment"]["metadata"].setdefault("annotations", {})[
        "kubectl.kubernetes.io/last-applied-configuration"
    ] = json.dumps({"env": [{"name": "X", "value": "applied-literal-xyz"}]})
    view.objects["events"]["items"][0]["message"] = f"probe failed with {secret}"
    release = {
        "name": "r",
        "version": 3,
        "info": {"status": "deployed"},
        "chart": {"metadata": {"name": "c"}},
        "config": {"pw": "helm-literal-xyz"},
        "manifest": "kind: Secret",
    }
    packed = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    view.objects["helm-releases"] = {
        "items": [
            {"metadata": {"name": "sh.helm.release.v1.r.v3"}, "data": {"release": base64.b64encode(packed).decode()}}
        ]
    }
    view.logs = {scenario.PODS[0]: f"connecting with {secret}\n"}
    rec = Record.create(records, ID, title="t", service="s", actor="a", redactor=Redactor([secret], []))
    snapshot(rec, view, actor="a")
    stored = "".join(p.read_text() for p in (rec.path / CLUSTER_DIR).rglob("*") if p.is_file())
    for leak in (secret, "literal-value-xyz", "applied-literal-xyz", "helm-literal-xyz", "kind: Secret"):
        assert leak not in stored, leak
    assert "DB_PASSWORD" in stored and "secretKeyRef" in stored
    from irkit.cluster import RecordedCluster, capture

    replay = capture(RecordedCluster(rec.latest_dir(CLUSTER_DIR)))
    assert [h["revision"] for h in replay.helm_rows()] == [3]
