//! Lists the tensors of a model directory (diffusers / transformers `save_pretrained` layout, or
//! a single `.safetensors` file) with shapes and dtypes, and prints its `config.json`.
//!
//! ```text
//! cargo run --release -p examples --bin inspect-model -- fixtures/llama/base/model
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use vidgen_video_core::ModelDir;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: inspect-model <model dir or .safetensors file>...");
        return ExitCode::from(2);
    }
    let mut status = ExitCode::SUCCESS;
    for a in args {
        if let Err(e) = inspect(PathBuf::from(&a)) {
            eprintln!("error: {e}");
            status = ExitCode::FAILURE;
        }
    }
    status
}

fn inspect(path: PathBuf) -> vidgen_video_core::Result<()> {
    let dir = if path.is_file() {
        let root = path.parent().map(PathBuf::from).unwrap_or_default();
        ModelDir::from_files(root, std::slice::from_ref(&path))?
    } else {
        ModelDir::open(&path)?
    };
    println!("{}", path.display());
    for f in dir.files() {
        println!("  file {}", f.display());
    }
    let config = dir.root().join("config.json");
    if config.exists() {
        let v: serde_json::Value = vidgen_video_core::loading::read_config(&config)?;
        let class = v
            .get("_class_name")
            .or_else(|| v.get("architectures").and_then(|a| a.get(0)))
            .and_then(|c| c.as_str())
            .unwrap_or("?");
        println!("  config {} ({class})", config.display());
    }
    let tensors = dir.tensors();
    let mut params = 0usize;
    for t in &tensors {
        let n: usize = t.shape.iter().product();
        params += n;
        println!("  {:<70} {:<5} {:?}", t.name, t.dtype, t.shape);
    }
    println!("  {} tensors, {} parameters", tensors.len(), params);
    Ok(())
}
