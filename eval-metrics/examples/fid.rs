//! FID between two folders of PNG images (or saved statistics), through the FID Inception-v3.
//!
//! ```text
//! cargo run --release -p vidgen-eval-metrics --example fid -- A B [--weights W] [--batch 8] [--kid] [--save-stats A.safetensors B.safetensors] [--quiet]
//! ```
//! A and B are folders or `.safetensors` statistics saved by `--save-stats` (merge shards
//! with the `merge_stats` example). Weights default to `$VIDGEN_WEIGHTS` (see `fetch_weights`).

mod common;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = common::Args::parse(&argv).and_then(|a| common::run(&a, false));
    match result {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => {
            eprintln!("fid: {e}");
            std::process::exit(1);
        }
    }
}
