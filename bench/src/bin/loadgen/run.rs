//! One run: the conductor that starts the connections, opens and closes the measured
//! window, reads the processes and Redis around it, and writes the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::bodies::Bodies;
use crate::load::{Plan, RECORDING, STOPPED, Shared, Tally, WARMUP, connection, target};
use crate::procfs::{snapshot, tree_peak_rss_kib};
use crate::redis_stats::{redis_connect, redis_costs, redis_readings};
use crate::report::print_summary;
use crate::{Proc, RunArgs, now_secs};

pub(crate) fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("--{name} must be a number of seconds, not {v}"));
    }
    Duration::try_from_secs_f64(v).map_err(|e| format!("--{name} {v}: {e}"))
}

pub(crate) fn ratio(name: &str, v: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("--{name} must be between 0 and 1, not {v}"))
    }
}

pub(crate) fn run_cmd(args: RunArgs) -> Result<(), String> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run(args, threads))
}

pub(crate) async fn run(args: RunArgs, threads: usize) -> Result<(), String> {
    let warmup = seconds("warmup", args.warmup)?;
    let duration = seconds("duration", args.duration)?;
    if duration.is_zero() {
        return Err("--duration must be above 0".to_owned());
    }
    let dup_ratio = ratio("dup-ratio", args.dup_ratio)?;
    let bad_sig_ratio = ratio("bad-sig-ratio", args.bad_sig_ratio)?;
    if dup_ratio + bad_sig_ratio > 1.0 {
        return Err("--dup-ratio and --bad-sig-ratio add up to more than 1".to_owned());
    }
    if args.connections == 0 {
        return Err("--connections must be at least 1".to_owned());
    }
    if args.clk_tck == 0 {
        return Err("--clk-tck must be above 0".to_owned());
    }
    let (addr, authority, path) = target(&args.url).await?;

    // Ids carry the run's start time, so several runs against one Redis never collide.
    let run_id = format!("{:08x}", now_secs() & 0xffff_ffff);
    let bodies = Bodies::new(&run_id, args.size, now_secs());
    let body_bytes = bodies.len();
    let plan = Arc::new(Plan {
        addr,
        authority,
        path,
        bodies,
        secret: args.secret.clone(),
        dup_ratio,
        bad_sig_ratio,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    });
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        next_event: AtomicU64::new(0),
        recorded: AtomicU64::new(0),
    });

    let own = Proc {
        name: "loadgen".to_owned(),
        pid: std::process::id(),
        tree: false,
    };
    let services: Vec<Proc> = args
        .services
        .iter()
        .chain(&args.service_trees)
        .cloned()
        .collect();
    let mut procs = services.clone();
    procs.extend(args.watched.iter().cloned());
    procs.push(own.clone());

    // Redis is read before the warm-up and after the last answer, so the events stored
    // and the commands and memory they took cover the same requests.
    let mut redis = match (&args.redis, &args.redis_events) {
        (Some(urls), Some(key)) => {
            let mut conns = Vec::new();
            for url in urls.split(',') {
                conns.push(redis_connect(url).await?);
            }
            let before = redis_readings(&mut conns, key, args.redis_events_per_field).await?;
            Some((conns, key, before))
        }
        _ => None,
    };

    let tasks: Vec<_> = (0..args.connections as u64)
        .map(|i| tokio::spawn(connection(i, plan.clone(), shared.clone())))
        .collect();

    tokio::time::sleep(warmup).await;
    let before = snapshot(&procs);
    shared.phase.store(RECORDING, Ordering::Relaxed);
    let window_end = tokio::time::Instant::now() + duration;
    match args.events {
        Some(target) => {
            while tokio::time::Instant::now() < window_end
                && shared.recorded.load(Ordering::Relaxed) < target
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        None => tokio::time::sleep_until(window_end).await,
    }
    shared.phase.store(STOPPED, Ordering::Relaxed);
    let after = snapshot(&procs);

    // Every request is bounded by the timeout, so the connections end by then; past
    // that (a connect stuck in the kernel, say) they are abandoned, never waited on.
    let mut tally = Tally::new();
    let deadline = tokio::time::Instant::now() + plan.timeout * 2 + Duration::from_secs(1);
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(t)) => tally.merge(&t),
            Ok(Err(e)) => return Err(format!("a connection task failed: {e}")),
            Err(_) => return Err("connections did not stop within the timeout".to_owned()),
        }
    }

    let window = after.at.duration_since(before.at).as_secs_f64();
    let answered = tally.latency.total;
    let per_event = |ticks: u64| -> f64 {
        if answered == 0 {
            0.0
        } else {
            ticks as f64 * 1e6 / args.clk_tck as f64 / answered as f64
        }
    };
    let cores = |ticks: u64| ticks as f64 / args.clk_tck as f64 / window;
    let mut cpu = serde_json::Map::new();
    let mut cpu_cores = serde_json::Map::new();
    let mut cpu_sum = 0.0;
    let mut procs_ticks = 0;
    for (i, p) in procs.iter().enumerate() {
        let delta = match (before.procs.get(i), after.procs.get(i)) {
            (Some(Some(a)), Some(Some(b))) => Some(b.saturating_sub(*a)),
            _ => None,
        };
        procs_ticks += delta.unwrap_or(0);
        let v = delta.map(per_event);
        cpu_sum += v.unwrap_or(0.0);
        cpu.insert(p.name.clone(), json!(v));
        cpu_cores.insert(p.name.clone(), json!(delta.map(cores)));
    }
    // The machine's busy time is the measured processes' plus anything else that ran:
    // another build, an editor, a Redis AOF rewrite still running at the end of the
    // window. On an idle machine the difference stays within about 0.1 cores (interrupt
    // time is mostly charged to the process it interrupted); more means the run was
    // disturbed.
    let machine = match (before.machine, after.machine) {
        (Some(m0), Some(m1)) => {
            let busy = m1.busy.saturating_sub(m0.busy);
            let irq = m1.irq.saturating_sub(m0.irq);
            json!({
                "cpu_us_per_event": per_event(busy),
                "cores_busy": cores(busy),
                "irq_cores": cores(irq),
                "outside_measured_cores": cores(busy.saturating_sub(procs_ticks)),
                "ticks_total": m1.total.saturating_sub(m0.total),
            })
        }
        _ => Value::Null,
    };
    let rss = |list: &[Proc]| -> serde_json::Map<String, Value> {
        list.iter()
            .map(|p| (p.name.clone(), json!(tree_peak_rss_kib(p))))
            .collect()
    };
    let mut other_rss = rss(&args.watched);
    other_rss.extend(rss(&[own]));
    let processes: serde_json::Map<String, Value> = procs
        .iter()
        .zip(&after.members)
        .filter(|(p, _)| p.tree)
        .map(|(p, n)| (p.name.clone(), json!(n)))
        .collect();
    let redis = match redis.as_mut() {
        Some((conns, key, before)) => {
            let after = redis_readings(conns, key, args.redis_events_per_field).await?;
            redis_costs(key, before, &after)
        }
        None => Value::Null,
    };
    let q = |q: f64| tally.latency.quantile(q);
    let report = json!({
        "label": args.label,
        "url": args.url.to_string(),
        "connections": args.connections,
        "loadgen_threads": threads,
        "machine_cores": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "body_bytes": body_bytes,
        "dup_ratio": dup_ratio,
        "bad_sig_ratio": bad_sig_ratio,
        "warmup_secs": warmup.as_secs_f64(),
        "window_secs": window,
        "answered": answered,
        "events_per_sec": if window > 0.0 { answered as f64 / window } else { 0.0 },
        "latency_us": {
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
            "max": tally.latency.max, "mean": tally.latency.mean(),
        },
        "statuses": tally.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "outcomes": {"applied": tally.applied, "duplicate": tally.duplicate, "other_2xx": tally.other_2xx},
        "duplicates": {"sent": tally.dup_sent, "confirmed": tally.dup_confirmed},
        "bad_signatures": {"sent": tally.bad_sent, "rejected": tally.bad_rejected, "accepted": tally.bad_accepted},
        "unexpected_non_2xx": tally.unexpected,
        "errors": {"timeouts": tally.timeouts, "connect": tally.connect_errors, "http": tally.http_errors},
        "cpu_us_per_event": cpu,
        "cpu_us_per_event_sum": cpu_sum,
        "cpu_cores": cpu_cores,
        "machine": machine,
        "peak_rss_kib": rss(&services),
        "peak_rss_kib_other": other_rss,
        "processes": processes,
        "redis": redis,
    });
    print_summary(&report);
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{report:#}\n"))
            .map_err(|e| format!("--out {}: {e}", out.display()))?;
    }
    if answered == 0 {
        return Err(format!(
            "no request was answered in the window ({} errors); is {} up?",
            tally.errors(),
            args.url
        ));
    }
    Ok(())
}
