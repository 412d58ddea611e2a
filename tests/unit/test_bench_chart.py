"""The bench's outputs: the SVG chart (bench/chart.py), results.json + history (bench/run.py)
and the workload tree and host baselines (bench/workloads.py)."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import chart  # noqa: E402
import run  # noqa: E402
import workloads  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def figure(median: float, low: float, high: float, runs: int = 5) -> dict[str, float]:
    return {"median": median, "min": low, "max": high, "runs": runs}


RESULTS: dict[str, Any] = {
    "backend": "qemu-tcg",
    "host": {"cpus": 2},
    "finished": "2026-12-04 08:00 UTC",
    "floor_s": figure(0.8, 0.75, 0.92),
    "cold_run_s": figure(0.95, 0.9, 1.1),
    "warm_run_s": figure(0.28, 0.27, 0.31),
    "sdk_warm_run_s": figure(0.13, 0.12, 0.14, 10),
    "pool_run_s": figure(0.037, 0.031, 0.043, 10),
    "serial8_s": figure(2.2, 2.0, 2.5),
    "concurrent8_s": figure(1.27, 1.18, 1.45),
    "seed64_s": figure(5.1, 4.9, 5.6, 3),
    "git_commit_guest_s": figure(21.0, 17.0, 30.0, 3),
    "git_commit_host_s": figure(2.3, 2.0, 2.7, 3),
    "cold_vs_floor": 1.188,
    "plan_vs_import_floor": 1.41,
    "seed64_vs_floor": 6.375,
}


def bars(svg: str) -> dict[str, list[ET.Element]]:
    """Panel title -> its bar groups, from the SVG text (which must parse as XML)."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    return {
        panel.attrib["data-title"]: panel.findall(f"{SVG}g[@class='bar']")
        for panel in root.iter(f"{SVG}g")
        if panel.attrib.get("class") == "panel"
    }


def test_chart_has_one_bar_per_figure_with_whiskers_and_values() -> None:
    panels = bars(chart.render_results(RESULTS))
    labels = {p: [b.attrib["data-label"] for b in group] for p, group in panels.items()}
    assert labels == {
        "Start latency": [
            "raw QEMU boot (floor)",
            "pyro run --cold",
            "pyro run (restored)",
            "SDK run (restored)",
            "SDK run (warm pool)",
        ],
        "Eight runs": ["8 runs one after another", "8 runs at once"],
        "What users do": [
            "seed 64 MB tree, first exec",
            "git commit in the guest",
            "git commit on the host",
        ],
        "Ratios within the run": [
            "cold run / raw QEMU floor",
            "seed 64 MB tree / floor",
            "pyro plan / import floor",
        ],
    }
    for title, group in panels.items():
        for bar in group:
            value = float(bar.attrib["data-value"])
            text = "".join(bar.find(f"{SVG}text[@class='value']").itertext())  # type: ignore[union-attr]
            assert text.startswith(chart._number(value))
            whiskers = bar.findall(f"{SVG}path[@class='whisker']")
            if title == "Ratios within the run":
                assert whiskers == []
            else:
                # a min-max whisker, and both ends written next to the bar
                assert len(whiskers) == 1
                key = next(
                    k
                    for k, v in RESULTS.items()
                    if isinstance(v, dict) and v.get("median") == value
                )
                low, high = RESULTS[key]["min"], RESULTS[key]["max"]
                assert f"({chart._number(low)}-{chart._number(high)})" in text


def test_bar_lengths_and_whiskers_follow_the_panel_scale() -> None:
    panel = chart.Panel("p", "s", [chart.Bar("a", 1.0, 0.5, 2.0), chart.Bar("b", 4.0, 3.0, 4.0)])
    (group,) = bars(chart.render([panel], "t")).values()
    widths = [float(g.find(f"{SVG}rect").attrib["width"]) for g in group]  # type: ignore[union-attr]
    assert widths[1] == pytest.approx(4 * widths[0], abs=0.2)
    assert widths[1] <= chart.BAR_AREA
    moves = group[0].find(f"{SVG}path").attrib["d"].split()  # type: ignore[union-attr]
    low_x, high_x = float(moves[0][1:].split(",")[0]), float(moves[1][1:])
    assert high_x - low_x == pytest.approx(1.5 * widths[0], abs=0.2)


def test_targets_are_marked_and_labels_escaped() -> None:
    panel = chart.Panel("a < b & c", "x", [chart.Bar("<plan> & 'so'", 1.4, target=1.3)])
    svg = chart.render([panel], "t & u", "sub <x>")
    (group,) = bars(svg).values()
    assert group[0].attrib["data-label"] == "<plan> & 'so'"
    assert len(group[0].findall(f"{SVG}line[@class='target']")) == 1
    assert "target 1.30" in "".join(group[0].itertext())


def test_missing_figures_and_empty_panels_are_left_out() -> None:
    panels = bars(chart.render_results({"plan_s": figure(0.14, 0.13, 0.15)}))
    assert list(panels) == ["CLI start-up"]
    assert [b.attrib["data-label"] for b in panels["CLI start-up"]] == ["pyro plan"]


def test_write_results_writes_json_chart_and_appends_history(tmp_path: Path) -> None:
    output, history = tmp_path / "results.json", tmp_path / "history.jsonl"
    run.write_results(RESULTS, output, history=history)
    run.write_results({**RESULTS, "finished": "later"}, output, history=history)
    assert json.loads(output.read_text()) == {**RESULTS, "finished": "later"}
    assert output.with_suffix(".svg").read_text() == chart.render_results(
        {**RESULTS, "finished": "later"}
    )
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [line["finished"] for line in lines] == ["2026-12-04 08:00 UTC", "later"]
    run.write_results(RESULTS, tmp_path / "partial.json", history=None)
    assert len(history.read_text().splitlines()) == 2


def test_committed_chart_and_history_come_from_results_json() -> None:
    results = json.loads((BENCH / "results.json").read_text())
    assert (BENCH / "results.svg").read_text() == chart.render_results(results)
    history = [json.loads(line) for line in (BENCH / "history.jsonl").read_text().splitlines()]
    assert history and history[-1] == results
    for key in ("seed64_vs_floor", "copyin64_vs_host", "git_commit_guest_vs_host"):
        assert key in results, f"bench/results.json lacks {key}"
    assert results["plan_vs_import_floor"] == round(
        results["plan_s"]["median"] / results["import_floor_s"]["median"], 3
    )


def test_workload_tree_is_the_same_every_time(tmp_path: Path) -> None:
    one = workloads.write_tree(tmp_path / "a", big_bytes=100_000, small_files=90)
    two = workloads.write_tree(tmp_path / "b", big_bytes=100_000, small_files=90)
    files = sorted(p.relative_to(one.path) for p in one.path.rglob("*") if p.is_file())
    assert len(files) == one.files == 91
    assert len({f.parent for f in files}) == workloads.FOLDERS + 1
    assert sum((one.path / f).stat().st_size for f in files) == one.bytes
    assert (one.path / "data" / "blob.bin").stat().st_size == one.big_bytes == 100_000
    assert all((one.path / f).read_bytes() == (two.path / f).read_bytes() for f in files)


def test_host_baselines_copy_and_commit_the_tree(tmp_path: Path) -> None:
    tree = workloads.write_tree(tmp_path / "tree", big_bytes=50_000, small_files=30)
    assert workloads.host_cp(tree, tmp_path / "copy") > 0
    assert not (tmp_path / "copy").exists()
    assert workloads.host_git_commit(tree, tmp_path / "work") > 0
    assert not (tmp_path / "work").exists()
