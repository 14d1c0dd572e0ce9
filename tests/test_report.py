"""The run report (Markdown and self-contained HTML) from tiny runs, its figures, and the HTML in Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from advkit.report.html import Document, Figure, Para, Table
from advkit.report.run_report import write_report
from advkit.report.tables import pct, text_matrix
from advkit.study.runner import run_study
from tests.test_transfer import tiny_config, tiny_run, tiny_zoo  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def tiny_report(tiny_run):  # noqa: F811
    return write_report(tiny_run.run_dir), tiny_run


def test_report_from_a_tiny_run(tiny_report):
    paths, run = tiny_report
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    for section in ("## Sanity checks", "## Transfer matrix", "## Paired comparison with ifgsm (McNemar)",
                    "## Examples", "## Float vs 8-bit examples", "## Distortion", "## Clean accuracy",
                    "## Provenance", "## Success over images each target classified correctly"):
        assert section in md, section
    assert "tiny study" in page.split("</title>")[0]
    # every figure the Markdown links exists, and the HTML embeds each as base64 (no external references)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "figures/matrix_0.png" in links and "figures/examples.png" in links
    for link in links:
        assert (run.run_dir / link).is_file()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == len(links) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    # the matrix shows the records' numbers: white-box mean over seeds of I-FGSM
    wb = next(r for r in run.records["summary"] if r["attack"] == "ifgsm" and r["white_box"]
              and r["images"] == "float" and r["over"] == "all")
    row = next(line for line in md.splitlines() if line.startswith("| ifgsm |"))
    assert row.split("|")[2].strip().startswith(pct(wb["mean"]))
    assert "| NaN values in adversarial examples | 0 | ok |" in md
    assert "ifgsm" in text_matrix(run.records, "16/255")


def test_report_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished run"):
        write_report(tmp_path)


def test_sweeps_and_the_paper_comparison(tiny_zoo, tmp_path):  # noqa: F811
    reference = {"citation": "Wu et al. 2020", "baseline": "ifgsm", "eps": "16/255",
                 "rows": [{"paper_source": "ResNet-152", "paper_target": "VGG19", "attack": "ifgsm", "value": 45.03,
                           "source": "tres", "target": "tlin"},
                          {"paper_source": "ResNet-152", "paper_target": "VGG19", "attack": "sgm", "value": 79.90,
                           "source": "tres", "target": "mean"}]}
    cfg = tiny_config(tiny_zoo, attacks=["ifgsm", {"name": "sgm", "settings": {}}], gamma=[0.2, 0.5],
                      eps=["8/255", "16/255"], seeds=[0], reference=reference, notes=["a note for the reader"])
    res = run_study(cfg, tmp_path / "r")
    paths = write_report(res.run_dir)
    md = paths["markdown"].read_text()
    assert (res.run_dir / "figures" / "success_vs_gamma.png").is_file()
    assert (res.run_dir / "figures" / "success_vs_eps.png").is_file()
    assert "## Success vs gamma" in md and "## Success vs eps" in md and "### eps 8/255" in md
    assert "## Comparison with the paper" in md and "| 45.0 |" in md and "+34.9" in md  # paper gain 79.90 - 45.03
    assert "Note: a note for the reader" in md
    assert "SGM hooks fired" in md


def test_document_renders_tables_and_escapes():
    doc = Document("T <1>").add(Para("a `code` & **bold**"), Table(["a|b", "c"], [["x", "1"]], "cap"),
                                Figure("f.png", b"\x89PNG", "fig"))
    md, page = doc.markdown(), doc.html()
    assert "| a\\|b | c |" in md and "![fig](f.png)" in md
    assert "<code>code</code> &amp; <strong>bold</strong>" in page and "T &lt;1&gt;" in page
    assert 'src="data:image/png;base64,iVBORw=="' in page


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tiny_report, tmp_path):
    """Render report.html in headless Chromium (Debian's `chromium` package) and check a real page came out."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    paths, _ = tiny_report
    shot = tmp_path / "report.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={shot}",
                    paths["html"].resolve().as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.is_file()
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1600)
    hist = img.histogram()
    dark = sum(hist[:128]) / (img.size[0] * img.size[1])
    assert 0.005 < dark < 0.5, dark  # text and figures drawn on a white page
    assert sum(1 for h in hist if h) > 30  # the heatmap's and images' tones, not a blank or an error page
