//! Helpers shared by the parity tests: the fixture rule's tolerances, a parity record that fails
//! when a tensor the fixture lists was not compared, and seeded random inputs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};

use candle_core::{DType, Device, Tensor};
use video_testkit::{Closeness, Fixture, Parity};

/// `max |t|` as f64 (0 for an empty tensor).
pub fn max_abs(t: &Tensor) -> f64 {
    if t.elem_count() == 0 {
        return 0.0;
    }
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// The fixture rule for models (`../shared/fixtures/README.md`): `max_abs ≤ 5e-5` and
/// `≤ 1e-4·max|ref|`, i.e. an absolute bound of the smaller of the two.
pub fn model_tol(want: &Tensor) -> f64 {
    (1e-4 * max_abs(want)).min(5e-5)
}

/// Standard-normal values of `shape`, the same for the same `seed` (drawn through
/// video-testkit's seeded builder, so no global RNG is involved).
pub fn randn(seed: u64, shape: &[usize]) -> Tensor {
    video_testkit::seeded_var_builder(seed, DType::F32, &Device::Cpu)
        .get_with_hints(
            shape,
            "randn",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        )
        .unwrap()
}

/// `t` with its first element replaced by NaN.
pub fn with_nan(t: &Tensor) -> Tensor {
    let dims = t.dims().to_vec();
    let mut v = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    v[0] = f32::NAN;
    Tensor::from_vec(v, dims, t.device())
        .unwrap()
        .to_dtype(t.dtype())
        .unwrap()
}

/// Asserts `r` is [`vidgen_video_core::Error::NonFinite`] whose location names `model`.
pub fn assert_non_finite<T: std::fmt::Debug>(r: vidgen_video_core::Result<T>, model: &str) {
    match r {
        Err(vidgen_video_core::Error::NonFinite { location, nan, .. }) => {
            assert!(
                location.contains(model),
                "NonFinite location `{location}` does not name {model}"
            );
            assert!(nan > 0, "{location}: no NaN counted");
        }
        other => panic!("expected NonFinite naming {model}, got {other:?}"),
    }
}

/// The parity record of one model fixture: every tensor of `outputs.safetensors` and
/// `intermediates.safetensors` must be compared before [`ModelParity::finish`], which prints
/// the fixture's one `parity` line.
pub struct ModelParity {
    parity: Parity,
    id: String,
    outputs: HashMap<String, Tensor>,
    inter: HashMap<String, Tensor>,
    done_outputs: BTreeSet<String>,
    done_inter: BTreeSet<String>,
    allowed: HashMap<String, (f64, String)>,
}

impl ModelParity {
    /// Loads the fixture's outputs and intermediates.
    pub fn new(fx: &Fixture) -> Self {
        Self {
            parity: fx.parity(),
            id: fx.id(),
            outputs: fx.outputs(),
            inter: fx.intermediates(),
            done_outputs: BTreeSet::new(),
            done_inter: BTreeSet::new(),
            allowed: HashMap::new(),
        }
    }

    /// Compares intermediate `name` of fixture `id` within `atol` instead of the fixture rule,
    /// because the fixture's numbers show the rule cannot hold there (`why`, printed with the
    /// figures). Other fixtures keep the rule.
    pub fn allow(&mut self, id: &str, name: &str, atol: f64, why: &str) {
        if self.id == id {
            self.allowed
                .insert(name.to_string(), (atol, why.to_string()));
        }
    }

    /// The recorded output `name`.
    pub fn want(&self, name: &str) -> &Tensor {
        video_testkit::take(&self.outputs, name, &format!("{} outputs", self.id))
    }

    /// Compares `got` with output `name` under the fixture rule.
    pub fn output(&mut self, name: &str, got: &Tensor) {
        self.output_as(name, name, got);
    }

    /// Compares `got` with output `name` under the fixture rule, reported as `label` (a second
    /// way of computing the same output).
    pub fn output_as(&mut self, label: &str, name: &str, got: &Tensor) {
        let want = self.want(name).clone();
        let tol = model_tol(&want);
        self.parity.check(label, got, &want, tol, 0.0);
        self.done_outputs.insert(name.to_string());
    }

    /// Compares `got` with output `name` within `atol`; `why` says why the fixture rule cannot
    /// hold there (printed with the figures).
    pub fn output_within(&mut self, name: &str, got: &Tensor, atol: f64, why: &str) {
        let want = self.want(name).clone();
        println!(
            "{} {name}: atol {atol:.3e} instead of {:.3e}: {why}",
            self.id,
            model_tol(&want)
        );
        self.parity.check(name, got, &want, atol, 0.0);
        self.done_outputs.insert(name.to_string());
    }

    /// Compares `got` with intermediate `name` under the fixture rule.
    pub fn intermediate(&mut self, name: &str, got: &Tensor) {
        let want =
            video_testkit::take(&self.inter, name, &format!("{} intermediates", self.id)).clone();
        let tol = match self.allowed.get(name) {
            Some((atol, why)) => {
                println!(
                    "{} {name}: atol {atol:.3e} instead of {:.3e}: {why}",
                    self.id,
                    model_tol(&want)
                );
                *atol
            }
            None => model_tol(&want),
        };
        self.parity.check(name, got, &want, tol, 0.0);
        self.done_inter.insert(name.to_string());
    }

    /// Compares every traced tensor the fixture records as an intermediate (traced names the
    /// fixture does not list are not compared; names it lists but the trace lacks fail in
    /// [`ModelParity::finish`]).
    pub fn trace(&mut self, trace: &[(String, Tensor)]) {
        for (name, got) in trace {
            if self.inter.contains_key(name) {
                self.intermediate(name, got);
            }
        }
    }

    /// Fails if a listed tensor was not compared; prints and returns the `parity` line's
    /// figures.
    pub fn finish(self) -> Closeness {
        let missing = |all: &HashMap<String, Tensor>, done: &BTreeSet<String>| {
            let mut m: Vec<String> = all.keys().filter(|k| !done.contains(*k)).cloned().collect();
            m.sort();
            m
        };
        let mo = missing(&self.outputs, &self.done_outputs);
        let mi = missing(&self.inter, &self.done_inter);
        assert!(
            mo.is_empty() && mi.is_empty(),
            "{}: listed but not compared: outputs {mo:?}, intermediates {mi:?}",
            self.id
        );
        self.parity.finish()
    }
}
