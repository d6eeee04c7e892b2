//! The report: a line per row on the console; markdown, JSON and a PNG chart (throughput
//! against concurrency, drawn by matplotlib in a venv of the tools directory) in `--out`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::drive::{LOADGEN, Row};
use super::{Floor, RestateArgs, SideKind, Workload};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cpu_summary(r: &Row) -> String {
    r.processes
        .iter()
        .map(|(name, cpu, _)| format!("{name} {:.0}%", cpu * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn rss_summary(r: &Row) -> String {
    r.processes
        .iter()
        .filter(|p| p.0 != LOADGEN)
        .map(|(name, _, rss)| format!("{name} {:.0}", *rss as f64 / 1048576.0))
        .collect::<Vec<_>>()
        .join(", ")
}

fn checkpoint_summary(r: &Row) -> String {
    r.checkpoints
        .map(|(per_s, mean)| format!("{per_s:.0}/s, mean {:.1} ms", ms(mean)))
        .unwrap_or_default()
}

pub(crate) fn line(r: &Row) -> String {
    format!(
        "  {:<13} c={:<3} {:<58} {:>9.0} /s {:>9.0} inv/s  p50 {:>8.2} ms  p99 {:>8.2} ms  CPU/inv {:>6.0} µs  checkpoints {} [{}] load {}",
        r.workload.name(),
        r.concurrency,
        r.system,
        r.per_second(),
        r.invocations_per_second(),
        ms(r.p(0.5)),
        ms(r.p(0.99)),
        r.cpu_per_invocation().as_secs_f64() * 1e6,
        checkpoint_summary(r),
        cpu_summary(r),
        r.load
    )
}

/// The row of `kind` with the same workload and concurrency as `r`.
fn row_of<'a>(rows: &'a [Row], kind: SideKind, r: &Row) -> Option<&'a Row> {
    rows.iter()
        .find(|x| x.kind == kind && x.workload == r.workload && x.concurrency == r.concurrency)
}

/// Restate's row with the highest throughput at `r`'s workload and concurrency (of its
/// configurations): ratios are taken against Restate at its best.
fn restate_best<'a>(rows: &'a [Row], r: &Row) -> Option<&'a Row> {
    rows.iter()
        .filter(|x| {
            matches!(x.kind, SideKind::Restate(_)) && x.workload == r.workload && x.concurrency == r.concurrency
        })
        .max_by(|a, b| a.per_second().total_cmp(&b.per_second()))
}

/// `r`'s CPU per invocation as a multiple of the `floor` row's, same workload and concurrency.
fn over_floor(rows: &[Row], floor: Floor, r: &Row) -> Option<f64> {
    if matches!(r.kind, SideKind::Floor(_)) {
        return None;
    }
    let base = row_of(rows, SideKind::Floor(floor), r)?;
    Some(r.cpu_per_invocation().as_secs_f64() / base.cpu_per_invocation().as_secs_f64().max(1e-12))
}

fn markdown(args: &RestateArgs, rows: &[Row], load_start: &str, load_end: &str) -> String {
    let mut md = String::new();
    md.push_str("# Spindle and Restate side by side\n\n");
    md.push_str(&format!(
        "`spindle-bench restate`, {} cores, load (1/5/15 min) {load_start} at the start and {load_end} at the end. \
         Every process on this one machine: the systems, the functions, the load generator. \
         {:?} measured per row after a warm-up of {:?}; {} keys round robin; chains of {} hops.\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.duration,
        args.duration / 5,
        args.keys,
        args.hops
    ));
    md.push_str(
        "Throughput counts **completed** work: request-reply and chain by the completions the clients waited for, \
         one-way by the completions seen in state (Restate) or in delivered egress (Spindle) over the window. \
         Latency: request-reply and chain until completion, one-way until the acknowledgement. \
         Ratio = Spindle / Restate, same workload and concurrency, against the Restate configuration with the \
         higher throughput there; for p99, below 1 means Spindle is faster. \
         The floors are what the same load generator gets here without either system: a bare hyper echo server \
         (HTTP floor) and the Rust-SDK function called directly with StateFun's protocol, state kept by the load \
         generator (function floor); one exchange per invocation, a chain's hops + 1 in sequence. \
         × floor = the row's CPU per invocation ÷ the floor's, same workload and concurrency.\n\n",
    );
    md.push_str("| workload | c | system | completed/s | invocations/s | p50 ms | p99 ms | ratio thr. | ratio p99 | CPU µs/invocation | × HTTP floor | × function floor | checkpoints | CPU (share of a core) | RSS MB |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let (ratio, ratio_p99) = match (r.kind, restate_best(rows, r)) {
            (SideKind::Spindle(_), Some(base)) => (
                format!("{:.2}", r.per_second() / base.per_second().max(1e-9)),
                format!("{:.2}", ms(r.p(0.99)) / ms(base.p(0.99)).max(1e-9)),
            ),
            _ => ("".into(), "".into()),
        };
        let floor = |f| over_floor(rows, f, r).map(|x| format!("{x:.1}")).unwrap_or_default();
        let (http, function) = (floor(Floor::Http), floor(Floor::Statefun));
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {ratio} | {ratio_p99} | {:.0} | {http} | {function} | {} | {} | {} |\n",
            r.workload.name(),
            r.concurrency,
            r.system,
            r.per_second(),
            r.invocations_per_second(),
            ms(r.p(0.5)),
            ms(r.p(0.99)),
            r.cpu_per_invocation().as_secs_f64() * 1e6,
            checkpoint_summary(r),
            cpu_summary(r),
            rss_summary(r)
        ));
    }
    md.push_str(
        "\n## Guarantees\n\n| workload | system | what a completion / acknowledgement means |\n|---|---|---|\n",
    );
    for w in [Workload::RequestReply, Workload::OneWay, Workload::Chain] {
        let mut seen = Vec::new();
        for r in rows.iter().filter(|r| r.workload == w) {
            if !seen.contains(&r.system) {
                md.push_str(&format!("| {} | {} | {} |\n", w.name(), r.system, r.guarantee));
                seen.push(r.system.clone());
            }
        }
    }
    if rows.iter().any(|r| matches!(r.kind, SideKind::Restate(_))) {
        md.push_str(
            "\n## Restate's configurations\n\nBoth: TCP on loopback ports, telemetry and the web UI off, data under the run's \
             scratch directory; everything else Restate's default, including the fsync of its log.\n\n",
        );
        for c in &args.restate_configs {
            let settings = c.settings();
            if settings.is_empty() {
                md.push_str(&format!("- {}: Restate's defaults.\n", c.label()));
            } else {
                md.push_str(&format!(
                    "- {}: for a small single node as Restate's documentation advises (its minimal memory configuration; partitions one per core):\n\n```toml\n{settings}```\n",
                    c.label()
                ));
            }
        }
    }
    md
}

