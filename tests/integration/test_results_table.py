"""The results page's tables (docs/results.md) are the ones generated from benchmarks/results/*.json."""

import json
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402


def test_results_page_matches_the_result_files():
    page = (ROOT / "docs" / "results.md").read_text()
    assert report.PAGE == ROOT / "docs" / "results.md"
    block = page.split(report.START, 1)[1].split(report.END, 1)[0].strip()
    assert block == report.render().strip(), "docs/results.md is stale: run `python benchmarks/report.py`"


def test_the_readme_holds_no_results_tables_and_links_the_results_page():
    readme = (ROOT / "README.md").read_text()
    assert report.START not in readme and "(docs/results.md)" in readme


def test_table_has_a_column_per_metric_and_a_row_per_method():
    rows = [{"benchmark": "b", "setting": "closed", "method": m, "metric": k, "value": v, "epochs": 1}
            for m, k, v in [("shot", "acc", 0.9), ("shot", "epoch-seconds", 12.34), ("nrc", "acc", 0.8)]]
    lines = report.table(rows).splitlines()
    assert lines[0] == "| benchmark | setting | method | epochs | acc | epoch-seconds |"
    assert lines[2] == "| b | closed | shot | 1 | 0.9000 | 12.3 |"
    assert lines[3] == "| b | closed | nrc | 1 | 0.8000 |  |"


def test_the_online_tta_page_matches_its_result_file():
    import tta_tables

    rows = json.loads((ROOT / "benchmarks" / "results" / "tta.json").read_text())
    page = (ROOT / "docs" / "tta_results.md").read_text()
    assert page == tta_tables.render(rows), "docs/tta_results.md is stale: run `python benchmarks/report.py`"


def test_the_online_table_has_a_column_per_setting_the_best_in_bold_and_the_continual_gap():
    import tta_tables

    rows = [{"benchmark": "b", "setting": s, "method": m, "metric": "online-error", "value": v, "notes": "n"}
            for m, s, v in [("tent", "reset_each_shift", 0.1), ("tent", "continual", 0.3),
                            ("source_only", "reset_each_shift", 0.2), ("source_only", "continual", 0.2)]]
    rows[1]["std"] = 0.05
    lines = tta_tables.accuracy_table(rows).splitlines()
    assert lines[0] == "| method | reset_each_shift | continual | continual - reset |"
    assert lines[2] == "| source_only | 0.2000 | **0.2000** | +0.0000 |"
    assert lines[3] == "| tent | **0.1000** | 0.3000 ± 0.0500 | +0.2000 |"
