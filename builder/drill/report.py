"""The drill's evidence: ``report.md``, a self-contained ``report.html`` and ``report.json``.

All three carry the same data: each step with pass/fail, its start and end
offsets and what happened, the headline figures (time from outage to access,
time from expiry to revoked access, one value per scope the drill opened),
the audit head hash, and which share holders have checked in. The HTML has
inline CSS and an inline SVG timeline (``id="timeline"``), no external
assets, so it can be archived and mailed.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.core.fsio import write_atomic

FORMAT = "breakglass-drill-report/2"  # /2: headline figures per scope


@dataclass(frozen=True)
class Step:
    """One timed step; offsets are seconds since the drill started."""

    name: str
    ok: bool
    started: float
    ended: float
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "started_seconds": round(self.started, 3),
            "ended_seconds": round(self.ended, 3),
            "duration_seconds": round(self.ended - self.started, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Holder:
    """An approver and whether (and when) they proved they can still open their share."""

    approver: str
    checked_in: str | None  # RFC 3339 time of the last check-in, or None

    def to_dict(self) -> dict[str, Any]:
        return {"approver": self.approver, "checked_in": self.checked_in}


@dataclass(frozen=True)
class DrillResult:
    image: str
    started_at: str
    steps: tuple[Step, ...]
    # per scope, in the order the drill opened them; a scope it never reached has no entry
    time_to_access_seconds: dict[str, float]
    time_to_revoke_seconds: dict[str, float]
    audit_head: str | None
    scopes: tuple[str, ...] = ()
    holders: tuple[Holder, ...] = ()
    drift: tuple[dict[str, Any], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def failed_step(self) -> Step | None:
        return next((s for s in self.steps if not s.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "image": self.image,
            "started_at": self.started_at,
            "ok": self.ok,
            "steps": [s.to_dict() for s in self.steps],
            "scopes": list(self.scopes),
            "time_to_access_seconds": _per_scope(self.time_to_access_seconds),
            "time_to_revoke_seconds": _per_scope(self.time_to_revoke_seconds),
            "audit_head": self.audit_head,
            "holders": [h.to_dict() for h in self.holders],
            "drift": list(self.drift),
        }


def write_report(result: DrillResult, directory: Path) -> dict[str, Path]:
    """Write the three report files into ``directory``; returns their paths by kind."""
    paths = {
        "md": directory / "report.md",
        "html": directory / "report.html",
        "json": directory / "report.json",
    }
    write_atomic(
        paths["json"], (json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n").encode()
    )
    write_atomic(paths["md"], markdown(result).encode())
    write_atomic(paths["html"], html_page(result).encode())
    return paths


def _per_scope(values: dict[str, float]) -> dict[str, float]:
    return {scope: round(value, 3) for scope, value in values.items()}


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def figures(result: DrillResult, values: dict[str, float]) -> list[tuple[str, str]]:
    """(scope, shown value) for every scope the drill meant to open, reached or not."""
    scopes = list(result.scopes) + [s for s in values if s not in result.scopes]
    return [(scope, _seconds(values.get(scope))) for scope in scopes]


def _md_figure(result: DrillResult, values: dict[str, float]) -> str:
    shown = figures(result, values)
    return ", ".join(f"**{v}** ({scope})" for scope, v in shown) or "**not reached**"


def markdown(result: DrillResult) -> str:
    verdict = "PASSED" if result.ok else "FAILED"
    out = [
        f"# Break-glass drill: {result.image}",
        "",
        f"**{verdict}** — started {result.started_at}",
        "",
        f"- Time from outage to access: {_md_figure(result, result.time_to_access_seconds)}",
        f"- Time from expiry to revoked access: {_md_figure(result, result.time_to_revoke_seconds)}",
        f"- Audit head: `{result.audit_head or 'none'}`",
        "",
        "## Steps",
        "",
        "| # | step | result | start (s) | duration (s) | detail |",
        "|---|---|---|---|---|---|",
    ]
    for i, s in enumerate(result.steps, 1):
        detail = s.detail.replace("|", "\\|").replace("\n", " ")
        mark = "pass" if s.ok else "FAIL"
        out.append(
            f"| {i} | {s.name} | {mark} | {s.started:.2f} | {s.ended - s.started:.2f} | {detail} |"
        )
    if result.drift:
        out += ["", "## Credential sync", "", "| credential | status |", "|---|---|"]
        out += [f"| {d.get('scope')}/{d.get('name')} | {d.get('status')} |" for d in result.drift]
    out += ["", "## Share holders", ""]
    if not result.holders:
        out.append("No share holders listed.")
    for h in result.holders:
        out.append(
            f"- {h.approver}: "
            + (f"checked in {h.checked_in}" if h.checked_in else "**not checked in**")
        )
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1d2329;max-width:1100px}
h1{font-size:1.6rem;margin:0 0 .4rem}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:4px;color:#fff;font-weight:700}
.pass{background:#1f7a3a}.fail{background:#b3261e}
.figures{display:flex;gap:1rem;margin:1rem 0}
.figure{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;min-width:14rem}
.figure b{display:block;font-size:1.5rem}.figure small{display:block;color:#57606a}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}
th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;font-size:.9rem;vertical-align:top}
td.ok{color:#1f7a3a;font-weight:700}td.bad{color:#b3261e;font-weight:700}
code{font-size:.85rem;word-break:break-all}
svg text{font-family:system-ui,sans-serif;font-size:12px}
"""

