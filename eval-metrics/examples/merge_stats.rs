//! Merges feature statistics files (from `fid` / `fvd --save-stats`) into one, exactly.
//!
//! ```text
//! cargo run --release -p vidgen-eval-metrics --example merge_stats -- OUT.safetensors IN1.safetensors IN2.safetensors ...
//! ```

mod common;

fn main() {
    let argv: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    if argv.len() < 2 {
        eprintln!("usage: merge_stats OUT.safetensors IN.safetensors...");
        std::process::exit(2);
    }
    let result = common::merge_stats_files(&argv[1..]).and_then(|s| {
        s.save_safetensors(&argv[0])?;
        Ok(s.count())
    });
    match result {
        Ok(n) => println!(
            "merged {} files, {n} samples -> {}",
            argv.len() - 1,
            argv[0].display()
        ),
        Err(e) => {
            eprintln!("merge_stats: {e}");
            std::process::exit(1);
        }
    }
}
