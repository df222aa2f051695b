#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `Parity::finish` appends its line to `$VIDGEN_PARITY_LOG`, and lines written from many
//! threads at once never interleave. (Alone in its binary: it sets an environment variable.)

use candle_core::{Device, Tensor};
use video_testkit::{append_line, Fixture};

#[test]
fn parity_lines_are_appended_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("parity.log");
    std::env::set_var("VIDGEN_PARITY_LOG", &log);
    std::fs::write(&log, "parity earlier/run max_abs=0 max_rel=0\n").unwrap();
    let fx = Fixture {
        kind: "attention".into(),
        name: "tiny".into(),
        dir: dir.path().to_path_buf(),
        meta: serde_json::Value::Null,
    };
    let a = Tensor::new(&[1f32, 2., 4.], &Device::Cpu).unwrap();
    let b = Tensor::new(&[1f32, 2.5, 4.], &Device::Cpu).unwrap();
    let mut p = fx.parity();
    p.check("out", &a, &b, 1.0, 0.0);
    let c = p.finish();
    assert_eq!(c.max_abs, 0.5);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "parity earlier/run max_abs=0 max_rel=0",
            "parity attention/tiny max_abs=5.000e-1 max_rel=1.250e-1"
        ]
    );

    // many writers at once: every line arrives whole
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    append_line(
                        &log,
                        &format!("parity k/t{t}_{i} max_abs={:0>60} max_rel=0", i),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 8 * 200);
    for l in &lines[2..] {
        assert!(
            l.starts_with("parity k/t") && l.ends_with(" max_rel=0"),
            "{l}"
        );
        assert_eq!(l.split(' ').count(), 4, "{l}");
    }
}
