"""What a responder reads: numbers in their units, sentences not reprs, verdicts that mean something."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from irkit import units
from irkit.config import load_config, resolve_actor
from irkit.metrics import IncidentMetrics
from irkit.sources import SignalSeries
from irkit.times import stamp
from irkit.views import Said, say


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (units.percent, 0.41234, "41.2 %"),
        (units.percent, 0.12, "12.0 %"),
        (units.percent, 0.00004, "0.004 %"),
        (units.percent, 0.0, "0.0 %"),
        (units.percent, None, "—"),
        (units.percent, float("nan"), "—"),
        (units.times, 41.2789, "41.3x"),
        (units.times, 4.2, "4.2x"),
        (units.times, 412.0, "412x"),
        (units.seconds, 0.857, "857 ms"),
        (units.seconds, 1.34, "1.3 s"),
        (units.seconds, 0.000012, "12 µs"),
        (units.rate, 1234.5, "1,234 req/s"),
        (units.rate, 2.5, "2.5 req/s"),
        (units.count, 14334, "14,334"),
    ],
)
def test_numbers_read_as_people_say_them(fn, value, text) -> None:
    assert fn(value) == text


def test_a_signal_value_takes_its_signals_unit() -> None:
    assert units.signal_value("error_ratio", 0.12) == "12.0 %"
    assert units.signal_value("latency_p99", 0.857) == "857 ms"
    assert units.signal_value("request_rate", 120.0) == "120 req/s"
    assert units.signal_value("custom_thing", 0.123456) == "0.123"


def test_stamps_are_to_the_second_and_in_utc() -> None:
    assert stamp(datetime(2026, 3, 4, 14, 33, 7, 123456, tzinfo=UTC)) == "2026-03-04 14:33:07 UTC"
    assert stamp("2026-03-04T14:33:07.999999+01:00") == "2026-03-04 13:33:07 UTC"
    assert stamp(None) == "—" and stamp("not a time") == "not a time"


def test_a_said_sentence_is_text_not_a_python_literal() -> None:
    said = Said("acknowledged by ana")
    assert repr(said) == "acknowledged by ana" and said == "acknowledged by ana"
    assert Said("> 10x normal *P1*")._repr_markdown_() == "&gt; 10x normal \\*P1\\*"  # no blockquote, no bold
    many = Said.each(["paged sre", "reminder sent"], "nothing due")
    assert (
        many._repr_markdown_() == "- paged sre\n- reminder sent" and repr(Said.each([], "nothing due")) == "nothing due"
    )


def test_say_writes_values_not_reprs() -> None:
    assert say(None) == "—" and say({}) == "—" and say([]) == "—"
    assert say(True) == "yes" and say(["a", "b"]) == "a; b" and say({"k": 1.23456}) == "k: 1.235"
    assert say(timedelta(minutes=5)) == "5m"


def test_the_actor_is_a_chosen_name_before_a_login_name() -> None:
    settings = load_config(None, {})
    assert resolve_actor({"IRKIT_ACTOR": " ana "}, settings) == ("ana", True)
    named = settings.model_copy(update={"actor": "Bo Chen"})
    assert resolve_actor({}, named) == ("Bo Chen", True)
    name, known = resolve_actor({}, settings)
    assert name and known is False  # the login name: an account, not a person


def _series(name: str, values: list[float], start: datetime, role: str = "incident") -> SignalSeries:
    idx = pd.DatetimeIndex([start + timedelta(minutes=i) for i in range(len(values))], tz="UTC", name="ts")
    frame = pd.DataFrame({"value": values}, index=idx)
    return SignalSeries(name, "q", idx[0], idx[-1], 60.0, frame, role, "test")


def test_the_signals_table_gives_a_verdict_per_signal_in_readable_units() -> None:
    t0 = datetime(2025, 11, 20, 14, 0, tzinfo=UTC)
    week = timedelta(days=7)
    m = IncidentMetrics("test", t0, t0 + timedelta(minutes=14), t0, t0 + timedelta(minutes=14), week)
    m.series = {
        "request_rate": _series("request_rate", [120.0] * 15, t0),
        "error_ratio": _series("error_ratio", [0.004] * 10 + [0.41234] * 5, t0),
        "latency_p99": _series("latency_p99", [0.2] * 10 + [0.857] * 5, t0),
        "saturation_cpu": _series("saturation_cpu", [0.91] * 15, t0),
    }
    m.baseline = {
        "error_ratio": _series("error_ratio", [0.01] * 15, t0 - week, "baseline"),
        "latency_p99": _series("latency_p99", [0.2] * 15, t0 - week, "baseline"),
    }
    m.unavailable = {"availability": "Prometheus at http://prom is unreachable (range query)"}
    table = m.table()
    row = table.loc["error ratio"]
    assert (row["worst (eval window)"], row["normal (week before)"], row["vs normal"], row["verdict"]) == (
        "41.2 %",
        "1.0 %",
        "41.2x",
        "P1",
    )
    assert table.loc["latency p99", "worst (eval window)"] == "857 ms" and table.loc["latency p99", "verdict"] == "P2"
    assert table.loc["saturation cpu", "verdict"].startswith("high")
    assert table.loc["request rate", "verdict"].startswith("context")
    assert (
        table.loc["availability", "verdict"]
        == "could not check: Prometheus at http://prom is unreachable (range query)"
    )
    assert "ok" not in set(table["verdict"]) and "None" not in table.to_string()


def test_list_and_show_are_aligned_human_text_and_json_is_machine_values(cli, records) -> None:
    import json
    import re

    from irkit.record import Record

    opened = cli("open", "--title", "checkout errors", "--records", str(records))
    assert opened.exit_code == 0, opened.stderr
    new_id = opened.stdout.strip()
    assert re.fullmatch(r"INC-\d{8}-\d{4}-[0-9a-f]{8}", new_id)  # the format alert-opened incidents have
    rec = Record.create(records, "INC-20251120-1432-a1b2c3d4", title="alerting", service="s", severity="P1", actor="a")
    rec.append(
        "alert.firing",
        {"fingerprint": "f1", "alertname": "HighErrorRate", "starts_at": "2025-11-20T14:32:00Z"},
        actor="a",
    )
    rec.append(
        "alert.resolved",
        {"fingerprint": "f1", "alertname": "HighErrorRate", "ends_at": "2025-11-20T15:02:00Z"},
        actor="a",
    )
    listed = cli("list", "--records", str(records)).stdout.splitlines()
    assert listed[0].split() == ["INCIDENT", "SEV", "STATUS", "DETECTED", "(UTC)", "ALERTS", "TITLE"]
    for column in ("SEV", "STATUS", "DETECTED", "ALERTS", "TITLE"):  # every row's value starts under its header
        at = listed[0].index(column)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in listed[1:]), (column, listed)
    assert all(len(line) > 40 and "." not in line.split("UTC")[0][-10:] for line in listed[1:])  # no microseconds
    row = next(line for line in listed if "INC-20251120-1432" in line)
    assert "resolved" in row and "P1" in row
    data = {r["id"]: r for r in json.loads(cli("list", "--json", "--records", str(records)).stdout)}
    alerting = data["INC-20251120-1432-a1b2c3d4"]
    assert alerting["alerts_resolved"] is True and alerting["alerts"] == 1 and alerting["events"] == 3
    assert alerting["detected_at"].endswith("Z") and "T" in alerting["detected_at"]
    shown = cli("show", "INC-20251120-1432-a1b2c3d4", "--records", str(records)).stdout
    assert "alerts    1: all resolved" in shown and not re.search(r"\d\d:\d\d:\d\d\.\d", shown)
    assert "alert HighErrorRate resolved" in shown and "None" not in shown and "{" not in shown
    machine = json.loads(cli("show", "INC-20251120-1432-a1b2c3d4", "--records", str(records), "--json").stdout)
    assert machine["clocks"]["detected"]["at"].endswith("Z") and machine["overdue"]["response"] in (True, False)


def test_marker_labels_never_overprint_and_stay_on_their_axis() -> None:
    from irkit.plots import Marker, marker_labels

    t0 = datetime(2025, 11, 20, 14, 0, tzinfo=UTC)
    end = t0 + timedelta(hours=2)
    markers = [
        Marker(t0 - timedelta(minutes=30), "deploy rev 7", "deploy"),  # before the window: no label here
        Marker(t0 + timedelta(minutes=40), "alert HighErrorRate", "alert"),
        Marker(t0 + timedelta(minutes=90), "monitoring", "resolved"),
        Marker(t0 + timedelta(minutes=91), "resolved", "resolved"),  # 1 minute later: one label
    ]
    labels = marker_labels(markers, t0, end)
    assert [label for _, label, _ in labels] == ["alert HighErrorRate", "monitoring / resolved"]


def test_a_replay_reads_only_what_was_known_at_its_moment(records) -> None:
    import shutil

    from irkit.alerts import load_notification_file, open_from_notification
    from irkit.demo import SCENARIO_DIR
    from irkit.metrics import read_incident_metrics
    from irkit.scenarios.pool_exhaustion import TIMELINE
    from irkit.times import ReplayClock

    moment = TIMELINE["acknowledged"]  # 14:33; the recording runs to about 15:30
    note = load_notification_file(SCENARIO_DIR / "alertmanager.json")
    rec = open_from_notification(
        records, note, service="schema-registry", actor="t", clock=ReplayClock(moment), replay=True
    )
    shutil.copytree(SCENARIO_DIR / "signals", rec.path / "data" / "signals")
    m = read_incident_metrics(rec, load_config(None, {}), {}, "recorded", now=moment, actor="t")
    assert m.end == moment and m.series
    assert all(s.frame.index.max() <= moment for s in m.series.values())
    assert m.assess().level is not None  # the alert's moment already shows the incident


def test_index_response_stats_mean_the_same_for_one_incident_and_for_many() -> None:
    from irkit.index import Row, response_stats

    def row(i: int, level: str, tta: float, ttr: float) -> Row:
        started = datetime(2025, 11, 1, tzinfo=UTC) + timedelta(days=i)
        return Row(
            id=f"INC-{i}",
            title="t",
            severity=level,
            status="resolved",
            started=started,
            duration=timedelta(minutes=ttr),
            tta=timedelta(minutes=tta),
            ttr=timedelta(minutes=ttr),
            response_met=True,
            resolution_met=True,
            notebooks=[],
            postmortem=None,
            review_overdue=False,
        )

    settings = load_config(None, {})
    one = response_stats([row(0, "P1", 3.5, 257)], settings)
    assert one == [
        {"level": "P1", "measure": "acknowledge", "n": 1, "median": 3.5, "p90": 3.5, "target": 15.0},
        {"level": "P1", "measure": "resolve", "n": 1, "median": 257, "p90": 257, "target": 240.0},
    ]
    many = response_stats([row(i, "P2", float(i + 1), 60.0) for i in range(100)], settings)
    tta = next(s for s in many if s["measure"] == "acknowledge")
    assert (tta["n"], tta["median"], tta["p90"]) == (100, 50.5, 90.0)


def test_jupyterlab_asks_for_a_name_when_only_a_login_name_is_known(records, monkeypatch) -> None:
    from irkit.record import Record
    from irkit.session import Session

    Record.create(records, "INC-ASK-1", title="t", service="s", severity="P2", actor="a")
    monkeypatch.delenv("IRKIT_ACTOR", raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: "  Ana   Ruiz ")
    s = Session.from_parameters("INC-ASK-1", str(records), "missing.yaml", environ={})
    assert s.actor == "Ana Ruiz" and s.actor_known
    assert str(s.acknowledge()) == "acknowledged by Ana Ruiz"

    def nobody(prompt: str) -> str:
        raise EOFError  # papermill: no stdin

    monkeypatch.delenv("IRKIT_ACTOR", raising=False)
    monkeypatch.setattr("builtins.input", nobody)
    quiet = Session.from_parameters("INC-ASK-1", str(records), "missing.yaml", environ={})
    assert not quiet.actor_known and "a login name, not a person" in quiet.summary().loc["actor", "value"]
    batch = Session.from_parameters("INC-ASK-1", str(records), "missing.yaml", environ={"IRKIT_BATCH": "1"})
    assert not batch.actor_known  # a batch run never asks


def test_the_assessment_table_shows_values_in_units_not_raw_floats() -> None:
    from irkit.severity import Evidence, classify
    from irkit.views import Assessed

    a = classify(Evidence(error_ratio=0.163714, latency_p99=2.45, latency_baseline=0.198, availability=0.667))
    table = Assessed(a, "P1", "P1", None).table()
    assert table.loc["error ratio", "value"] == "16.4 %" and table.loc["error ratio", "threshold"] == "> 10 %"
    assert table.loc["latency ratio", "value"] == "12.4x" and table.loc["latency ratio", "threshold"] == "> 10x normal"
    assert "0.163714" not in table.to_string() and "12.37" not in table.to_string()


def test_a_mitigation_plan_shows_its_before_and_after_as_text() -> None:
    from types import SimpleNamespace

    from irkit.mitigate import Plan
    from irkit.views import MitigationView

    plan = Plan(
        "rollback",
        {},
        "deployment/x",
        "roll back",
        {"env": {"DB_POOL_SIZE": "5"}, "image": "a:1.8"},
        {"env": {"DB_POOL_SIZE": "20"}, "image": "a:1.7"},
        "pods replaced",
    )
    table = MitigationView(SimpleNamespace(plan=plan)).plan_table()
    assert table.to_dict("records") == [
        {"field": "env", "before": "DB_POOL_SIZE: 5", "after": "DB_POOL_SIZE: 20"},
        {"field": "image", "before": "a:1.8", "after": "a:1.7"},
    ]


def test_injected_parameters_keep_their_order_and_never_run_code() -> None:
    import nbformat

    from irkit.replay import injected_parameters

    cell = nbformat.v4.new_code_cell(
        'incident_id = "INC-1"\nanswers = {"z": ["ok", "x"], "a": ["problem found", "y"]}\n'
    )
    cell.metadata["tags"] = ["injected-parameters"]
    nb = nbformat.v4.new_notebook(cells=[cell], metadata={"papermill": {"parameters": {"answers": {"a": 1, "z": 2}}}})
    assert list(injected_parameters(nb)["answers"]) == ["z", "a"]  # the order given, not the metadata's sorted one
    cell.source = 'incident_id = __import__("os").system("touch /tmp/irkit-pwned")'
    assert injected_parameters(nb) == {"answers": {"a": 1, "z": 2}}  # not a literal: never evaluated
    assert not __import__("os").path.exists("/tmp/irkit-pwned")


def _reading(signals: tuple[str, ...]) -> IncidentMetrics:
    start = datetime(2025, 11, 20, 13, 30, tzinfo=UTC)
    end = start + timedelta(hours=1)
    index = pd.date_range(start, end, freq="1min")
    series = {
        s: SignalSeries(s, "q", start, end, 60, pd.DataFrame({"value": [0.11 if i > 55 else 0.001 for i in range(61)]}, index))
        for s in signals
    }
    return IncidentMetrics("recorded", start, end, start, end, timedelta(days=7), series=series)


def test_figures_name_markers_once_per_column_and_keep_threshold_labels_clear_of_them() -> None:
    from irkit.plots import Marker, golden_signals_figure, signal_figure

    reading = _reading(("request_rate", "error_ratio", "latency_p99", "saturation_cpu"))
    at = reading.end - timedelta(minutes=4)
    window = (at, reading.end)
    markers = [Marker(at, "alert HighErrorRate", "alert")]
    fig = golden_signals_figure(reading, service="svc", window=window, markers=markers)
    named = [[t.get_text() for t in ax.texts if t.get_text() == "alert HighErrorRate"] for ax in fig.axes]
    assert [len(n) for n in named] == [1, 1, 0, 0]  # the top row names the marker; the lines below line up
    errors = fig.axes[1]
    thresholds = [t for t in errors.texts if t.get_text().startswith(("P1", "P2", "P3"))]
    assert thresholds and all(t.get_ha() == "left" and t.xy[0] < 0.05 for t in thresholds)  # away from the alert

    one = signal_figure(reading, "error_ratio", service="svc", window=window, markers=markers)
    (ax,) = one.axes
    assert ax.get_title() == "" and "error ratio" in one._suptitle.get_text().lower()
    legend = ax.get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().y0 >= ax.get_window_extent().y1 - 1  # above the data


def test_a_prepared_layout_draws_the_same_pixels_as_a_new_one_and_is_given_out_once() -> None:
    from irkit import plots
    from irkit.metrics import GOLDEN_SIGNALS

    reading = _reading(GOLDEN_SIGNALS)
    at = reading.end - timedelta(minutes=4)
    args = {"service": "svc", "window": (at, reading.end), "markers": [plots.Marker(at, "alert X", "alert")]}
    plots._SPARE.clear()
    new_grid = plots.png_bytes(plots.golden_signals_figure(reading, **args))
    new_one = plots.png_bytes(plots.signal_figure(reading, "error_ratio", **args))
    plots.prepare_layouts()
    assert sorted(plots._SPARE) == [(1, 1), (3, 2)]
    spare = plots._SPARE[(3, 2)][0]
    grid = plots.golden_signals_figure(reading, **args)
    assert grid is spare and (3, 2) not in plots._SPARE  # taken: never given out twice
    assert plots.png_bytes(grid) == new_grid  # drawn empty beforehand, yet the very same image
    assert plots.png_bytes(plots.signal_figure(reading, "error_ratio", **args)) == new_one
    assert plots.golden_signals_figure(reading, **args) is not spare and not plots._SPARE


def test_a_figure_png_holds_exactly_the_pixels_savefig_draws_and_leaves_the_figure_as_it_was() -> None:
    import io

    import numpy as np
    from PIL import Image

    from irkit import plots
    from irkit.metrics import GOLDEN_SIGNALS

    reading = _reading(GOLDEN_SIGNALS)
    at = reading.end - timedelta(minutes=4)
    fig = plots.golden_signals_figure(reading, service="svc", window=(at, reading.end), markers=[plots.Marker(at, "alert X", "alert")])
    canvas, dpi = fig.canvas, fig.dpi
    ours = Image.open(io.BytesIO(plots.png_bytes(fig, dpi=90)))
    assert fig.canvas is canvas and fig.dpi == dpi  # the canvas and resolution it had before
    theirs = io.BytesIO()
    fig.savefig(theirs, format="png", dpi=90)
    expected = np.asarray(Image.open(theirs))
    assert ours.format == "PNG" and ours.mode == "RGBA" and ours.size == (expected.shape[1], expected.shape[0])
    assert np.array_equal(np.asarray(ours), expected)
    assert round(ours.info["dpi"][0]) == 90 and ours.info["Software"].startswith("Matplotlib version")


def test_a_figure_png_draws_animated_artists_as_savefig_does_and_never_resizes_a_window() -> None:
    import io

    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from irkit.plots import png_bytes

    fig, ax = plt.subplots(figsize=(3, 2))
    try:
        ax.plot([0, 1], [0, 1], animated=True)  # drawn when saving, skipped on screen
        own_dpi, resized = fig.dpi, []
        fig.canvas.manager.resize = lambda w, h: resized.append((w, h))  # a window would grow with the dpi
        ours = np.asarray(Image.open(io.BytesIO(png_bytes(fig, dpi=220))))
        theirs = io.BytesIO()
        fig.savefig(theirs, format="png", dpi=220)
        assert np.array_equal(ours, np.asarray(Image.open(theirs)))
        assert resized == [] and fig.dpi == own_dpi
    finally:
        plt.close(fig)


def test_encode_png_round_trips_any_rgba_image_and_refuses_other_shapes() -> None:
    import io
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from irkit.plots import encode_png

    rng = np.random.default_rng(7)
    for height, width in ((1, 1), (3, 5), (64, 33)):
        pixels = rng.integers(0, 256, size=(height, width, 4), dtype=np.uint8)
        for given in (pixels, pixels[::-1, ::-1][::-1, ::-1], np.asfortranarray(pixels)):  # any memory layout
            data = encode_png(given)
            decoded = Image.open(io.BytesIO(data))
            assert decoded.mode == "RGBA" and np.array_equal(np.asarray(decoded), pixels)
        kinds, at = [], 8  # every chunk's CRC (Pillow does not check IDAT's or IEND's; browsers do)
        while at < len(data):
            (length,) = struct.unpack(">I", data[at : at + 4])
            kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
            assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + body)
            kinds.append(kind)
            at += 12 + length
        assert kinds == [b"IHDR", b"tEXt", b"IDAT", b"IEND"] and at == len(data)
    bad_ones = (
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros((0, 4, 4), np.uint8),  # an empty image is no PNG
        np.zeros((4, 4, 4), np.float64),  # 0-1 floats would be cast to a black, transparent image
        np.zeros((4, 4, 4), np.uint16),
    )
    for bad in bad_ones:
        with pytest.raises(ValueError, match="RGBA"):
            encode_png(bad)


def test_with_no_signal_at_all_one_panel_says_why_once_and_keeps_the_events() -> None:
    from irkit import plots
    from irkit.metrics import GOLDEN_SIGNALS

    start = datetime(2025, 11, 20, 13, 30, tzinfo=UTC)
    end = start + timedelta(hours=1)
    alert = plots.Marker(end - timedelta(minutes=5), "alert HighErrorRate", "alert")
    args = {"service": "svc", "window": (alert.at, end), "markers": [alert]}
    down = "Prometheus at http://prom:9090 is unreachable (range query)"
    unreachable = IncidentMetrics("prometheus", start, end, start, end, timedelta(days=7))
    unreachable.unavailable = dict.fromkeys(GOLDEN_SIGNALS, down)
    fig = plots.golden_signals_figure(unreachable, **args)
    (ax,) = fig.axes
    said = [t.get_text() for t in ax.texts]
    assert "alert HighErrorRate" in said
    (why,) = [t for t in said if t.startswith("could not check")]
    assert why.count("unreachable") == 1 and "prom:9090" in why
    assert "no data" in fig.get_suptitle() and plots.png_bytes(fig).startswith(b"\x89PNG")

    nothing = IncidentMetrics("recorded", start, end, start, end, timedelta(days=7), unavailable={"all": "no recording"})
    (ax,) = plots.golden_signals_figure(nothing, **args).axes
    assert any("no recording" in t.get_text() for t in ax.texts)  # the reading's one reason, not "no data"

    mixed = IncidentMetrics("prometheus", start, end, start, end, timedelta(days=7))
    mixed.unavailable = {"error_ratio": down, "latency_p99": "query failed: 422 bad_data"}
    (ax,) = plots.golden_signals_figure(mixed, **args).axes
    (why,) = [t.get_text() for t in ax.texts if t.get_text().startswith("could not check")]
    assert "Error ratio (5xx): Prometheus" in why and "p99 latency: query failed" in why

    some = _reading(("error_ratio",))
    some.unavailable = {"latency_p99": down}
    assert len(plots.golden_signals_figure(some, **args).axes) == 2  # data for one: a panel per signal still


def test_dollar_signs_from_alerts_and_errors_are_drawn_as_text_never_as_mathtext() -> None:
    from irkit import plots

    hostile = "$\\undefinedmacro{x}$"
    reading = _reading(("error_ratio", "request_rate"))
    reading.series["request_rate"].frame.columns = [hostile]  # a label value as a series name
    reading.unavailable = {"latency_p99": f"parse error {hostile}"}
    at = reading.end - timedelta(minutes=4)
    args = {"service": hostile, "window": (at, reading.end), "markers": [plots.Marker(at, f"alert {hostile}", "alert")]}
    for fig in (
        plots.golden_signals_figure(reading, **args),
        plots.signal_figure(reading, "request_rate", **args),
        plots.golden_signals_figure(IncidentMetrics("x", reading.start, reading.end, at, at, timedelta(days=7)), **args),
    ):
        assert plots.png_bytes(fig).startswith(b"\x89PNG")  # mathtext would raise on \undefinedmacro
        texts = [fig._suptitle, *(t for ax in fig.axes for t in ax.texts)]
        texts += [t for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        shown = [t for t in texts if t is not None and "undefinedmacro" in t.get_text()]
        assert len(shown) >= 2 and not any(t.get_parse_math() for t in shown)


def test_the_preload_compiles_every_template_in_its_own_format() -> None:
    from pathlib import Path

    import irkit
    from irkit import templating

    root = Path(irkit.__file__).parent / "templates"
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.j2"))
    assert templating.warm() == len(names) > 0  # none skipped for an unknown suffix
    compiled = {fmt: {key[1] for key in templating.environment(fmt).cache} for fmt in ("html", "markdown", "text")}
    for name in names:
        fmt = next(f for suffix, f in templating.SUFFIX_FORMATS.items() if name.endswith(suffix))
        assert name in compiled[fmt], (name, fmt)


def test_placed_axis_labels_clear_the_widest_value_labels_and_stay_in_the_figure() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from irkit import plots
    from irkit.metrics import GOLDEN_SIGNALS

    reading = _reading(GOLDEN_SIGNALS)
    frame = reading.series["availability"].frame
    frame["value"] = [1.0 if i % 7 else 0.667 for i in range(len(frame))]  # "100.0%", the widest label
    plots._SPARE.clear()
    for fig in (
        plots.golden_signals_figure(reading, service="svc", window=(reading.start, reading.end)),
        plots.signal_figure(reading, "availability", service="svc", window=(reading.start, reading.end)),
    ):
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            label = ax.yaxis.label.get_window_extent(renderer)
            values = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
            assert values and label.x1 < min(v.x0 for v in values), ax.get_ylabel()  # no overlap
            assert label.x0 >= 0  # not cut at the figure's edge
        assert any(t.get_text() == "100.0%" for ax in fig.axes for t in ax.get_yticklabels())
