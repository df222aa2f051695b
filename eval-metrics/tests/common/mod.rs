//! Helpers shared by eval-metrics' parity tests: ledgers that make a fixture's every recorded
//! number and tensor count (one listed but never compared fails the test), and the weights
//! policy of the real-weight tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// A JSON object whose numeric / string leaves must all be read by the test.
pub struct Keys<'a> {
    what: String,
    obj: &'a serde_json::Map<String, serde_json::Value>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Keys<'a> {
    /// `v` must be an object; `what` names it in failures.
    pub fn new(what: impl Into<String>, v: &'a serde_json::Value) -> Self {
        let what = what.into();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{what}: expected a JSON object"));
        Self {
            what,
            obj,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    /// Marks `key` as read (for keys that are documentation or settings, not results).
    pub fn note(&self, key: &str) {
        self.used.borrow_mut().insert(key.to_string());
    }

    pub fn has(&self, key: &str) -> bool {
        self.obj.contains_key(key)
    }

    pub fn get(&self, key: &str) -> &'a serde_json::Value {
        self.note(key);
        self.obj
            .get(key)
            .unwrap_or_else(|| panic!("{}: `{key}` missing", self.what))
    }

    pub fn num(&self, key: &str) -> f64 {
        self.get(key)
            .as_f64()
            .unwrap_or_else(|| panic!("{}: `{key}` is not a number", self.what))
    }

    pub fn count(&self, key: &str) -> usize {
        self.get(key)
            .as_u64()
            .unwrap_or_else(|| panic!("{}: `{key}` is not a count", self.what)) as usize
    }

    pub fn nums(&self, key: &str) -> Vec<f64> {
        self.get(key)
            .as_array()
            .unwrap_or_else(|| panic!("{}: `{key}` is not an array", self.what))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    }

    pub fn counts(&self, key: &str) -> Vec<usize> {
        self.nums(key).into_iter().map(|v| v as usize).collect()
    }

    pub fn str(&self, key: &str) -> &'a str {
        self.get(key)
            .as_str()
            .unwrap_or_else(|| panic!("{}: `{key}` is not a string", self.what))
    }

    /// Every key of the object, read or not.
    pub fn keys(&self) -> Vec<&'a String> {
        self.obj.keys().collect()
    }

    /// Fails if a key was never read.
    pub fn finish(self) {
        let used = self.used.into_inner();
        let left: Vec<&String> = self.obj.keys().filter(|k| !used.contains(*k)).collect();
        assert!(
            left.is_empty(),
            "{}: recorded but never compared: {left:?}",
            self.what
        );
    }
}

/// A tensor file whose every tensor must be taken by the test.
pub struct Tensors {
    what: String,
    map: HashMap<String, Tensor>,
    used: RefCell<BTreeSet<String>>,
}

impl Tensors {
    pub fn new(what: impl Into<String>, map: HashMap<String, Tensor>) -> Self {
        Self {
            what: what.into(),
            map,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub fn get(&self, key: &str) -> &Tensor {
        self.used.borrow_mut().insert(key.to_string());
        self.map.get(key).unwrap_or_else(|| {
            let mut keys: Vec<&String> = self.map.keys().collect();
            keys.sort();
            panic!("{}: no tensor `{key}` (have {keys:?})", self.what)
        })
    }

    /// The keys starting with `prefix`, sorted by name in natural order (`x_2` before `x_10`).
    pub fn keys_with(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .map
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        v.sort_by_cached_key(|k| natural(k));
        v
    }

    /// Fails if a tensor was never taken.
    pub fn finish(self) {
        let used = self.used.into_inner();
        let mut left: Vec<&String> = self.map.keys().filter(|k| !used.contains(*k)).collect();
        left.sort();
        assert!(
            left.is_empty(),
            "{}: recorded but never compared: {left:?}",
            self.what
        );
    }
}

/// A sort key comparing digit runs as numbers.
fn natural(s: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut n = u64::from(c as u8 - b'0');
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                n = n
                    .saturating_mul(10)
                    .saturating_add(u64::from(d as u8 - b'0'));
                chars.next();
            }
            out.push((std::mem::take(&mut text), n));
        } else {
            text.push(c);
        }
    }
    out.push((text, u64::MAX));
    out
}

pub fn scalar(v: f64) -> Tensor {
    Tensor::new(&[v], &Device::Cpu).unwrap()
}

pub fn vec_t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

/// `max |t|` as f64.
pub fn abs_max(t: &Tensor) -> f64 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Whether `VIDGEN_REQUIRE_WEIGHTS=1`: the CI step that downloads the real weights has run,
/// so a missing weight file is a failure, not a skip.
pub fn weights_required() -> bool {
    video_testkit::require_weights()
}

/// The weight file `file` in the weights cache: `Some` when present; when absent, a test
/// failure naming the path under `VIDGEN_REQUIRE_WEIGHTS=1`, else `None` with a SKIPPED note
/// (video-testkit's policy, shared by every real-weight test).
pub fn weights(file: &str) -> Option<PathBuf> {
    video_testkit::weights_file(file)
}

/// The weights cache the tests read (`$VIDGEN_WEIGHTS`, relative to the workspace root).
pub fn weights_dir() -> PathBuf {
    video_testkit::weights_dir()
}

/// A synthetic 10-frame 64×48 video of diagonal colour bands that move by `kt` per frame
/// (band slope `kx`, phase from `seed`): distinct clips for the FVD front-end tests.
pub fn band_video(seed: u32, kx: u32, kt: u32) -> vidgen_video_io::Video {
    let frames = (0..10u32)
        .map(|t| {
            let mut data = Vec::with_capacity(48 * 64 * 3);
            for y in 0..48u32 {
                for x in 0..64u32 {
                    let v = ((x * kx + y * 5 + t * kt + seed * 31) % 256) as u8;
                    data.extend_from_slice(&[v, v.wrapping_mul(3), 255 - v]);
                }
            }
            vidgen_video_io::Frame::new(64, 48, data).unwrap()
        })
        .collect();
    vidgen_video_io::Video::new(frames, 10.0).unwrap()
}
