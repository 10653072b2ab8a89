"""Where `tfbig monitor` puts its result: the terminal, monitor.json, monitor.html with its PNGs."""

from __future__ import annotations

import dataclasses
import os

from tfbig.files import write_atomic, write_json
from tfbig.monitor.page import draw_figures, primary, render_page
from tfbig.monitor.run import CROSSED, DRIFT, SKEW

# Rows of the terminal table per comparison: the crossed features, then the nearest to crossing.
SHOWN_FEATURES = 8


@dataclasses.dataclass(frozen=True)
class MonitorFiles:
    json: str
    html: str
    pngs: dict[str, str]


def write_outputs(result: dict, out_dir: str) -> MonitorFiles:
    os.makedirs(out_dir, exist_ok=True)
    pngs = draw_figures(result)
    files = MonitorFiles(json=os.path.join(out_dir, "monitor.json"), html=os.path.join(out_dir, "monitor.html"),
                         pngs={name: os.path.join(out_dir, f"{name}.png") for name in pngs})
    for name, png in pngs.items():
        write_atomic(files.pngs[name], png)
    write_json(files.json, result)
    write_atomic(files.html, render_page(result, pngs))
    return files


def format_result(result: dict) -> str:
    """A plain-text summary: traffic per version, then each comparison's worst features."""
    requests = result["requests"]
    lines = [f"model {result['model']}: {requests['requests']:,} logged requests, "
             f"error rate {_share(requests['error_rate'])}, by label {requests['by_label']}"]
    for version in result["versions"]:
        summary = version["requests"]
        latency = summary["latency_ms"] or {}
        lines.append(f"version {version['version']}: {summary['requests']:,} requests, error rate "
                     f"{_share(summary['error_rate'])}, latency ms p50 {latency.get('p50', '-')} "
                     f"p90 {latency.get('p90', '-')} p99 {latency.get('p99', '-')}")
        for part in (SKEW, DRIFT):
            if version.get(part):
                lines += _part_lines(part, version[part])
    lines += [f"note: {note}" for note in result["notes"]]
    lines.append("THRESHOLD CROSSED" if result["crossed"] else "within thresholds")
    return "\n".join(lines)


def _part_lines(part: str, compared: dict) -> list[str]:
    features = compared["features"]
    statuses = [entry["status"] for entry in features.values()]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    records = compared["records"]
    where = (f"{records['latest']} records in the latest window, {records['previous']} in the previous"
             if part == DRIFT else f"{records} records")
    lines = [f"  {part} ({where}): {counts or 'no features'}"]
    ranked = sorted((n for n, e in features.items() if e["distances"]),
                    key=lambda n: (features[n]["status"] != CROSSED,
                                   -(primary(features[n])[1] or 0) / (primary(features[n])[2] or 1)))
    width = max((len(n) for n in ranked[:SHOWN_FEATURES]), default=0)
    for name in ranked[:SHOWN_FEATURES]:
        entry = features[name]
        shown = "  ".join(f"{m} {v:.3f}" + (f" > {entry['thresholds'][m]}" if m in entry["crossed"] else "")
                          for m, v in entry["distances"].items())
        lines.append(f"    {name:<{width}}  {entry['status']:<7}  {shown}")
    return lines


def _share(value) -> str:
    return "-" if value is None else f"{value:.2%}"
