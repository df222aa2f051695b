//! `vidgen ip2p`, `vidgen animate` and `vidgen edit` end to end on the vendored pipeline
//! fixtures: each writes its output and a JSON report; bad input is one line with exit status 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vidgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vidgen"))
        .args(args)
        .output()
        .expect("run vidgen")
}

fn ok_json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn ip2p_animate_edit_write_their_outputs() {
    let ip2p = root().join("fixtures/ip2p_pipeline/base");
    let ad = root().join("fixtures/animatediff_pipeline/base/pipeline");
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("edited.png");
    let r = ok_json(&vidgen(&[
        "ip2p",
        "--model",
        ip2p.join("pipeline").to_str().unwrap(),
        "--image",
        ip2p.join("image.png").to_str().unwrap(),
        "--prompt",
        "make it a watercolor painting",
        "--steps",
        "2",
        "--out",
        png.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["command"], "ip2p");
    let pic = vidgen_video_io::read_png(&png).unwrap();
    assert_eq!((pic.width(), pic.height()), (32, 32));

    let gif = dir.path().join("anim.gif");
    let r = ok_json(&vidgen(&[
        "animate",
        "--model",
        ad.to_str().unwrap(),
        "--prompt",
        "a red square moving left",
        "--frames",
        "6",
        "--steps",
        "2",
        "--out",
        gif.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["command"], "animate");
    assert_eq!(r["frames"], 6);
    assert_eq!(vidgen_video_io::read_gif(&gif).unwrap().len(), 6);

    // Edit the animation: 6 frames in clips of 4 overlapping by 2 -> clips [0, 4), [2, 6).
    let frames = dir.path().join("edited");
    let r = ok_json(&vidgen(&[
        "edit",
        "--model",
        ip2p.join("pipeline").to_str().unwrap(),
        "--video",
        gif.to_str().unwrap(),
        "--instruction",
        "make it a watercolor painting",
        "--clip-frames",
        "4",
        "--overlap",
        "2",
        "--steps",
        "2",
        "--out",
        frames.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(r["command"], "edit");
    assert_eq!(r["frames"], 6);
    assert_eq!(
        r["clips_start_len_carried"],
        serde_json::json!([[0, 4, 0], [2, 4, 2]])
    );
    assert_eq!(
        vidgen_video_io::read_png_folder(&frames, 8.0)
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn edit_bad_input_is_one_line_and_exit_1() {
    let ip2p = root().join("fixtures/ip2p_pipeline/base");
    let model = ip2p.join("pipeline");
    let image = ip2p.join("image.png");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.gif");
    // A 3-frame GIF of the fixture picture.
    let gif = dir.path().join("src.gif");
    let pic = vidgen_video_io::read_png(&image).unwrap();
    let v = vidgen_video_io::Video::new(vec![pic.clone(), pic.clone(), pic], 8.0).unwrap();
    vidgen_video_io::write_gif(&gif, &v).unwrap();
    let cases: Vec<Vec<&str>> = vec![
        // no instruction at all
        vec![
            "edit",
            "--model",
            model.to_str().unwrap(),
            "--video",
            gif.to_str().unwrap(),
        ],
        // overlap as long as a clip
        vec![
            "edit",
            "--model",
            model.to_str().unwrap(),
            "--video",
            gif.to_str().unwrap(),
            "--instruction",
            "x",
            "--clip-frames",
            "2",
            "--overlap",
            "2",
        ],
        // a missing video
        vec![
            "edit",
            "--model",
            model.to_str().unwrap(),
            "--video",
            "/no/such.mp4",
            "--instruction",
            "x",
        ],
        // an image that is not there
        vec![
            "ip2p",
            "--model",
            model.to_str().unwrap(),
            "--image",
            "/no/such.png",
            "--prompt",
            "x",
        ],
        // a folder that is not an AnimateDiff pipeline
        vec![
            "animate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "x",
        ],
    ];
    for mut c in cases {
        c.extend(["--out", out.to_str().unwrap()]);
        let o = vidgen(&c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{c:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{c:?}: {err}");
        assert!(err.starts_with("vidgen: "), "{c:?}: {err}");
        println!("{}: {}", c[0], err.trim());
    }
}
