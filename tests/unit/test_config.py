from pathlib import Path

import pytest
import yaml

from irkit.config import ConfigError, Settings, load_config

REPO = Path(__file__).resolve().parents[2]


def test_example_config_loads_and_names_secrets_by_env_var() -> None:
    s = load_config(REPO / "irkit.example.yaml", {}, required=True)
    assert s.service.name == "schema-registry"
    assert s.service.namespace == "schema-registry"
    assert {"request_rate", "error_ratio", "latency_p99", "availability"} <= set(s.signals)
    names = s.secret_env_names()
    assert names and all(n.isupper() for n in names)
    assert s.secret_values({names[0]: "s3cr3t-value"}) == ["s3cr3t-value"]


def test_defaults_without_a_file() -> None:
    s = load_config("does-not-exist.yaml", {})
    assert s.records_dir == "reports"


def test_named_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", {}, required=True)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("prometheus:\n  timeout_s: soon\n", "prometheus.timeout_s"),
        ("prometheus:\n  auth:\n    bearer_token: abc123\n", "prometheus.auth.bearer_token: unknown key"),
        ("secrets: [lowercase-name]\n", "secrets.0"),
        ("redaction:\n  patterns: ['(unclosed']\n", "redaction.patterns"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("service: {name: [unclosed\n", "not valid YAML"),
        ('runner:\n  kernel_name: ""\n', "runner.kernel_name"),  # was an AttributeError inside papermill
        ("runner:\n  kernel_name: ../x\n", "runner.kernel_name"),
    ],
)
def test_bad_files_name_key_and_problem(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "irkit.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(f, {}, required=True)
    msg = str(exc.value)
    assert needle in msg
    assert "\n" not in msg


def test_environment_overrides_file(tmp_path: Path) -> None:
    f = tmp_path / "irkit.yaml"
    f.write_text("prometheus:\n  url: http://from-file:9090\n")
    s = load_config(f, {"IRKIT_PROMETHEUS__URL": "http://from-env:9090", "IRKIT_PROMETHEUS__TIMEOUT_S": "3"})
    assert s.prometheus.url == "http://from-env:9090"
    assert s.prometheus.timeout_s == 3.0


def test_runtime_variables_are_not_settings() -> None:
    s = load_config(None, {"IRKIT_ACTOR": "alice", "IRKIT_BATCH": "1", "IRKIT_CONFIG": "x.yaml"})
    assert s.records_dir == "reports"


def test_unknown_environment_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="bogus"):
        load_config(None, {"IRKIT_BOGUS": "1"})


def test_cli_bad_config_exits_2_with_one_line(cli, tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("runner:\n  execution_timeout_s: -1\n")
    res = cli("list", "--config", str(f))
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1
    assert "runner.execution_timeout_s" in res.stderr


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ({"url": "postgresql://irkit:hunter2@db/irkit"}, "holds a password: leave it out and set PGPASSWORD"),
        ({"url": "mysql://db/irkit"}, "must start with file:// or postgresql://"),
        ({"url": "postgresql://irkit@db/irkit", "artifacts": "s3://UPPER/x"}, "must be s3://bucket"),
        ({"url": "postgresql://irkit@db/irkit", "artifacts": "https://bucket"}, "must be s3://bucket"),
    ],
)
def test_a_bad_store_setting_is_refused_naming_the_key(tmp_path: Path, store: dict, problem: str) -> None:
    cfg = tmp_path / "irkit.yaml"
    cfg.write_text(yaml.safe_dump({"store": store}))
    with pytest.raises(ConfigError) as err:
        load_config(cfg, {}, required=True)
    assert "store." in str(err.value) and problem in str(err.value)
    assert "hunter2" not in str(err.value)


def test_the_store_is_a_directory_by_default_and_a_file_url_names_it(cli, tmp_path: Path) -> None:
    assert Settings().store.shared is False and Settings().store.directory is None
    (tmp_path / "irkit.yaml").write_text(f"store:\n  url: file://{tmp_path / 'team-records'}\n")
    iid = cli("open", "--title", "x").stdout.strip()
    assert (tmp_path / "team-records" / iid / "events.jsonl").is_file()


def test_a_shared_store_without_a_bucket_is_one_line(cli, tmp_path: Path) -> None:
    (tmp_path / "irkit.yaml").write_text("store:\n  url: postgresql://irkit@127.0.0.1:1/irkit\n")
    res = cli("list")
    assert res.exit_code == 2 and res.stderr.startswith("irkit: store.artifacts: a postgresql:// store needs a bucket")
