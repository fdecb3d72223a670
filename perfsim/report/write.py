"""Write a report directory: ``index.html`` (self-contained: figures embedded as data: URIs,
no scripts, no external resources), ``report.md``, ``figures/*.png|svg``, ``data/*.csv`` (the
data of every table and figure) plus the raw results as Parquet, ``traces/*.json`` and
``provenance.json``.

The directory is built next to its final place and renamed into it (:func:`atomic_dir`), so a
reader never sees a half-written report in place of a good one.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from perfsim.atomic import atomic_dir
from perfsim.report.figures import Figure
from perfsim.report.findings import Cite, Finding
from perfsim.report.tables import Table


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    figures: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(relative path, label) pairs, e.g. the trace files."""
    findings: list[Finding] = field(default_factory=list)
    """Cited sentences shown right after the intro (the opening answer)."""


@dataclass
class Document:
    title: str
    subtitle: str
    findings: list[Finding]
    sections: list[Section]
    tables: dict[str, Table]
    figures: dict[str, Figure]
    provenance: dict
    data_files: list[str]
    lead: Section | None = None
    """Shown first, before the contents and the findings: the short answer."""

    def all_findings(self) -> list[Finding]:
        out = list(self.lead.findings) if self.lead else []
        out += self.findings
        for s in self.sections:
            out += s.findings
        return out

    def cited(self) -> set[str]:
        return {self.tables[c.table].anchor(c.row, c.col)
                for f in self.all_findings() for c in f.cites.values()}


