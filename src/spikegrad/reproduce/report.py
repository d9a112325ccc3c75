"""The reproduction report: one self-contained HTML file (figures embedded) and a Markdown twin."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from spikegrad.io import atomic_write_text
from spikegrad.reproduce.claims import Claim

VERDICT_COLOURS = {"holds": "#d4edda", "does not hold": "#f8d7da", "inconclusive": "#fff3cd",
                   "inconclusive (undertrained)": "#fff3cd"}

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.4em 0.6em; vertical-align: top; font-size: 0.92em; }
th { background: #f0f0f0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
details { margin: 0.5em 0; }
"""

# marks every image as loaded or broken, so that a headless browser can check the page
IMAGE_CHECK = """
<script>
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img');
  var broken = 0;
  images.forEach(function (img) {
    var ok = img.complete && img.naturalWidth > 0;
    img.setAttribute('data-loaded', ok ? 'yes' : 'no');
    if (!ok) { broken += 1; }
  });
  document.body.setAttribute('data-images', images.length + ' ' + broken);
});
</script>
"""


def _figure_html(figure: dict[str, str], out_dir: Path) -> str:
    data = base64.b64encode((out_dir / figure["png"]).read_bytes()).decode("ascii")
    return (
        f'<figure id="{html.escape(figure["name"])}"><img alt="{html.escape(figure["title"])}" '
        f'src="data:image/png;base64,{data}"><figcaption><b>{html.escape(figure["title"])}.'
        f"</b> {html.escape(figure['caption'])} (<a href=\"{figure['svg']}\">SVG</a>)"
        "</figcaption></figure>"
    )


EXTENSION_TITLE = ("Beyond the paper: fluctuation-driven initialisation (Rossbroich, Gygax & "
                   "Zenke 2022)")
EXTENSION_INTRO = (
    "The init study trains networks of 1, 3 and 5 hidden layers under the paper's uniform "
    "initialisation, a Gaussian N(0, 1/fan_in) and the fluctuation-driven initialisation at "
    "a grid of target membrane spreads σ_U (μ_U = 0, threshold 1), each condition at its own "
    "chosen learning rate, and checks claims of Rossbroich, Gygax & Zenke (2022) by rules "
    "fixed before the results were seen, in the same way as the paper's claims.")


NO_PAPER_CLAIMS = "No claim of the paper was checked: none of its studies ran."


def _summary(claims: list[Claim]) -> str:
    counts = {v: sum(c.verdict == v for c in claims) for v in VERDICT_COLOURS}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def _claim_rows(claims: list[Claim]) -> str:
    return "".join(
        f'<tr><td>{html.escape(c.study)}</td><td>{html.escape(c.statement)}</td>'
        f'<td style="background:{VERDICT_COLOURS[c.verdict]}"><b>{c.verdict}</b></td>'
        f"<td>{html.escape(c.evidence)}</td><td>{html.escape(c.rule)}</td>"
        f"<td>{html.escape(c.undertrained)}</td><td>{html.escape(c.stability)}</td></tr>"
        for c in claims
    )


CLAIMS_HEADER = ("<tr><th>study</th><th>claim</th><th>verdict</th><th>evidence</th>"
                 "<th>rule</th><th>undertrained</th><th>stability</th></tr>")


def _claim_lines(claims: list[Claim]) -> list[str]:
    return (["| study | claim | verdict | evidence | rule | undertrained | stability |",
             "|---|---|---|---|---|---|---|"]
            + [f"| {c.study} | {c.statement} | **{c.verdict}** | {c.evidence} | {c.rule} | "
               f"{c.undertrained} | {c.stability} |" for c in claims])


def _figure_lines(figures: list[dict[str, str]]) -> list[str]:
    lines: list[str] = []
    for f in figures:
        lines += [f"![{f['title']}]({f['png']})", "", f"*{f['title']}.* {f['caption']} "
                  f"([SVG]({f['svg']}))", ""]
    return lines


