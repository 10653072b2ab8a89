"""The monitor's HTML page and figures, built with the run report's helpers.

Like the report, the page is self-contained (CSS inline, figures as base64
PNGs), so it can be mailed or attached to an incident ticket as is.
"""

from __future__ import annotations

from html import escape

import numpy as np

from tfbig.monitor.compare import JSD, LINF
from tfbig.monitor.run import CROSSED, DRIFT, SKEW
from tfbig.report.figures import finish_axes, new_figure, to_png
from tfbig.report.html import CSS, img, kv_table, table

# Features whose buckets are drawn, worst first (by distance over threshold).
SHOWN_HISTOGRAMS = 3


def primary(entry: dict) -> tuple[str, float | None, float | None]:
    """The distance a feature is judged by first (L-infinity for categories, Jensen-Shannon for
    numbers: the defaults), its value and its threshold."""
    measure = LINF if entry["kind"] == "categorical" else JSD
    return measure, entry["distances"].get(measure), (entry.get("thresholds") or {}).get(measure)


def distances_png(version: dict) -> bytes | None:
    """Each feature's primary distance in skew and drift, bars red where a threshold is crossed."""
    parts = [(name, version[name]["features"]) for name in (SKEW, DRIFT) if version.get(name)]
    if not any(primary(e)[1] is not None for _, features in parts for e in features.values()):
        return None
    figure, panels = new_figure(len(parts))
    for axes, (name, features) in zip(panels, parts):
        names = list(features)
        values = [primary(features[n])[1] or 0.0 for n in names]
        limits = [primary(features[n])[2] for n in names]
        colors = ["C3" if features[n]["status"] == CROSSED else "C0" for n in names]
        axes.bar(range(len(names)), values, color=colors, width=0.8)
        axes.step(range(len(names)), [np.nan if t is None else t for t in limits], where="mid",
                  color="k", linewidth=1, label="threshold")
        if len(names) <= 12:
            axes.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        axes.set_ylim(0, 1.05)
        finish_axes(axes, "distance", x=f"feature ({len(names)})", title=f"{name}: JSD / L-inf", legend=True)
    return to_png(figure)


def histograms_png(version: dict) -> bytes | None:
    """The worst skewed features' buckets: reference frequencies against traffic's."""
    features = (version.get(SKEW) or {}).get("features") or {}
    ranked = sorted((name for name, e in features.items() if primary(e)[1] is not None),
                    key=lambda n: -(primary(features[n])[1] / (primary(features[n])[2] or 1.0)))
    shown = ranked[:SHOWN_HISTOGRAMS]
    if not shown:
        return None
    figure, panels = new_figure(len(shown))
    for axes, name in zip(panels, shown):
        entry = features[name]
        sides = ((entry["baseline_counts"], "reference", -0.2), (entry["counts"], "traffic", 0.2))
        for counts, label, offset in sides:
            counts = np.asarray(counts, np.float64)
            axes.bar(np.arange(len(counts)) + offset, counts / max(counts.sum(), 1), width=0.4, label=label)
        measure, value, _ = primary(entry)
        finish_axes(axes, "share", x="bucket", title=f"{name} ({measure} {value:.2f})", legend=True)
    return to_png(figure)


def render_page(result: dict, pngs: dict[str, bytes]) -> str:
    title = escape(f"tfbig monitor — {result['model']}")
    verdict = "THRESHOLD CROSSED" if result["crossed"] else "within thresholds"
    requests = result["requests"]
    body = [f"<h1>{title}</h1>", kv_table({
        "verdict": verdict, "model base path": result["model_base_path"], "log directory": result["log_dir"],
        "since": result["since"], "until": result["until"], "window (s)": result["window_seconds"],
        "requests": requests["requests"], "error rate": requests["error_rate"],
        "latency p50 / p90 / p99 (ms)": _latency(requests["latency_ms"]),
        "by label": requests["by_label"], "generated": result["generated"]})]
    if result["notes"]:
        body.append('<div class="notes"><ul>' + "".join(f"<li>{escape(n)}</li>" for n in result["notes"])
                    + "</ul></div>")
    for version in result["versions"]:
        number = version["version"]
        body.append(f"<h2>Version {number}</h2>")
        summary = version["requests"]
        body.append(kv_table({"requests": summary["requests"], "error rate": summary["error_rate"],
                              "latency p50 / p90 / p99 (ms)": _latency(summary["latency_ms"]),
                              "by status": summary["by_status"], "by label": summary["by_label"]}))
        for name in (f"distances_{number}", f"histograms_{number}"):
            if name in pngs:
                body.append(img(name, pngs[name]))
        for part in (SKEW, DRIFT):
            if version.get(part):
                body.append(f"<h3>{part}</h3>" + _feature_table(version[part]["features"]))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def draw_figures(result: dict) -> dict[str, bytes]:
    drawn = {}
    for version in result["versions"]:
        for name, draw in (("distances", distances_png), ("histograms", histograms_png)):
            png = draw(version)
            if png is not None:
                drawn[f"{name}_{version['version']}"] = png
    return drawn


def _latency(latency: dict | None) -> str | None:
    return " / ".join(f"{latency[p]:.3g}" for p in ("p50", "p90", "p99")) if latency else None


def _feature_table(features: dict) -> str:
    """Crossed features first, then by distance over threshold."""
    def order(name):
        entry = features[name]
        _, value, limit = primary(entry)
        return (entry["status"] != CROSSED, -(value or 0.0) / (limit or 1.0), name)

    rows = [(name, entry["status"], entry["count"], entry["baseline_count"],
             ", ".join(f"{m} {v:.3f}" for m, v in entry["distances"].items()),
             ", ".join(f"{m} {t}" for m, t in (entry.get("thresholds") or {}).items() if t is not None))
            for name in sorted(features, key=order) for entry in [features[name]]]
    return table(("feature", "status", "values", "baseline values", "distances", "thresholds"), rows)
