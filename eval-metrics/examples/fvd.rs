//! FVD (and KVD with `--kvd`) between two folders of videos (GIFs, PNG-frame folders, or mp4 with video-io's `ffmpeg` feature), through the I3D.
//!
//! ```text
//! cargo run --release -p vidgen-eval-metrics --example fvd -- A B [--weights W] [--batch 8] [--frames 16] [--kvd] [--save-stats A.safetensors B.safetensors] [--quiet]
//! ```
//! A and B are folders or `.safetensors` statistics saved by `--save-stats` (merge shards
//! with the `merge_stats` example). Weights default to `$VIDGEN_WEIGHTS` (see `fetch_weights`).

mod common;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = common::Args::parse(&argv).and_then(|a| common::run(&a, true));
    match result {
        Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
        Err(e) => {
            eprintln!("fvd: {e}");
            std::process::exit(1);
        }
    }
}