def write_report(
    out_dir: Path,
    claims: list[Claim],
    figures: list[dict[str, str]],
    meta: dict[str, Any],
    specs: dict[str, dict[str, dict[str, Any]]],
    study_tables: list[dict[str, Any]],
    extension_claims: list[Claim] | None = None,
) -> dict[str, str]:
    """Write report.html and report.md into ``out_dir``; returns their paths. Figures whose
    ``part`` is ``extension`` go to the extension part with ``extension_claims``."""
    extension_claims = extension_claims or []
    extension_figures = [f for f in figures if f.get("part") == "extension"]
    figures = [f for f in figures if f.get("part") != "extension"]
    summary = _summary(claims)
    claims_html = (
        f"<p>{html.escape(summary)}. Each verdict is computed from the measured trials by the "
        "rule beside it, fixed before the results were seen. Evidence: mean ± sd over seeds "
        "[95 % interval] per condition; paired differences with their one-sided 95 % bounds (a "
        "90 % interval). \"Undertrained\": trials whose epoch budget ran out with the best epoch "
        "in its last 10 % (above 10 % of a claim's trials its verdict is inconclusive). "
        "\"Stability\": the verdict on two disjoint halves of the seeds.</p>"
        f"<table>{CLAIMS_HEADER}{_claim_rows(claims)}</table>"
        if claims else f"<p>{NO_PAPER_CLAIMS}</p>")
    extension_html = ""
    if extension_claims or extension_figures:
        extension_html = (
            f"<h2>{html.escape(EXTENSION_TITLE)}</h2><p>{html.escape(EXTENSION_INTRO)} "
            f"{html.escape(_summary(extension_claims))}.</p>"
            f"<table>{CLAIMS_HEADER}{_claim_rows(extension_claims)}</table>"
            + "".join(_figure_html(f, out_dir) for f in extension_figures))
    trial_rows = "".join(
        f"<tr><td>{html.escape(t['study'])}</td><td>{t['trials']}</td>"
        f"<td>{html.escape(json.dumps(t['counts']))}</td><td>{t.get('selections', '')}</td>"
        f"<td>{t['wall_time_s']:.0f}</td></tr>"
        for t in study_tables
    )
    meta_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                        for k, v in meta.items())
    spec_blocks = "".join(
        f"<details><summary>{html.escape(spec['name'])}</summary><pre>"
        f"{html.escape(json.dumps(spec, indent=1, default=str))}</pre></details>"
        for group in specs.values() for spec in group.values()
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>spikegrad reproduction report: Zenke &amp; Vogels (2021)</title>
<style>{CSS}</style></head><body>
<h1>Reproduction of Zenke &amp; Vogels (2021)</h1>
<p>The robustness of surrogate gradient learning in spiking networks, re-measured with
spikegrad. Profile <b>{html.escape(str(meta.get("profile")))}</b>:
{html.escape(str(meta.get("profile description", "")))}</p>
<h2>Claims</h2>
{claims_html}
<h2>Figures</h2>
{"".join(_figure_html(f, out_dir) for f in figures)}
{extension_html}
<h2>Trials</h2>
<table><tr><th>study</th><th>trials</th><th>status</th><th>learning rates chosen</th>
<th>training time (s, summed over workers)</th></tr>
{trial_rows}</table>
<h2>Run</h2><table>{meta_rows}</table>
<h2>Exact study specs</h2>{spec_blocks}
{IMAGE_CHECK}
</body></html>
"""
    html_path = atomic_write_text(out_dir / "report.html", page)

    lines = [
        "# Reproduction of Zenke & Vogels (2021)", "",
        f"Profile **{meta.get('profile')}**: {meta.get('profile description', '')}", "",
        "## Claims", "",
        *([f"{summary}. Each verdict is computed from the measured trials by the stated rule, "
           "fixed before the results were seen.", "", *_claim_lines(claims)] if claims
          else [NO_PAPER_CLAIMS]),
        "", "## Figures", "", *_figure_lines(figures),
    ]
    if extension_claims or extension_figures:
        lines += [f"## {EXTENSION_TITLE}", "",
                  f"{EXTENSION_INTRO} {_summary(extension_claims)}.", "",
                  *_claim_lines(extension_claims), "", *_figure_lines(extension_figures)]
    lines += ["## Trials", "", "| study | trials | status | learning rates chosen | "
              "training time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {t['study']} | {t['trials']} | {json.dumps(t['counts'])} | "
              f"{t.get('selections', '')} | {t['wall_time_s']:.0f} |" for t in study_tables]
    lines += ["", "## Run", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in meta.items()]
    lines += ["", "## Exact study specs", ""]
    for group in specs.values():
        for spec in group.values():
            lines += [f"### {spec['name']}", "", "```json",
                      json.dumps(spec, indent=1, default=str), "```", ""]
    md_path = atomic_write_text(out_dir / "report.md", "\n".join(lines) + "\n")
    return {"html": str(html_path), "markdown": str(md_path)}
