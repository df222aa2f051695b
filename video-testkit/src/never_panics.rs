//! "This parser never panics": seeded proptest runs of arbitrary bytes, arbitrary JSON and
//! mutations of a valid sample through a parser, for every config type and file reader.

use std::sync::Arc;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{json, Value};

/// Cases per input family (arbitrary bytes, sample byte mutations, arbitrary JSON, sample JSON
/// mutations). A config parse takes microseconds, so a family runs in milliseconds.
pub const PARSER_CASES: u32 = 256;

/// Runs `parse` on [`PARSER_CASES`] inputs of each byte-level family: arbitrary bytes, `sample`
/// truncated at every length, and `sample` with bytes overwritten or inserted. The run is
/// seeded (a failure reproduces), and fails the test, printing the smallest input found,
/// if `parse` panics on any of them.
///
/// `what` names the parser in the failure message. Use it for binary formats (safetensors,
/// pickle, npy, PNG / GIF) with a valid file as `sample`.
///
/// # Panics
/// When `parse` panics on an input.
pub fn assert_parser_never_panics<R>(what: &str, sample: &[u8], parse: impl Fn(&[u8]) -> R) {
    let sample: Arc<Vec<u8>> = Arc::new(sample.to_vec());
    run(what, "arbitrary bytes", vec(any::<u8>(), 0..512), &|b| {
        let _ = parse(b);
    });
    let len = sample.len();
    let s = sample.clone();
    run(
        what,
        "truncated sample",
        (0..=len).prop_map(move |k| s[..k].to_vec()),
        &|b| {
            let _ = parse(b);
        },
    );
    let s = sample.clone();
    let mutated = vec(
        (any::<prop::sample::Index>(), any::<u8>(), any::<bool>()),
        1..8,
    )
    .prop_map(move |edits| {
        let mut b = s.as_ref().clone();
        for (at, byte, insert) in edits {
            let i = at.index(b.len() + 1);
            if insert || i == b.len() {
                b.insert(i, byte);
            } else {
                b[i] = byte;
            }
        }
        b
    });
    run(what, "mutated sample", mutated, &|b| {
        let _ = parse(b);
    });
}

