#!/usr/bin/env python3
"""plot.py CSV PNG — the soak's memory and latency over time (tools/soak/soak.py writes CSV).

Top: each riskflowd process's resident memory (MiB) against time; bottom: every score's
latency as an independent reader saw it (ms, log scale) with its 1-minute p50 and p99; the
faults as vertical lines on both. Needs matplotlib (tools/train's .venv-train has it).
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(csv_path, png_path):
    rss, lat, faults = {}, [], []
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            t = float(row["t_s"])
            if row["series"].startswith("rss_kb:"):
                rss.setdefault((row["series"][7:], row["pid"]), []).append(
                    (t, float(row["value"]) / 1024))
            elif row["series"] == "latency_ms":
                lat.append((t, float(row["value"])))
            elif row["series"] == "fault":
                faults.append((t, row["value"]))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    for (name, pid), pts in sorted(rss.items(), key=lambda kv: kv[1][0][0]):
        ax1.plot([p[0] / 60 for p in pts], [p[1] for p in pts], lw=1.2,
                 label="%s pid %s" % (name, pid))
    ax1.set_ylabel("resident memory (MiB)")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=7, loc="lower right", ncol=2)
    ax1.set_title("riskflowd soak: memory and latency over time (vertical lines: faults)")
    if lat:
        ax2.scatter([t / 60 for t, _ in lat], [m for _, m in lat], s=1, alpha=0.15, c="grey",
                    label="each score")
        end = int(max(t for t, _ in lat) // 60) + 1
        mids, p50, p99 = [], [], []
        for m in range(end):
            w = sorted(v for t, v in lat if m * 60 <= t < (m + 1) * 60)
            if w:
                mids.append(m + 0.5)
                p50.append(w[len(w) // 2])
                p99.append(w[int(len(w) * 0.99)])
        ax2.plot(mids, p50, "b-", label="p50 per minute")
        ax2.plot(mids, p99, "r-", label="p99 per minute")
        ax2.set_yscale("log")
    ax2.set_ylabel("latency, sent -> score readable (ms)")
    ax2.set_xlabel("minutes")
    ax2.legend(fontsize=7, loc="upper right")
    for t, what in faults:
        for ax in (ax1, ax2):
            ax.axvline(t / 60, color="k", lw=0.6, ls=":")
        ax1.text(t / 60, ax1.get_ylim()[1] * 0.95, what, rotation=90, fontsize=6, va="top")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py SOAK.CSV OUT.PNG")
    main(sys.argv[1], sys.argv[2])
