//! The report: one run's summary, and the table of every run with the targets.

use std::path::PathBuf;

use serde_json::Value;

use crate::TableArgs;

pub(crate) fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

pub(crate) fn f(v: &Value, path: &[&str]) -> f64 {
    num(v, path).unwrap_or(0.0)
}

/// `12345.6` as `12,346`.
pub(crate) fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn ms(v: &Value, q: &str) -> String {
    format!("{:.2}", f(v, &["latency_us", q]) / 1000.0)
}

/// `name value, …` over an object of numbers (or nulls, shown as n/a).
pub(crate) fn listing(obj: Option<&Value>, show: impl Fn(f64) -> String) -> String {
    obj.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v.as_f64() {
                    Some(x) => format!("{k} {}", show(x)),
                    None => format!("{k} n/a"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub(crate) fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

pub(crate) fn errors(v: &Value) -> f64 {
    f(v, &["errors", "timeouts"]) + f(v, &["errors", "connect"]) + f(v, &["errors", "http"])
}

/// A warning when the load generator itself set the pace: its threads were full while
/// the machine still had idle CPU. (On a saturated machine a busy generator is expected:
/// it shares the cores with the server.)
pub(crate) fn saturation_warning(r: &Value) -> Option<String> {
    let used = num(r, &["cpu_cores", "loadgen"])?;
    let threads = num(r, &["loadgen_threads"])?;
    let idle = num(r, &["machine_cores"])? - num(r, &["machine", "cores_busy"])?;
    (used >= 0.9 * threads && idle >= 0.3).then(|| {
        format!(
            "warning: the load generator used {used:.2} of its {threads} thread(s) while {idle:.2} cores were idle; it limited this run (raise LOADGEN_THREADS)"
        )
    })
}

pub(crate) fn print_summary(r: &Value) {
    let label = r.get("label").and_then(Value::as_str).unwrap_or("run");
    println!(
        "{label}: {} answered in {:.2} s = {} events/s ({} connections, {}-byte events, dup {}, bad-sig {})",
        thousands(f(r, &["answered"])),
        f(r, &["window_secs"]),
        thousands(f(r, &["events_per_sec"])),
        f(r, &["connections"]),
        f(r, &["body_bytes"]),
        f(r, &["dup_ratio"]),
        f(r, &["bad_sig_ratio"]),
    );
    println!(
        "  latency ms: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(r, "p50"),
        ms(r, "p90"),
        ms(r, "p99"),
        ms(r, "p999"),
        ms(r, "max"),
    );
    println!(
        "  statuses: {}; outcomes: {}",
        listing(r.get("statuses"), thousands),
        listing(r.get("outcomes"), thousands)
    );
    println!(
        "  duplicates confirmed {}/{}; bad signatures rejected {}/{} (accepted {}); unexpected non-2xx {}; errors {}",
        f(r, &["duplicates", "confirmed"]),
        f(r, &["duplicates", "sent"]),
        f(r, &["bad_signatures", "rejected"]),
        f(r, &["bad_signatures", "sent"]),
        f(r, &["bad_signatures", "accepted"]),
        f(r, &["unexpected_non_2xx"]),
        errors(r),
    );
    println!(
        "  CPU µs/event: {}; sum {:.1}; machine {:.1} ({:.2} cores busy, {:.2} outside the measured processes, {:.2} in interrupts)",
        listing(r.get("cpu_us_per_event"), |x| format!("{x:.1}")),
        f(r, &["cpu_us_per_event_sum"]),
        f(r, &["machine", "cpu_us_per_event"]),
        f(r, &["machine", "cores_busy"]),
        f(r, &["machine", "outside_measured_cores"]),
        f(r, &["machine", "irq_cores"]),
    );
    if let Some(w) = saturation_warning(r) {
        println!("  {w}");
    }
    println!(
        "  peak RSS: {}; {}",
        listing(r.get("peak_rss_kib"), mib),
        listing(r.get("peak_rss_kib_other"), mib),
    );
    if let Some(note) = processes_note(r) {
        println!("  {note}");
    }
    if let Some(note) = redis_note(r) {
        println!("  redis per stored event: {note}");
    }
}

/// Which measured processes stand for several (a Node.js cluster), if any.
pub(crate) fn processes_note(r: &Value) -> Option<String> {
    let trees = listing(r.get("processes"), |n| format!("{n:.0}"));
    (!trees.is_empty()).then(|| {
        format!("processes measured with their descendants, CPU and peak RSS summed: {trees}")
    })
}

/// Redis commands and bytes of memory per stored event, if the run read its Redis.
pub(crate) fn redis_note(r: &Value) -> Option<String> {
    let redis = r.get("redis").filter(|v| v.is_object())?;
    let stored = f(redis, &["events_stored"]);
    if stored <= 0.0 {
        return Some(format!(
            "no event stored in {}",
            redis["events_key"].as_str().unwrap_or("?")
        ));
    }
    let mut by_name: Vec<(&String, f64)> = redis
        .get("commands_per_event_by_name")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k, v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let listed = by_name
        .iter()
        .filter(|(_, n)| *n >= 0.05)
        .map(|(k, n)| format!("{k} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "{:.2} commands ({listed}), {} B of memory; {} events stored ({})",
        f(redis, &["commands_per_event"]),
        thousands(f(redis, &["memory_bytes_per_event"])),
        thousands(stored),
        redis["events_key"].as_str().unwrap_or("?"),
    ))
}

/// The issues' targets for the 2-core development machine, 64 connections, 2 KiB events.
pub(crate) const TARGET_EVENTS_PER_SEC: f64 = 15_000.0;
pub(crate) const TARGET_P99_MS: f64 = 4.0;
pub(crate) const TARGET_CPU_US: f64 = 50.0;
pub(crate) const TARGET_RSS_MIB: f64 = 64.0;
pub(crate) const TARGET_RATIO: f64 = 0.38;
/// hookline's throughput against the Node.js yardstick's.
pub(crate) const TARGET_NODE_RATIO: f64 = 1.2;
/// Redis commands per stored event (scripts' inner commands included).
pub(crate) const TARGET_REDIS_COMMANDS: f64 = 4.0;
/// Bytes of Redis `used_memory` per stored event.
pub(crate) const TARGET_REDIS_BYTES: f64 = 500.0;
/// Cores busy outside the measured processes above which a run counts as disturbed.
pub(crate) const OTHER_LOAD_CORES: f64 = 0.15;

pub(crate) fn read_report(path: &PathBuf) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn row(r: &Value) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
        label(r),
        thousands(f(r, &["events_per_sec"])),
        ms(r, "p50"),
        ms(r, "p90"),
        ms(r, "p99"),
        ms(r, "p999"),
        thousands(f(r, &["unexpected_non_2xx"])),
        thousands(f(r, &["bad_signatures", "rejected"])),
        thousands(errors(r)),
        listing(r.get("cpu_us_per_event"), |x| format!("{x:.1}")),
        f(r, &["cpu_us_per_event_sum"]),
        f(r, &["machine", "cpu_us_per_event"]),
        listing(r.get("peak_rss_kib"), mib)
            + &match listing(r.get("peak_rss_kib_other"), mib) {
                s if s.is_empty() => String::new(),
                s => format!("; {s}"),
            },
    )
}

/// hookline's throughput over Node.js's in one pair of runs.
pub(crate) fn pair_ratio(node: &Value, hook: &Value) -> f64 {
    let other = f(node, &["events_per_sec"]);
    if other > 0.0 {
        f(hook, &["events_per_sec"]) / other
    } else {
        0.0
    }
}

/// The middle value (the mean of the two middle ones for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "holds" } else { "MISSED" }
}

