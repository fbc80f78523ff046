"""A generated report opened in a real browser (headless Chromium): every image loads, the console
stays clean, and the screenshot shows a page. Skipped only where Chromium is missing on a developer's
machine; CI installs it (`.ci/run`) and sets SFDA_REQUIRE_CHROMIUM=1, so there a missing browser fails."""

from __future__ import annotations

import os

import numpy as np
import pytest
from kits.chromium import find_chromium, open_page
from PIL import Image

from sfda.report.command import build_report

pytestmark = pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("SFDA_REQUIRE_CHROMIUM"),
    reason="no Chromium on this machine (apt-get install chromium); CI requires it",
)


@pytest.mark.slow  # a browser start: the fast tier keeps the report's own content tests
def test_the_report_renders_in_chromium_with_every_image_and_no_console_error(tiny_run, tmp_path):
    page = build_report([tiny_run], tmp_path / "report.html")
    seen = open_page(page, tmp_path / "screenshot.png")
    assert seen["errors"] == []
    assert len(seen["images"]) == len(list((tmp_path / "report_files").glob("*.png"))) >= 6
    assert all(image["ok"] for image in seen["images"]), [i["alt"] for i in seen["images"] if not i["ok"]]
    shot = np.asarray(Image.open(seen["screenshot"]).convert("L"))
    assert shot.shape[0] > 2000 and shot.shape[1] >= 1000  # the full page, not one screen
    assert shot.std() > 10  # drawn content, not a blank page


def test_the_probe_sees_a_broken_image_and_a_console_error(tmp_path):
    """The check above could fail: a page with a missing image and a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="missing.png" alt="gone"><script>console.error("boom")</script></body></html>'
    )
    seen = open_page(page, tmp_path / "bad.png")
    assert [image["ok"] for image in seen["images"]] == [False]
    assert any("boom" in e for e in seen["errors"])
