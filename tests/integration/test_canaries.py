"""No secret ever reaches a record: canaries in every secret form, through live sources, then grep every byte.

Each canary is planted where a real secret would be — env vars named in config, a URL password and a
query token in ``url_env``, a bearer token, an AWS key, Helm chart values and the rendered manifest,
pod env, log lines, titles, reasons and notes, a responder's cell printing the environment in six
ways, a JupyterLab checkpoint — and the lifecycle runs against live sources (the fake Kubernetes API,
real PostgreSQL and Redis, probes against closed ports, a real Prometheus with a bearer token). Then
every file under the records root, including ``html/`` and checkpoints, is read: no canary may occur,
in any encoding, nor any prefix of 8 or more of its characters.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import nbformat
import yaml

from fakekube import fake_kube
from irkit.config import load_config
from irkit.record import Record
from irkit.redact import escaped_forms
from support import CONTRACT_PARAMETERS

ID = "INC-CANARY-1"
PW = "CanaryUrlPassw0rd-7d1e2f"  # in url_env userinfo
QTOKEN = "CanaryQueryTok-88a1b2c3"  # in url_env query string
BEARER = "CanaryBearerTok-51f0e9d8c7"  # Prometheus bearer token (configured secret)
CONFIGURED = "CanaryConfigured-\"q'uote-ünï-4a5b"  # a configured secret with quotes and unicode
AWS = "AKIAZZCANARY7Q2W3E4R"  # an AWS access key id, caught by pattern only
LONG = "CanaryLongSecretValue-" + "x1y2z3" * 12  # long: pandas truncates it in a table
HELM = "CanaryHelmValue-0f9e8d7c"  # chart values and manifest: never decoded into the record
PODENV = "CanaryPodEnvLiteral-3c4d5e6f"  # a literal env value in the pod spec
LOGPW = "CanaryLogPassword-aa11bb22"  # configured secret that a pod prints into its log
NOTE = "CanaryNoteSecret-99zz88yy"  # configured secret typed into a note, a reason and a title

CANARIES = [PW, QTOKEN, BEARER, CONFIGURED, AWS, LONG, HELM, PODENV, LOGPW, NOTE]


def plant_cluster(kube) -> None:
    pods = kube.objects["pods"]["items"]
    pods[0]["spec"]["containers"][0].setdefault("env", []).append({"name": "DB_PASSWORD", "value": PODENV})
    pods[0]["spec"]["containers"][0]["env"].append(
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api", "key": "key"}}}
    )
    for pod in list(kube.logs):
        kube.logs[pod] += f"ERROR connect failed password={LOGPW} dsn=app:{LOGPW}@db:5432\n"
    release = {
        "name": "schema-registry",
        "namespace": kube.namespace,
        "version": 13,
        "info": {"status": "deployed", "last_deployed": "2025-11-20T14:20:00Z", "description": "Upgrade complete"},
        "chart": {"metadata": {"name": "schema-registry", "version": "2.4.1", "appVersion": "1.8.1"}},
        "config": {"db": {"password": HELM}},
        "manifest": f"apiVersion: v1\nkind: Secret\nstringData:\n  password: {HELM}\n",
    }
    packed = base64.b64encode(gzip.compress(json.dumps(release).encode(), mtime=0))
    kube.objects["helm-releases"]["items"].append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "helm.sh/release.v1",
            "metadata": {"name": "sh.helm.release.v1.schema-registry.v13", "namespace": kube.namespace},
            "data": {"release": base64.b64encode(packed).decode()},
        }
    )


RESPONDER_CELLS = [
    "import os\nprint(dict(os.environ))",
    "print(os.environb)",
    "import pandas as pd\npd.DataFrame(sorted(os.environ.items()), columns=['name', 'value'])",
    "from urllib.parse import urlparse\nprint(urlparse(os.environ['CANARY_HTTP_URL']).netloc)",
    "print(repr(os.environ['CANARY_CONFIGURED'].encode()), os.environ['CANARY_CONFIGURED'])",
    "pd.Series({'long': os.environ['CANARY_LONG']})",
    f"print('aws key {AWS}')",
]


def irkit(records: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "irkit.cli", *args, "--records", str(records)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def forms(canary: str) -> set[str]:
    out = set(escaped_forms(canary))
    out.add(quote(canary))
    return out


def leaks(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes().decode("utf-8", errors="replace")
        for canary in CANARIES:
            for form in forms(canary):
                head = form[:8]
                if len(head) == 8 and head in data:
                    found.append(f"{path.relative_to(root)}: {canary[:12]}… as {form[:20]!r}")
    return found


def test_no_canary_reaches_any_byte_under_the_records_root(
    tmp_path: Path, postgres_server, redis_server, incident_prometheus
) -> None:
    records = tmp_path / "reports"
    closed = "127.0.0.1:9"  # discard port: refuses connections
    env = {
        **os.environ,
        "IRKIT_ACTOR": "alice",
        "CANARY_HTTP_URL": f"http://svc:{PW}@{closed}/health?token={QTOKEN}&x=1",
        "CANARY_PG_URL": f"postgresql://app:{PW}@{closed}/db?password={PW}",
        "CANARY_REDIS_URL": f"redis://:{PW}@{closed}/0",
        "CANARY_BEARER": BEARER,
        "CANARY_CONFIGURED": CONFIGURED,
        "CANARY_LONG": LONG,
        "CANARY_LOGPW": LOGPW,
        "CANARY_NOTE": NOTE,
    }
    with fake_kube() as kube:
        plant_cluster(kube)
        cfg = tmp_path / "irkit.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "prometheus": {"url": incident_prometheus, "auth": {"bearer_token_env": "CANARY_BEARER"}},
                    "kubernetes": {"kubeconfig": str(kube.kubeconfig(tmp_path))},
                    "secrets": ["CANARY_CONFIGURED", "CANARY_LONG", "CANARY_LOGPW", "CANARY_NOTE"],
                    "dependencies": [
                        {"name": "api", "kind": "http", "url_env": "CANARY_HTTP_URL", "timeout_s": 1},
                        {"name": "postgres", "kind": "postgres", "url_env": "CANARY_PG_URL", "timeout_s": 1},
                        {"name": "redis", "kind": "redis", "url_env": "CANARY_REDIS_URL", "timeout_s": 1},
                        {"name": "pg-live", "kind": "postgres", "url": postgres_server.dsn},
                        {"name": "redis-live", "kind": "redis", "url": redis_server.url},
                    ],
                }
            )
        )
        env["IRKIT_CONFIG"] = str(cfg)
        opened = irkit(records, env, "open", "--title", f"db down, password {NOTE} leaked", "--severity", "P1")
        assert opened.returncode == 0, opened.stderr
        iid = opened.stdout.strip()
        for args in (
            ("status", iid, "acknowledged", "--reason", f"paged; token {NOTE}"),
            ("run", iid, "triage", "--no-progress"),
            ("run", iid, "investigation", "--no-progress"),
            ("check", iid, "--cluster-source", "live", "--metrics-source", "live"),
        ):
            res = irkit(records, env, *args)
            assert res.returncode in (0, 1), (args, res.stderr)
        settings = load_config(cfg, env, required=True)
        rec = Record.open(records, iid, **settings.record_options(env))  # as every writer opens it
        rec.note(f"tried {NOTE} and {CONFIGURED} and app:{PW}@db", actor="alice")

        # JupyterLab: a working copy, a responder's cells run with the real environment, saved with a checkpoint.
        prep = irkit(records, env, "open", iid, "investigation")
        assert prep.returncode == 0, prep.stderr
        working = Path(prep.stdout.strip())
        nb = nbformat.read(str(working), as_version=4)
        cells = [nbformat.v4.new_code_cell(CONTRACT_PARAMETERS)] + [
            nbformat.v4.new_code_cell(c) for c in RESPONDER_CELLS
        ]
        scratch = nbformat.v4.new_notebook(cells=cells)
        scratch.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        from nbclient import NotebookClient

        NotebookClient(scratch, timeout=60, kernel_name="python3").execute(env=env)
        nb.cells += scratch.cells[1:]
        nbformat.write(nb, str(working))
        checkpoints = working.parent / ".ipynb_checkpoints"
        checkpoints.mkdir()
        nbformat.write(nb, str(checkpoints / f"{working.stem}-checkpoint.ipynb"))
        assert PW in working.read_text() or CONFIGURED in working.read_text()  # the planted leak is real

        sealed = irkit(records, env, "seal", iid)
        assert sealed.returncode == 0, sealed.stderr
        assert irkit(records, env, "index").returncode == 0
    verify = irkit(records, env, "verify", iid)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not checkpoints.exists()
    found = leaks(records)
    assert not found, "\n".join(found[:20])
