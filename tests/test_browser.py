"""The reports as a person sees them (issue 12): every showcase report.html, rendered by a real
headless Chromium, loads all its figures and fits the page width (no horizontal scrolling at a
1280-pixel window). Skips with the reason where Chromium is not installed (`.ci/run` installs
Debian's `chromium` where apt can)."""

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

REPORTS = sorted((ROOT / "reports").glob("*/report.html"))
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const out = document.createElement('pre'); out.id = 'harness-probe';
  out.textContent = JSON.stringify({images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth});
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.parametrize("report", REPORTS, ids=[p.parent.name for p in REPORTS])
def test_a_showcase_report_renders_whole_in_a_real_browser(tmp_path, report):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    page = tmp_path / report.parent.name
    shutil.copytree(report.parent, page)  # the figures beside it, as in reports/
    html = (page / "report.html").read_text()
    (page / "probe.html").write_text(html.replace("</body>", PROBE + "</body>") if "</body>" in html else html + PROBE)
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,900",
            "--virtual-time-budget=10000",
            "--dump-dom",
            (page / "probe.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r'<pre id="harness-probe">([^<]*)</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    figures = len(re.findall(r"<img ", html))
    assert probe["images"] == figures and figures > 0
    assert probe["broken"] == []
    assert probe["scrollWidth"] <= probe["innerWidth"], f"{report.parent.name} is wider than the window"
