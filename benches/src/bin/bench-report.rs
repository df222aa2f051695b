//! Runs the registered benchmark cases against their peers, alternating, and writes
//! `BENCHMARKS.md`.
//!
//! ```text
//! bash ../shared/peers/setup.sh            # once, for the PyTorch peer figures
//! cargo run --release -p benches --bin bench-report -- --rounds 3 --threads 2 [--filter attn] [--out BENCHMARKS.md]
//! (`--filter S` keeps the cases whose name contains S; `--filter NAME$` keeps exactly NAME)
//! ```
//!
//! Each round times, one after another: ours (`--repeat` calls after `--warmup`), every
//! in-process twin (candle's composed ops, our reference), and the PyTorch peer
//! (`torch_peers.py CASE --json --threads N`, in a subprocess, with its default repeats).
//! The table gives medians over rounds and **ratio = peer / ours** (above 1: vidgen is faster)
//! with its min–max over the rounds. Without the peer venv the PyTorch columns say why and the
//! candle / reference ratios are still reported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};

use benches::{all_cases, our_threads, time_calls, torch_peer, Amount, Case, Timing};
use candle_core::Device;

struct Args {
    rounds: usize,
    threads: usize,
    repeat: Option<usize>,
    filter: Vec<String>,
    out: String,
    peer: bool,
    keep_freed_memory: bool,
    prefer_rayon_threads: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        rounds: 3,
        threads: our_threads(),
        repeat: None,
        filter: Vec::new(),
        out: "BENCHMARKS.md".into(),
        peer: true,
        keep_freed_memory: false,
        prefer_rayon_threads: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = val("--rounds")?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--threads" => a.threads = val("--threads")?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--repeat" => a.repeat = Some(val("--repeat")?.parse().map_err(|e| format!("--repeat: {e}"))?),
            "--filter" => a.filter.push(val("--filter")?),
            "--out" => a.out = val("--out")?,
            "--no-peer" => a.peer = false,
            "--keep-freed-memory" => a.keep_freed_memory = true,
            "--prefer-rayon-threads" => a.prefer_rayon_threads = true,
            "-h" | "--help" => {
                return Err("usage: bench-report [--rounds N] [--threads N] [--repeat R] [--filter S]... [--out FILE] [--no-peer] [--keep-freed-memory] [--prefer-rayon-threads]".into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.rounds == 0 || a.threads == 0 {
        return Err("--rounds and --threads must be at least 1".into());
    }
    Ok(a)
}

/// Default repeats: enough calls for a stable median in about a second per side.
fn repeats_for(first_call_s: f64) -> (usize, usize) {
    let r = (1.0 / first_call_s.max(1e-6)).clamp(3.0, 50.0) as usize;
    (r, (r / 10).max(1))
}

struct Row {
    case: &'static str,
    shape: &'static str,
    amount: Option<Amount>,
    ours: Vec<f64>,
    twins: BTreeMap<&'static str, Vec<f64>>,
    torch: Vec<f64>,
    torch_note: Option<String>,
}

fn med(v: &[f64]) -> f64 {
    Timing::from_times(v.to_vec()).median
}

fn fmt_s(s: f64) -> String {
    if !s.is_finite() {
        "—".into()
    } else if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn ratio_cell(peer: &[f64], ours: &[f64]) -> String {
    let r: Vec<f64> = peer.iter().zip(ours).map(|(p, o)| p / o).collect();
    if r.is_empty() {
        return "—".into();
    }
    let t = Timing::from_times(r);
    format!("**{:.2}×** ({:.2}–{:.2})", t.median, t.min, t.max)
}

/// `peak`: the measured FMA peak in GFLOP/s, to give flop rates as a share of it.
fn rate(amount: Option<Amount>, s: f64, peak: f64) -> String {
    match amount {
        Some(Amount::Flops(f)) => {
            let g = f / s / 1e9;
            format!("{g:.1} GFLOP/s ({:.0}%)", 100.0 * g / peak)
        }
        Some(Amount::Bytes(b)) => format!("{:.2} GB/s", b / s / 1e9),
        None => "—".into(),
    }
}

fn run_case(case: &Case, args: &Args, device: &Device) -> vidgen_video_core::Result<Row> {
    let mut ours = (case.ours)(device)?;
    let t0 = std::time::Instant::now();
    ours()?;
    let (repeat, warmup) = match args.repeat {
        Some(r) => (r, 1),
        None => repeats_for(t0.elapsed().as_secs_f64()),
    };
    let mut twins: Vec<(&'static str, benches::Work)> = Vec::new();
    for (name, setup) in &case.twins {
        twins.push((name, setup(device)?));
    }
    let mut row = Row {
        case: case.name,
        shape: case.shape,
        amount: case.amount,
        ours: Vec::new(),
        twins: BTreeMap::new(),
        torch: Vec::new(),
        torch_note: None,
    };
    for round in 0..args.rounds {
        let t = time_calls(&mut ours, warmup, repeat, device)?;
        row.ours.push(t.median);
        let mut line = format!("  round {round}: ours {}", fmt_s(t.median));
        for (name, work) in twins.iter_mut() {
            // the reference twins can be 10-50x slower: fewer calls keep a round short
            let r = if t.median * repeat as f64 > 0.5 {
                2
            } else {
                repeat
            };
            let tt = time_calls(work, 1, r, device)?;
            row.twins.entry(name).or_default().push(tt.median);
            let _ = write!(line, ", {name} {}", fmt_s(tt.median));
        }
        if let (Some(tc), true) = (case.torch, args.peer) {
            match torch_peer(tc, args.threads, None, None) {
                Ok(p) => {
                    row.torch.push(p.median_s);
                    let _ = write!(
                        line,
                        ", torch {} ({} threads)",
                        fmt_s(p.median_s),
                        p.threads
                    );
                }
                Err(e) => {
                    row.torch_note = Some(e.clone());
                    let _ = write!(line, ", torch: {e}");
                }
            }
        }
        eprintln!("{line}");
    }
    Ok(row)
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let lscpu = cmd_out("lscpu", &[]);
    let model = lscpu
        .lines()
        .find(|l| l.starts_with("Model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let flags = lscpu
        .lines()
        .find(|l| l.starts_with("Flags"))
        .map(|l| {
            ["avx2", "fma", "avx512f", "avx512_bf16", "amx_tile"]
                .iter()
                .filter(|f| l.split_whitespace().any(|x| x == **f))
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model}, {cores} cores available ({flags})")
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Thread parity: rayon reads this when its global pool starts (first use, below).
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    if args.keep_freed_memory {
        // Allocator parity: ours through mallopt, the peers (glibc too) through the same
        // settings as environment variables, which their processes read at start.
        if !vidgen_trainer::keep_freed_memory() {
            eprintln!(
                "--keep-freed-memory: glibc's mallopt refused a setting (or MALLOC_* is set)"
            );
        }
        std::env::set_var("MALLOC_MMAP_THRESHOLD_", (32u32 << 20).to_string());
        std::env::set_var("MALLOC_TRIM_THRESHOLD_", i32::MAX.to_string());
        std::env::set_var("MALLOC_TOP_PAD_", (256u32 << 20).to_string());
    }
    if args.prefer_rayon_threads && !vidgen_trainer::prefer_rayon_threads() {
        // The training entry points' setting (candle's element-wise ops on the calling thread
        // instead of candle's own spinning pool); a CANDLE_NUM_THREADS the user set stands.
        eprintln!("--prefer-rayon-threads: CANDLE_NUM_THREADS is already set and stands");
    }
    let device = Device::Cpu;
    let cases: Vec<Case> = all_cases()
        .into_iter()
        .filter(|c| {
            // `NAME$` selects exactly NAME; anything else is a substring.
            args.filter.is_empty()
                || args.filter.iter().any(|f| match f.strip_suffix('$') {
                    Some(exact) => c.name == exact,
                    None => c.name.contains(f.as_str()),
                })
        })
        .collect();
    if cases.is_empty() {
        eprintln!("no case matches {:?}", args.filter);
        return ExitCode::from(2);
    }
    // Measured before the cases, on the same pool, so that "% of peak" is of this machine now.
    let (peak, peak_isa) = benches::peak::fma_peak_gflops(args.threads);
    let mut sections: BTreeMap<&'static str, Vec<Row>> = BTreeMap::new();
    let mut torch_env = None;
    if args.peer {
        if let Some(c) = cases.iter().find_map(|c| c.torch) {
            if let Ok(p) = torch_peer(c, args.threads, Some(1), Some(0)) {
                torch_env = Some(p.json["env"].clone());
            }
        }
    }
    for case in &cases {
        eprintln!("{} ({})", case.name, case.shape);
        match run_case(case, &args, &device) {
            Ok(row) => sections.entry(case.krate).or_default().push(row),
            Err(e) => eprintln!("  failed: {e}"),
        }
    }

    let mut md = String::new();
    let cmdline: Vec<String> = std::env::args().skip(1).collect();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Produced by `cargo run --release -p benches --bin bench-report -- {}` on {} (UTC).\n",
        cmdline.join(" "),
        cmd_out("date", &["-u", "+%Y-%m-%d %H:%M"])
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(
        md,
        "- Peak: {peak:.1} GFLOP/s f32, measured: {} OS threads × 12 independent {peak_isa} FMA \
         chains (the best of 5 runs of ~50 ms). Flop rates below give their share of it in \
         parentheses.",
        args.threads
    );
    let _ = writeln!(
        md,
        "- Threads: ours {} (`RAYON_NUM_THREADS`, rayon's global pool, used by candle and our kernels{}); \
         PyTorch `--threads {}` (`torch.set_num_threads`, OMP/MKL/OpenBLAS set before import)",
        args.threads,
        match std::env::var("CANDLE_NUM_THREADS") {
            Ok(v) => format!("; candle's own element-wise pool: `CANDLE_NUM_THREADS={v}`"),
            Err(_) => String::new(),
        },
        args.threads
    );
    let _ = writeln!(
        md,
        "- Versions: {}, candle 0.11.1; PyTorch peer: {}",
        cmd_out("rustc", &["--version"]),
        match &torch_env {
            Some(v) => format!(
                "torch {} (python {})",
                v["torch"].as_str().unwrap_or("?"),
                v["python"].as_str().unwrap_or("?")
            ),
            None => "not run (no venv: run `bash ../shared/peers/setup.sh`)".into(),
        }
    );
    let _ = writeln!(
        md,
        "- Method: {} rounds; each round times ours, then each in-process twin, then the PyTorch peer \
         (its own default repeats, in a subprocess). Cells are medians over rounds; ratios are \
         **peer time / our time** per round (median, min–max): above 1 means vidgen is faster.\n",
        args.rounds
    );
    for (krate, rows) in &sections {
        let _ = writeln!(md, "## {krate}\n");
        let twin_names: Vec<&str> = {
            let mut n: Vec<&str> = rows.iter().flat_map(|r| r.twins.keys().copied()).collect();
            n.sort();
            n.dedup();
            n
        };
        let mut header = "| case | shape | ours | ours rate |".to_string();
        let mut sep = "| --- | --- | --- | --- |".to_string();
        header.push_str(" PyTorch | ratio PyTorch / ours |");
        sep.push_str(" --- | --- |");
        for t in &twin_names {
            let _ = write!(header, " {t} | ratio {t} / ours |");
            sep.push_str(" --- | --- |");
        }
        let _ = writeln!(md, "{header}\n{sep}");
        for r in rows {
            let o = med(&r.ours);
            let mut line = format!(
                "| `{}` | {} | {} | {} |",
                r.case,
                r.shape,
                fmt_s(o),
                rate(r.amount, o, peak)
            );
            if r.torch.is_empty() {
                let why = r.torch_note.as_deref().map_or("—", |_| "not run");
                let _ = write!(line, " {why} | — |");
            } else {
                let _ = write!(
                    line,
                    " {} ({}) | {} |",
                    fmt_s(med(&r.torch)),
                    rate(r.amount, med(&r.torch), peak),
                    ratio_cell(&r.torch, &r.ours)
                );
            }
            for t in &twin_names {
                match r.twins.get(t) {
                    Some(v) => {
                        let _ = write!(line, " {} | {} |", fmt_s(med(v)), ratio_cell(v, &r.ours));
                    }
                    None => line.push_str(" — | — |"),
                }
            }
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(md);
    }
    if let Err(e) = std::fs::write(&args.out, &md) {
        eprintln!("cannot write {}: {e}", args.out);
        return ExitCode::FAILURE;
    }
    print!("{md}");
    ExitCode::SUCCESS
}