# --------------------------------------------------------------------------- HTML
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222}
main{max-width:1180px;margin:0 auto;padding:1.2em 1.6em 3em}
h1{font-size:1.7em;margin:.2em 0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}h3{font-size:1.05em;margin:1.4em 0 .4em}
.sub{color:#555;margin:.2em 0 1em}nav ol{columns:2;font-size:.95em}
table{border-collapse:collapse;font-size:12.5px;margin:.5em 0 1em;display:block;
overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td:first-child,th:first-child{text-align:left}
td.l,th.l{text-align:left;white-space:normal}
tr:nth-child(even) td{background:#fafafa}
td.cited{background:#fff5cc!important}td:target{outline:2px solid #d33;
background:#ffe08a!important}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.caption{color:#555;font-size:.9em}
.findings li{margin:.35em 0}a.cite{font-weight:600;text-decoration:none;
border-bottom:1px dotted #36c;color:#1a4fa0}
.note{background:#f7f7f7;border-left:3px solid #bbb;padding:.4em .8em;margin:.6em 0}
.lead{background:#f6f9ff;border:1px solid #cfdcf3;border-radius:6px;padding:.2em 1.2em .8em;margin:1em 0}
.lead h2{margin-top:.6em;border:0}.answer li{font-size:1.08em}
footer{margin-top:3em;font-size:.85em;color:#444;border-top:1px solid #ccc;padding-top:1em}
footer dl{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em}
footer dt{font-weight:600}footer dd{margin:0;word-break:break-all}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _text_columns(t: Table) -> set[str]:
    """Columns of words (not numbers): shown left-aligned."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return {c for c in t.df.columns if c not in t.fmt and not is_numeric_dtype(t.df[c])
            and not is_bool_dtype(t.df[c])}


def _html_table(t: Table, cited: set[str]) -> str:
    cols = t.shown_columns()
    text = _text_columns(t)
    out = [f'<table id="table-{_e(t.id)}"><thead><tr>']
    out += [f'<th class="l">{_e(c)}</th>' if c in text else f"<th>{_e(c)}</th>" for c in cols]
    out.append("</tr></thead><tbody>")
    for _, row in t.df.iterrows():
        key = row[t.key]
        out.append("<tr>")
        for c in cols:
            a = t.anchor(key, c)
            names = (["cited"] if a in cited else []) + (["l"] if c in text else [])
            cls = f' class="{" ".join(names)}"' if names else ""
            ids = [a] + [t.anchor(key, x) for x in t.ci.get(c, ())]
            extra = "".join(f'<span id="{_e(x)}"></span>' for x in ids[1:] if x in cited)
            out.append(f'<td id="{_e(a)}"{cls}>{extra}{_e(t.cell_text(row, c))}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _png_uri(outdir: Path, rel: str) -> str:
    data = (outdir / rel).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def render_html(doc: Document, outdir: Path) -> str:
    cited = doc.cited()

    def wrap(c: Cite, text: str, t: Table) -> str:
        a = t.anchor(c.row, c.col)
        return (f'<a class="cite" href="#{_e(a)}" title="{_e(t.title)}: row {_e(c.row)}, '
                f'column {_e(c.col)}">{_e(text)}</a>')

    p = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
         f'<meta name="viewport" content="width=device-width,initial-scale=1">'
         f"<title>{_e(doc.title)}</title><style>{CSS}</style></head><body><main>",
         f"<h1>{_e(doc.title)}</h1><p class=sub>{_e(doc.subtitle)}</p>"]
    if doc.lead is not None:
        p += _html_section(doc, doc.lead, outdir, cited, wrap, lead=True)
    p.append('<nav><strong>Contents</strong><ol>')
    if doc.lead is not None:
        p.append(f'<li><a href="#{_e(doc.lead.id)}">{_e(doc.lead.title)}</a></li>')
    p.append('<li><a href="#findings">Findings</a></li>')
    p += [f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a></li>' for s in doc.sections]
    p.append('<li><a href="#provenance">Provenance</a></li></ol></nav>')
    if doc.findings:
        p.append('<h2 id="findings">Findings</h2><p class=caption>Generated from the data: '
                 "every number links to the table cell it comes from.</p>"
                 '<ul class="findings">')
        p += [f"<li>{_esc_template(f, doc.tables, wrap)}</li>" for f in doc.findings]
        p.append("</ul>")
    for s in doc.sections:
        p += _html_section(doc, s, outdir, cited, wrap)
    p.append('<footer id="provenance"><h2>Provenance</h2><dl>')
    for k, v in doc.provenance.items():
        if isinstance(v, dict):
            v = "; ".join(f"{a}: {b}" for a, b in v.items()) or "–"
        p.append(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>")
    p.append("</dl><p>Data files: " + ", ".join(
        f'<a href="{_e(d)}">{_e(d)}</a>' for d in doc.data_files) + "</p>")
    p.append("</footer></main></body></html>")
    return "".join(p)


def _html_section(doc: Document, s: Section, outdir: Path, cited: set[str], wrap,
                  lead: bool = False) -> list[str]:
    p = [f'<section class="lead" id="{_e(s.id)}"><h2>{_e(s.title)}</h2>' if lead
         else f'<h2 id="{_e(s.id)}">{_e(s.title)}</h2>']
    if s.intro:
        p.append(f"<p>{_e(s.intro)}</p>")
    if s.findings:
        p.append('<ul class="findings answer">')
        p += [f"<li>{_esc_template(f, doc.tables, wrap)}</li>" for f in s.findings]
        p.append("</ul>")
    for fid in s.figures:
        f = doc.figures[fid]
        p.append(f'<figure id="figure-{_e(f.id)}"><img src="{_png_uri(outdir, f.png)}" '
                 f'alt="{_e(f.title)}"><figcaption><strong>{_e(f.title)}.</strong> '
                 f"{_e(f.caption)} [<a href=\"{_e(f.svg)}\">SVG</a> · "
                 f"<a href=\"{_e(f.png)}\">PNG</a> · "
                 f"<a href=\"data/fig-{_e(f.id)}.csv\">data</a>]</figcaption></figure>")
    # Explanations sit right under the figure they explain, before the (long) tables.
    for n in s.notes:
        p.append(f'<p class="note">{_e(n)}</p>')
    for tid in s.tables:
        t = doc.tables[tid]
        p.append(f"<h3>{_e(t.title)}</h3><p class=caption>{_e(t.caption)} "
                 f"[<a href=\"data/{_e(t.id)}.csv\">CSV</a>]</p>")
        p.append(_html_table(t, cited))
    if s.links:
        p.append("<ul>" + "".join(f'<li><a href="{_e(h)}">{_e(lbl)}</a></li>'
                                  for h, lbl in s.links) + "</ul>")
    if lead:
        p.append("</section>")
    return p


def _esc_template(f: Finding, tables, wrap) -> str:
    # Escape the template's prose, then fill the (already HTML) cited values.
    tmpl = html.escape(f.template, quote=False)
    vals = {}
    for name, c in f.cites.items():
        t = tables[c.table]
        vals[name] = wrap(c, t.format(c.col, t.value(c.row, c.col)), t)
    return tmpl.format(**vals)


# --------------------------------------------------------------------------- Markdown
def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table, cited: set[str]) -> str:
    cols = t.shown_columns()
    text = _text_columns(t)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |",
             "|" + "|".join("---" if i == 0 or c in text else "---:"
                            for i, c in enumerate(cols)) + "|"]
    for _, row in t.df.iterrows():
        key = row[t.key]
        cells = []
        for c in cols:
            a = t.anchor(key, c)
            pre = f'<a id="{a}"></a>' if a in cited else ""
            cells.append(pre + _md_cell(t.cell_text(row, c)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(doc: Document) -> str:
    cited = doc.cited()

    def wrap(c: Cite, text: str, t: Table) -> str:
        return f"[{text}](#{t.anchor(c.row, c.col)})"

    out = [f"# {doc.title}", "", doc.subtitle, ""]
    if doc.lead is not None:
        out += _md_section(doc, doc.lead, cited, wrap)
    if doc.findings:
        out += ["## Findings", "", "Every number links to the table cell it comes from.", ""]
        out += [f"* {f.render(doc.tables, wrap)}" for f in doc.findings]
        out.append("")
    for s in doc.sections:
        out += _md_section(doc, s, cited, wrap)
    out += ["## Provenance", ""]
    for k, v in doc.provenance.items():
        if isinstance(v, dict):
            v = "; ".join(f"{a}: {b}" for a, b in v.items()) or "–"
        out.append(f"* **{k}**: {v}")
    out += ["", "Data files: " + ", ".join(f"[{d}]({d})" for d in doc.data_files), ""]
    return "\n".join(out)


def _md_section(doc: Document, s: Section, cited: set[str], wrap) -> list[str]:
    out = [f"## {s.title}", ""]
    if s.intro:
        out += [s.intro, ""]
    if s.findings:
        out += [f"* {f.render(doc.tables, wrap)}" for f in s.findings]
        out.append("")
    for fid in s.figures:
        f = doc.figures[fid]
        out += [f"![{f.title}]({f.png})", "",
                f"*{f.title}.* {f.caption} ([SVG]({f.svg}), "
                f"[data](data/fig-{f.id}.csv))", ""]
    for n in s.notes:
        out += [f"> {n}", ""]
    for tid in s.tables:
        t = doc.tables[tid]
        out += [f"### {t.title}", "", f"{t.caption} ([CSV](data/{t.id}.csv))", "",
                _md_table(t, cited), ""]
    for h, lbl in s.links:
        out.append(f"* [{lbl}]({h})")
    if s.links:
        out.append("")
    return out


def write_document(doc: Document, outdir: Path, *, images_ready=None) -> None:
    """Write ``doc``'s tables (CSV), Markdown, provenance and HTML into ``outdir``; the HTML,
    which embeds the PNG images, last. ``images_ready``: called before the HTML is rendered
    (e.g. waiting for a figure still being drawn elsewhere: the rest is written meanwhile)."""
    for t in doc.tables.values():
        t.df.to_csv(outdir / "data" / f"{t.id}.csv", index=False)
    (outdir / "report.md").write_text(render_markdown(doc), encoding="utf-8")
    (outdir / "provenance.json").write_text(json.dumps(doc.provenance, indent=2,
                                                       default=str) + "\n")
    if images_ready is not None:
        images_ready()
    (outdir / "index.html").write_text(render_html(doc, outdir), encoding="utf-8")


__all__ = ["Document", "Section", "atomic_dir", "render_html", "render_markdown",
           "write_document"]
