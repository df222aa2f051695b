#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `record::halve_safetensors`: f32 tensors become f16 (rounded to nearest), others stay, and a
//! missing file is a typed error naming it.

use candle_core::{DType, Device, Tensor};
use vidgen_video_nn::record::{halve_safetensors, save_safetensors};

#[test]
fn halving_rounds_f32_to_f16_and_keeps_other_dtypes() {
    let dir = std::env::temp_dir().join(format!("vidgen-halve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    let dev = Device::Cpu;
    let w = Tensor::new(&[[0.1f32, -2.5, 1.0e-3], [65504.0, 3.0, -0.0]], &dev).unwrap();
    let ids = Tensor::new(&[1u32, 2, 3], &dev).unwrap();
    save_safetensors(
        &[
            ("w".to_string(), w.clone()),
            ("ids".to_string(), ids.clone()),
        ],
        None,
        &path,
    )
    .unwrap();
    halve_safetensors(&path).unwrap();
    let back = candle_core::safetensors::load(&path, &dev).unwrap();
    assert_eq!(back["w"].dtype(), DType::F16);
    assert_eq!(back["w"].dims(), w.dims());
    let want: Vec<f32> = w
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(|x| half::f16::from_f32(x).to_f32())
        .collect();
    let got: Vec<f32> = back["w"]
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(back["ids"].dtype(), DType::U32);
    assert_eq!(back["ids"].to_vec1::<u32>().unwrap(), vec![1, 2, 3]);

    let missing = dir.join("none.safetensors");
    let err = halve_safetensors(&missing).expect_err("a missing file halves");
    assert!(err.to_string().contains("none.safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