fn to_json(args: &RestateArgs, rows: &[Row], load_start: &str, load_end: &str) -> serde_json::Value {
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "load_start": load_start,
        "load_end": load_end,
        "duration_s": args.duration.as_secs_f64(),
        "keys": args.keys,
        "hops": args.hops,
        "rows": rows.iter().map(|r| json!({
            "workload": r.workload.name(),
            "concurrency": r.concurrency,
            "system": r.system,
            "restate": matches!(r.kind, SideKind::Restate(_)),
            "floor": matches!(r.kind, SideKind::Floor(_)),
            "cpu_over_http_floor": over_floor(rows, Floor::Http, r),
            "cpu_over_function_floor": over_floor(rows, Floor::Statefun, r),
            "guarantee": r.guarantee,
            "completed": r.completed,
            "window_s": r.window.as_secs_f64(),
            "completed_per_s": r.per_second(),
            "invocations_per_s": r.invocations_per_second(),
            "p50_ms": ms(r.p(0.5)),
            "p99_ms": ms(r.p(0.99)),
            "cpu_us_per_invocation": r.cpu_per_invocation().as_secs_f64() * 1e6,
            "processes": r.processes.iter().map(|(n, cpu, rss)| json!({"name": n, "cpu_cores": cpu, "rss_bytes": rss})).collect::<Vec<_>>(),
            "load": r.load,
            "checkpoints_per_s": r.checkpoints.map(|c| c.0),
            "checkpoint_mean_ms": r.checkpoints.map(|c| ms(c.1)),
        })).collect::<Vec<_>>(),
    })
}

const CHART: &str = r#"
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
data = json.load(open(sys.argv[1]))
workloads = list(dict.fromkeys(r["workload"] for r in data["rows"]))
fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.5), squeeze=False)
for ax, w in zip(axes[0], workloads):
    rows = [r for r in data["rows"] if r["workload"] == w]
    for system in dict.fromkeys(r["system"] for r in rows):
        pts = sorted((r["concurrency"], r["invocations_per_s"]) for r in rows if r["system"] == system)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(w)
    ax.set_xlabel("concurrency (closed-loop clients)")
    ax.set_ylabel("completed invocations/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
fig.suptitle("Spindle vs Restate, %d cores, load %s" % (data["cores"], data["load_start"]))
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
"#;

/// A Python with matplotlib: a venv in the tools directory, made on first use.
fn chart_python(tools: &Path) -> anyhow::Result<PathBuf> {
    let venv = tools.join("chart-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| {
        std::process::Command::new(p)
            .args(["-c", "import matplotlib"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok(&python) {
        return Ok(python);
    }
    println!("creating {} with matplotlib for the chart …", venv.display());
    let status = std::process::Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()?;
    anyhow::ensure!(status.success(), "python3 -m venv failed");
    let status = std::process::Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "matplotlib>=3.8,<4",
        ])
        .status()?;
    anyhow::ensure!(status.success() && ok(&python), "pip install matplotlib failed");
    Ok(python)
}

pub(crate) fn write(
    args: &RestateArgs,
    tools: &Path,
    rows: &[Row],
    load_start: &str,
    load_end: &str,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(&args.out)?;
    let md = args.out.join("restate.md");
    let js = args.out.join("restate.json");
    let png = args.out.join("restate.png");
    let text = markdown(args, rows, load_start, load_end);
    println!("\n{text}");
    std::fs::write(&md, text)?;
    std::fs::write(
        &js,
        serde_json::to_string_pretty(&to_json(args, rows, load_start, load_end))?,
    )?;
    let mut written = vec![md, js.clone()];
    let drawn = chart_python(tools).and_then(|python| {
        let status = std::process::Command::new(python)
            .arg("-c")
            .arg(CHART)
            .arg(&js)
            .arg(&png)
            .status()?;
        anyhow::ensure!(status.success(), "the chart script failed");
        Ok(())
    });
    match drawn {
        Ok(()) => written.push(png),
        Err(e) => println!("no chart: {e:#} (the markdown and JSON are written)"),
    }
    Ok(written)
}
