//! diffusers `VQModel` parity on every `vqmodel` fixture folder (also under `$VIDGEN_FIXTURES`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use video_testkit::{fixtures, take};
use vidgen_vq_tokenizer::VQModel;

/// `max_abs ≤ 5e-5` and `≤ 1e-4·max|ref|` (fixtures/README.md, UNets / VAEs / vqmodel).
fn atol(want: &Tensor) -> f64 {
    let m = want
        .to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    5e-5f64.min(1e-4 * m)
}

#[test]
fn vqmodel_parity() {
    let dev = Device::Cpu;
    for fx in fixtures("vqmodel") {
        let (model, report) =
            VQModel::from_pretrained(fx.dir.join("model"), DType::F32, &dev).unwrap();
        assert!(report.is_clean(), "{}: {report}", fx.id());
        let inputs = fx.inputs();
        let outputs = fx.outputs();
        let x = take(&inputs, "x", "inputs");
        let mut p = fx.parity();
        let mut ours: HashMap<&str, Tensor> = HashMap::new();

        let latents = model.encode(x).unwrap();
        ours.insert("latents", latents.clone());
        let q = model.quantize(&latents).unwrap();
        ours.insert("quantized", q.quantized.clone());
        ours.insert("commit_loss", q.loss.reshape(1).unwrap());
        ours.insert("decoded", model.decode(&latents, false).unwrap());
        ours.insert(
            "decoded_not_quantized",
            model.decode(&latents, true).unwrap(),
        );

        // Indices: exact, flattened (B, H, W) in NHWC order.
        let want_ids = take(&outputs, "indices", "outputs")
            .to_dtype(DType::I64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap();
        let got_ids: Vec<i64> = q
            .indices
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .into_iter()
            .map(i64::from)
            .collect();
        assert_eq!(got_ids, want_ids, "{} indices", fx.id());
        // The token path (fused search without the STE) agrees.
        let tok = model.tokenize(x).unwrap();
        assert_eq!(
            tok.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            got_ids.iter().map(|&v| v as u32).collect::<Vec<_>>()
        );
        // Decoding the ids is the reference's decode of the quantised latents.
        let from_ids = model.detokenize(&tok).unwrap();
        let want_decoded = take(&outputs, "decoded", "outputs");
        p.check(
            "detokenize",
            &from_ids,
            want_decoded,
            atol(want_decoded),
            0.0,
        );

        // Every recorded output and intermediate is compared (indices above, exactly).
        let inter = fx.intermediates();
        let mut skipped: Vec<&String> = Vec::new();
        for (k, want) in outputs.iter().chain(inter.iter()) {
            if k == "indices" {
                continue;
            }
            match ours.get(k.as_str()) {
                Some(got) => p.check(k, got, want, atol(want), 0.0),
                None => skipped.push(k),
            }
        }
        assert!(
            skipped.is_empty(),
            "{}: recorded tensors not compared: {skipped:?}",
            fx.id()
        );
        p.finish();
    }
}