/// The never-panics check for one config type: `parse` gets the bytes of a `config.json` and
/// returns the config or a typed error (typically `parse_config::<T>` followed by the type's
/// `validate`). It must accept `sample_json` (a valid config of the type), and must not panic on:
///
/// - everything [`assert_parser_never_panics`] feeds it (arbitrary bytes, truncations, byte
///   edits of the sample);
/// - arbitrary JSON documents, objects using the sample's keys among others;
/// - every single edit of the sample, exhaustively: each field (at any depth) set to each
///   troublesome number (0, −1, 2⁶³, u64::MAX, 1e300, 0.5, …), to null, `[]`, `{}`, `""`,
///   `true`, or removed;
/// - the sample with up to four fields replaced by arbitrary JSON or troublesome numbers,
///   removed, or, for arrays, emptied or lengthened.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Cfg { channels: Vec<usize>, eps: f64 }
/// video_testkit::assert_config_never_panics(r#"{"channels": [32, 64], "eps": 1e-5}"#, |b| {
///     serde_json::from_slice::<Cfg>(b).map(|c| c.channels.len())
/// });
/// ```
///
/// # Panics
/// When `parse` rejects the sample (with its error), or panics on an input (with the smallest
/// such input found).
pub fn assert_config_never_panics<T, E: std::fmt::Debug>(
    sample_json: &str,
    parse: impl Fn(&[u8]) -> Result<T, E>,
) {
    let what = std::any::type_name::<T>();
    if let Err(e) = parse(sample_json.as_bytes()) {
        panic!("{what}: the sample config is rejected: {e:?}\n{sample_json}");
    }
    let sample: Value = serde_json::from_str(sample_json)
        .unwrap_or_else(|e| panic!("{what}: the sample is not JSON: {e}"));
    assert_parser_never_panics(what, sample_json.as_bytes(), |b| {
        let _ = parse(b);
    });
    let keys: Vec<String> = match &sample {
        Value::Object(m) if !m.is_empty() => m.keys().cloned().collect(),
        _ => vec!["x".to_string()],
    };
    let as_json = |v: &Value| {
        let _ = parse(&serde_json::to_vec(v).unwrap_or_default());
    };
    run(what, "arbitrary JSON", json_value(), &as_json);
    let obj = btree_map(
        prop_oneof![prop::sample::select(keys), "[a-z_]{1,12}"],
        json_value(),
        0..8,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    run(what, "objects with the sample's keys", obj, &as_json);

    // Every single edit, exhaustively: each field (at any depth) set to each odd number, to
    // null, to an empty array / object, removed.
    let pointers = json_pointers(&sample);
    for p in &pointers {
        let mut fills: Vec<Value> = ODD_NUMBERS.iter().map(|f| f()).collect();
        fills.extend([Value::Null, json!([]), json!({}), json!(""), json!(true)]);
        for fill in fills {
            let mut v = sample.clone();
            apply_edit(&mut v, p, 0, fill.clone(), Value::Null, 0);
            let input = serde_json::to_vec(&v).unwrap_or_default();
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input))).is_err() {
                panic!(
                    "{what} panicked on single edits: `{p}` set to {fill}: {}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        let mut v = sample.clone();
        apply_edit(&mut v, p, 2, Value::Null, Value::Null, 0);
        let input = serde_json::to_vec(&v).unwrap_or_default();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(&input))).is_err() {
            panic!(
                "{what} panicked on single edits: `{p}` removed: {}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    let pointers = Arc::new(pointers);
    let sample = Arc::new(sample);
    let n_ptr = pointers.len();
    let edits = vec(
        (
            any::<prop::sample::Index>(),
            0u8..4,
            json_value(),
            odd_number(),
            0usize..9,
        ),
        1..5,
    )
    .prop_map(move |edits| {
        let mut v = sample.as_ref().clone();
        for (at, kind, any_v, num, reps) in edits {
            let p = &pointers[at.index(n_ptr)];
            apply_edit(&mut v, p, kind, any_v, num, reps);
        }
        v
    });
    run(what, "mutated sample config", edits, &as_json);
}

/// Runs `check` on [`PARSER_CASES`] values of `strategy` with a fixed seed, turning a panic into
/// a test failure that names `what`, the family and the smallest failing input.
fn run<S: Strategy>(what: &str, family: &str, strategy: S, check: &dyn Fn(&S::Value))
where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: PARSER_CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let res = runner.run(&strategy, |input| {
        check(&input);
        Ok::<(), TestCaseError>(())
    });
    if let Err(e) = res {
        panic!("{what} panicked on {family}: {e}");
    }
}

/// Numbers that break naive code: zero, negatives, powers of two at integer limits, huge and
/// tiny floats, fractions where counts are expected.
fn odd_number() -> impl Strategy<Value = Value> {
    prop::sample::select(ODD_NUMBERS.iter().map(|f| f()).collect::<Vec<Value>>())
}

/// The odd numbers, as constructors (`Value` has no const constructor for numbers).
const ODD_NUMBERS: [fn() -> Value; 19] = [
    || json!(0),
    || json!(-1),
    || json!(1),
    || json!(2),
    || json!(3),
    || json!(7),
    || json!(65536),
    || json!(4_294_967_296u64),
    || json!(1_000_000_000_000_000_000u64),
    || json!(i64::MAX),
    || json!(i64::MIN),
    || json!(u64::MAX),
    || json!(0.5),
    || json!(-0.5),
    || json!(1e-300),
    || json!(1e300),
    || json!(-1e300),
    || json!(f64::MAX),
    || json!(-0.0),
];

/// Arbitrary JSON: leaves (null, booleans, integers, finite floats, the odd numbers, short
/// strings) nested in arrays and objects up to depth 3.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        any::<f64>().prop_map(|f| if f.is_finite() { json!(f) } else { json!(0.0) }),
        odd_number(),
        odd_number(),
        prop_oneof![
            "[ -~]{0,12}",
            prop::sample::select(vec!["", "silu", "gelu", "fp16", "linear", "nan", "inf"])
                .prop_map(str::to_string),
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer of `v` (its fields and array elements at any depth), `""` (the root) last.
fn json_pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let esc = k.replace('~', "~0").replace('/', "~1");
                    walk(c, format!("{at}/{esc}"), out);
                }
            }
            Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// One edit at pointer `p`: 0 replace with `any_v`, 1 replace with the odd number `num`, 2
/// remove (an object member or array element), 3 an array emptied (`reps` 0) or lengthened to
/// `reps` copies of its first element (any other value replaced by `reps` copies of `num`).
fn apply_edit(v: &mut Value, p: &str, kind: u8, any_v: Value, num: Value, reps: usize) {
    if kind == 2 {
        if let Some((parent, last)) = p.rsplit_once('/') {
            let key = last.replace("~1", "/").replace("~0", "~");
            match v.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        return;
    }
    let Some(target) = v.pointer_mut(p) else {
        return;
    };
    *target = match (kind, &*target) {
        (0, _) => any_v,
        (1, _) => num,
        (_, Value::Array(a)) => match a.first() {
            Some(first) if reps > 0 => Value::Array(vec![first.clone(); reps]),
            _ => Value::Array(Vec::new()),
        },
        _ => Value::Array(vec![num; reps]),
    };
}
