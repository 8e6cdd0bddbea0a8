"""`dvc plots show` with workflow/plots/offline.html renders without a network.

DVC's own page loads Vega from a CDN and stays blank offline (the last test shows it does here,
so the checks can fail); the template has the three libraries inlined (scripts/update_vega.py
writes it from the pinned npm packages). A scratch DVC project with one CSV plot stands in for
the pipeline's plots; .dvc/config gets exactly the lines the project's config should hold.
"""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.chromium import artifacts_dir, open_page
from tests.pipeline_copy import REPO, tool_env

TEMPLATE = REPO / "workflow" / "plots" / "offline.html"
CONFIG_LINES = "[plots]\n    html_template = ../workflow/plots/offline.html\n"  # relative to .dvc/
RENDERED = ".vega-embed canvas, .vega-embed svg.marks"
# pixels vega drew on the chart's canvas (not transparent); -1 without a canvas
INK = f"""(() => {{ const c = document.querySelector("{RENDERED}");
    if (!c) return -1; if (c.tagName !== "CANVAS") return c.querySelectorAll("path").length;
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }})()"""


def _dvc(*args: str, cwd: Path) -> str:
    env = tool_env()
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DVC project with a loss curve as a top-level plot and the template at the path the
    config names."""
    root = tmp_path_factory.mktemp("plots")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc("init", "-q", cwd=root)
    (root / "loss.csv").write_text("step,loss\n1,0.9\n2,0.6\n3,0.45\n4,0.41\n5,0.38\n")
    (root / "dvc.yaml").write_text("plots:\n  - loss.csv:\n      x: step\n      y: loss\n")
    (root / "workflow" / "plots").mkdir(parents=True)
    shutil.copy(TEMPLATE, root / "workflow" / "plots" / "offline.html")
    return root


def test_template_is_the_pinned_packages_and_dvc_placeholders():
    pins = runpy.run_path(str(REPO / "scripts" / "update_vega.py"))["PINS"]
    text = TEMPLATE.read_text(encoding="utf-8")
    assert [name for name, *_ in pins] == ["vega", "vega-lite", "vega-embed"]
    for name, version, integrity, build in pins:
        assert f"{name}@{version}" in text.split("-->")[0]
        assert f"npm {name}-{version}.tgz {integrity}, file {build}" in text
    assert text.count("{plot_divs}") == 1 and text.count("{refresh_tag}") == 1
    assert "{scripts}" not in text  # DVC's CDN script tags have nowhere to go
    assert len(re.findall(r"<script>", text)) == 3 and not re.search(r"<script[^>]*\bsrc=", text)
    assert not re.search(r"sourceMappingURL|cdn\.jsdelivr", text)


def _by_option(project: Path) -> Path:
    page = project / "by_option" / "index.html"
    if not page.exists():
        _dvc("plots", "show", "--html-template", str(TEMPLATE), "-o", "by_option", cwd=project)
    return page


def test_config_and_option_give_the_same_offline_page(project: Path):
    config = project / ".dvc" / "config"
    before = config.read_text()
    config.write_text(before + CONFIG_LINES)
    try:
        _dvc("plots", "show", "-o", "by_config", cwd=project)
    finally:
        config.write_text(before)
    page = (project / "by_config" / "index.html").read_text(encoding="utf-8")
    assert page == _by_option(project).read_text(encoding="utf-8")
    assert "vegaEmbed('#loss_csv'" in page and "cdn.jsdelivr" not in page


def test_plots_page_renders_offline_in_chromium(project: Path):
    page = _by_option(project)
    result = open_page(page, {"ink": INK, "title": "document.querySelector('.vega-embed').textContent"},
                       ready=f"document.querySelector('{RENDERED}') !== null", timeout=30,
                       screenshot=artifacts_dir() / "dvc_plots.png")
    assert result.values["ready"] is True
    assert result.values["ink"] > 500  # the curve, axes and labels are drawn
    assert result.console_errors == [] and result.failed_requests == []
    assert all(url.startswith(("file:", "data:")) for url in result.requested_urls), result.requested_urls


def test_dvc_default_page_is_blank_offline(project: Path):
    """The control: without the template the same checks fail."""
    _dvc("plots", "show", "-o", "default", cwd=project)
    page = project / "default" / "index.html"
    assert "cdn.jsdelivr.net/npm/vega@" in page.read_text(encoding="utf-8")
    result = open_page(page, {"ink": INK}, ready="document.readyState === 'complete'", timeout=20)
    assert result.values["ink"] == -1
    assert any("vegaEmbed is not defined" in e for e in result.console_errors), result.console_errors
    assert any("cdn.jsdelivr.net" in f for f in result.failed_requests), result.failed_requests