_ROW, _LABEL_W, _CHART_W = 28, 330, 690


def timeline_svg(steps: tuple[Step, ...]) -> str:
    """An SVG with one labelled bar per step, green for pass and red for fail, on a seconds axis."""
    end = max((s.ended for s in steps), default=1.0) or 1.0
    height = _ROW * len(steps) + 40
    width = _LABEL_W + _CHART_W + 20
    scale = _CHART_W / end
    parts = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="drill timeline">'
    ]
    for tick in _ticks(end):
        x = _LABEL_W + tick * scale
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 22}" stroke="#e1e4e8"/>'
        )
        parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{tick:g} s</text>')
    for i, s in enumerate(steps):
        y = i * _ROW + 4
        x = _LABEL_W + s.started * scale
        w = max((s.ended - s.started) * scale, 3.0)
        color = "#2da44e" if s.ok else "#cf222e"
        label = html.escape(_short(s.name))
        parts.append(f'<text x="4" y="{y + 15}">{label}</text>')
        parts.append(
            f'<rect class="step" x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW - 8}" '
            f'rx="3" fill="{color}"><title>{label}: {s.ended - s.started:.2f} s</title></rect>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _short(name: str) -> str:
    """A bar label: the step's name up to its colon, plus its ``[scope]`` if any."""
    head = name.split(":", 1)[0]
    scope = name[name.rfind("[") :] if name.endswith("]") and "[" in name else ""
    label = head if scope in head else f"{head} {scope}"
    return label if len(label) <= 48 else label[:47] + "…"


def _ticks(end: float) -> list[float]:
    for step in (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600):
        if end / step <= 10:
            break
    n = int(end // step) + 1
    return [i * step for i in range(n + 1) if i * step <= end * 1.05]


def _html_figure(result: DrillResult, values: dict[str, float]) -> str:
    shown = figures(result, values) or [("", "not reached")]
    return "".join(
        f"<b>{html.escape(v)}</b><small>{html.escape(scope)}</small>" for scope, v in shown
    )


def html_page(result: DrillResult) -> str:
    e = html.escape
    verdict = "PASSED" if result.ok else "FAILED"
    rows = "".join(
        f"<tr><td>{i}</td><td>{e(s.name)}</td>"
        f'<td class="{"ok" if s.ok else "bad"}">{"pass" if s.ok else "FAIL"}</td>'
        f"<td>{s.started:.2f}</td><td>{s.ended - s.started:.2f}</td><td>{e(s.detail)}</td></tr>"
        for i, s in enumerate(result.steps, 1)
    )
    holders = (
        "".join(
            f"<tr><td>{e(h.approver)}</td><td>{e(h.checked_in) if h.checked_in else '<b>not checked in</b>'}</td></tr>"
            for h in result.holders
        )
        or '<tr><td colspan="2">No share holders listed.</td></tr>'
    )
    drift = ""
    if result.drift:
        drift_rows = "".join(
            f"<tr><td>{e(str(d.get('scope')))}/{e(str(d.get('name')))}</td><td>{e(str(d.get('status')))}</td></tr>"
            for d in result.drift
        )
        drift = f"<h2>Credential sync</h2><table><tr><th>credential</th><th>status</th></tr>{drift_rows}</table>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Break-glass drill: {e(result.image)}</title>
<style>{_CSS}</style></head>
<body>
<h1>Break-glass drill: {e(result.image)}</h1>
<p><span class="verdict {"pass" if result.ok else "fail"}">{verdict}</span> started {e(result.started_at)}</p>
<div class="figures">
<div class="figure">Time from outage to access{_html_figure(result, result.time_to_access_seconds)}</div>
<div class="figure">Time from expiry to revoked access{_html_figure(result, result.time_to_revoke_seconds)}</div>
</div>
<p>Audit head: <code>{e(result.audit_head or "none")}</code></p>
<h2>Timeline</h2>
{timeline_svg(result.steps)}
<h2>Steps</h2>
<table><tr><th>#</th><th>step</th><th>result</th><th>start (s)</th><th>duration (s)</th><th>detail</th></tr>{rows}</table>
{drift}
<h2>Share holders</h2>
<table><tr><th>approver</th><th>checked in</th></tr>{holders}</table>
</body></html>
"""
