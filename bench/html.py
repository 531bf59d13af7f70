"""A self-contained HTML report of a results folder: every table and figure in one file (figures inlined
as base64 PNG), for sharing a sweep without the folder."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime

from bench import plots, tables
from bench.report import sections, write_tables
from bench.store import ResultStore, atomic_write_bytes

STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}.note{font-size:12px;color:#a33;margin:-1em 0 1em}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}h2{margin-top:1.5em}"""


def write_report(store: ResultStore):
    res = store.results()
    write_tables(store)
    figures = plots.make_all(store)
    parts = [f"<h1>ebm-bench report: {html.escape(str(store.out.name))} ({html.escape(tables.describe(res))})</h1>",
             f"<p>{len(res.drop_duplicates(['suite', 'target', 'algorithm', 'fidelity', 'seed']))} runs; "
             f"suites {', '.join(sorted(res['suite'].unique()))}; "
             f"code {', '.join(sorted(res['code_version'].unique()))}; "
             f"generated {datetime.now(UTC).isoformat(timespec='seconds')}</p>"]
    for name, title, df in sections(res, store):
        if name == "summary":
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(df.to_html(float_format="{:.4g}".format))
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in df.attrs.get("notes", [])]
    for f in figures:
        data = base64.b64encode(f.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(f.stem.replace('_', ' '))}</h2><img alt='{f.stem}' "
                     f"src='data:image/png;base64,{data}'>")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>ebm-bench report</title>"
           f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    path = store.out / "report.html"
    atomic_write_bytes(path, doc.encode())
    return path