pub(crate) fn label(r: &Value) -> &str {
    r.get("label").and_then(Value::as_str).unwrap_or("run")
}

pub(crate) fn table_cmd(args: &TableArgs) -> Result<(), String> {
    let base = read_report(&args.baseline)?;
    let hook = read_report(&args.hookline)?;
    let node = args.node.as_ref().map(read_report).transpose()?;
    let runs: Vec<&Value> = [Some(&base), node.as_ref(), Some(&hook)]
        .into_iter()
        .flatten()
        .collect();
    println!(
        "| run | events/s | p50 ms | p90 ms | p99 ms | p99.9 ms | non-2xx | 401 (bad sig) | errors | CPU µs/event by process | CPU µs/event, processes | CPU µs/event, machine | peak RSS |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|");
    for r in &runs {
        println!("{}", row(r));
    }
    let rate = f(&hook, &["events_per_sec"]);
    // hookline's throughput as a share of another run's.
    let share = |of: &Value| pair_ratio(of, &hook);
    let ratio = share(&base);
    let mut node_ratios: Vec<f64> = node.as_ref().map(share).into_iter().collect();
    for pair in &args.pairs {
        let (node, hook) = pair
            .split_once(',')
            .ok_or_else(|| format!("--pair {pair}: expected NODE_JSON,HOOKLINE_JSON"))?;
        let node = read_report(&PathBuf::from(node))?;
        let hook = read_report(&PathBuf::from(hook))?;
        node_ratios.push(pair_ratio(&node, &hook));
    }
    let node_ratio = median(&node_ratios);
    println!();
    if let Some(x) = node_ratio {
        if node_ratios.len() > 1 {
            let each: Vec<String> = node_ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "hookline / node throughput: {x:.2} (median of {} pairs of runs, one after the other: {})",
                node_ratios.len(),
                each.join(", ")
            );
        } else {
            println!("hookline / node throughput: {x:.2}");
        }
    }
    println!("hookline / baseline throughput: {ratio:.3}");
    for r in &runs {
        let label = label(r);
        if let Some(w) = saturation_warning(r) {
            println!("{label}: {w}");
        }
        let other = f(r, &["machine", "outside_measured_cores"]);
        if other > OTHER_LOAD_CORES {
            println!(
                "{label}: warning: {other:.2} cores were busy outside the measured processes; another load disturbed this run"
            );
        }
        if let Some(note) = processes_note(r) {
            println!("{label}: {note}");
        }
    }
    let redis_notes: Vec<(&str, String)> = runs
        .iter()
        .filter_map(|r| Some((label(r), redis_note(r)?)))
        .collect();
    if !redis_notes.is_empty() {
        println!();
        println!(
            "Redis per stored event (calls in INFO commandstats, scripts' inner commands included, and used_memory after the run minus before, each divided by the events stored, warm-up included):"
        );
        for (label, note) in redis_notes {
            println!("- {label}: {note}");
        }
    }
    println!();
    let p99 = f(&hook, &["latency_us", "p99"]) / 1000.0;
    let cpu = f(&hook, &["machine", "cpu_us_per_event"]);
    let cpu_procs = f(&hook, &["cpu_us_per_event_sum"]);
    let rss_max = hook
        .get("peak_rss_kib")
        .and_then(Value::as_object)
        .map(|m| m.values().filter_map(Value::as_f64).fold(0.0, f64::max))
        .unwrap_or(0.0)
        / 1024.0;
    let hook_redis = |field: &str| {
        num(&hook, &["redis", field]).filter(|_| f(&hook, &["redis", "events_stored"]) > 0.0)
    };
    println!("targets (2 cores, 64 connections, 2 KiB events):");
    println!(
        "- throughput ≥ {} events/s: {} events/s, {}",
        thousands(TARGET_EVENTS_PER_SEC),
        thousands(rate),
        verdict(rate >= TARGET_EVENTS_PER_SEC)
    );
    println!(
        "- p99 ≤ {TARGET_P99_MS} ms: {p99:.2} ms, {}",
        verdict(p99 <= TARGET_P99_MS)
    );
    println!(
        "- machine CPU ≤ {TARGET_CPU_US} µs/event (load generator and kernel included): {cpu:.0} µs ({cpu_procs:.0} in the measured processes), {}",
        verdict(cpu <= TARGET_CPU_US)
    );
    println!(
        "- peak RSS ≤ {TARGET_RSS_MIB} MiB per service: largest {rss_max:.1} MiB, {}",
        verdict(rss_max <= TARGET_RSS_MIB)
    );
    println!(
        "- ≥ {TARGET_RATIO} of the no-op baseline: {ratio:.3}, {}",
        verdict(ratio >= TARGET_RATIO)
    );
    match node_ratio {
        Some(x) => println!(
            "- ≥ {TARGET_NODE_RATIO} × the Node.js row: {x:.2} ×, {}",
            verdict(x >= TARGET_NODE_RATIO)
        ),
        None => println!("- ≥ {TARGET_NODE_RATIO} × the Node.js row: n/a (no Node.js run)"),
    }
    match hook_redis("commands_per_event") {
        Some(n) => println!(
            "- Redis commands per new event ≤ {TARGET_REDIS_COMMANDS}: {n:.2}, {}",
            verdict(n <= TARGET_REDIS_COMMANDS)
        ),
        None => println!(
            "- Redis commands per new event ≤ {TARGET_REDIS_COMMANDS}: n/a (Redis not read)"
        ),
    }
    match hook_redis("memory_bytes_per_event") {
        Some(b) => println!(
            "- Redis memory per event ≤ {TARGET_REDIS_BYTES} B: {} B, {}",
            thousands(b),
            verdict(b <= TARGET_REDIS_BYTES)
        ),
        None => println!("- Redis memory per event ≤ {TARGET_REDIS_BYTES} B: n/a (Redis not read)"),
    }
    Ok(())
}
