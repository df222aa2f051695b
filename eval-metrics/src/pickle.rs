//! A small, safe Python pickle reader (protocols 2–5), enough for the two weight files the
//! feature networks ship in: a TorchScript archive's `data.pkl` (module objects built with
//! `NEWOBJ` + `BUILD`, tensors through `torch._utils._rebuild_tensor_v2` and `BINPERSID`) and
//! a pickle of nested dicts of `numpy.ndarray`s (`_reconstruct` + `BUILD` with raw bytes).
//!
//! Nothing is executed: globals become [`Value::Global`] names, calls become
//! [`Value::Call`] records and `BUILD` becomes [`Value::Built`]; the loaders in
//! [`crate::weights`] interpret the few shapes they expect. Every malformed or unknown input is
//! an error, never a panic (bounds are checked on every read).
//!
//! ## Resource bounds
//! A pickle is a program: a few hundred bytes can describe a value of exponential size (`GET`
//! a memoised value twice, `TUPLE2`, `PUT` it back, repeat: the "doubling" pickle), or nest
//! values deeper than any recursive walk (or `Drop`) can follow. So:
//! * memo `GET` / `PUT` share values ([`Obj`] is an `Rc`): nothing is copied, whatever the
//!   fan-out. A shared container that is then mutated (`APPEND` after `PUT`) is copied one
//!   level deep, so the memo keeps the value as it was when memoised (what the loaders
//!   expect: e.g. a memoised numpy dtype is referenced in its pre-`BUILD` form);
//! * every value carries its nesting depth and its *expanded* size (the bytes it would take
//!   written out as a tree, which bounds what any walk over it visits); a value past
//!   [`Limits`] is [`Error::Malformed`] naming the file;
//! * every allocation the reader makes is counted against the same byte limit.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use vidgen_video_core::{Error, Result};

/// A shared unpickled value: memo references and containers hold the same node.
pub(crate) type Obj = Rc<Value>;

/// One unpickled value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Obj>),
    List(Vec<Obj>),
    Dict(Vec<(Obj, Obj)>),
    /// `module.name` of a `GLOBAL` / `STACK_GLOBAL`.
    Global(String, String),
    /// `callable(*args)` from `REDUCE` or `NEWOBJ`.
    Call(Obj, Vec<Obj>),
    /// `obj.__setstate__(state)` from `BUILD`.
    Built(Obj, Obj),
    /// A persistent id (`BINPERSID`), e.g. a torch storage reference.
    Persistent(Obj),
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub(crate) fn as_seq(&self) -> Option<&[Obj]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

/// Bounds on what one pickle may make the reader build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The deepest nesting of containers / calls (the real weight files nest < 40).
    pub max_depth: u32,
    /// Bytes: both the reader's total allocations and any value's expanded (tree) size.
    pub max_bytes: u64,
}

impl Limits {
    /// The default for a pickle of `len` bytes: depth 256, and 64 MiB plus 4× the input (a
    /// numpy pickle's arrays are copied once; the node overhead of real files is small).
    pub(crate) fn for_input(len: usize) -> Self {
        Self {
            max_depth: 256,
            max_bytes: (64u64 << 20).saturating_add((len as u64).saturating_mul(4)),
        }
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                bad(
                    self.path,
                    format!(
                        "pickle truncated: need {n} bytes at offset {}, file has {}",
                        self.pos,
                        self.data.len()
                    ),
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| bad(self.path, "pickle truncated inside a GLOBAL name"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn utf8(&mut self, n: usize) -> Result<String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(self.path, "pickle string is not UTF-8"))
    }
}

fn usize_of(n: u64, path: &Path) -> Result<usize> {
    usize::try_from(n).map_err(|_| bad(path, "pickle length does not fit in memory"))
}

/// Depth and expanded size of a value (kept beside it, not in it: a value never changes after
/// it is built, except a top-of-stack container being filled).
#[derive(Debug, Clone, Copy)]
struct Meta {
    depth: u32,
    size: u64,
}

/// A stack slot: a `MARK` or a value with its [`Meta`].
#[derive(Debug, Clone)]
enum Slot {
    Mark,
    Val(Obj, Meta),
}

/// Bytes charged per value node (the enum plus the `Rc` counts).
const NODE: u64 = (std::mem::size_of::<Value>() + 2 * std::mem::size_of::<usize>()) as u64;
/// Bytes charged per reference held by a container or the stack.
const PTR: u64 = std::mem::size_of::<Obj>() as u64;

/// The unpickler's state: stack, memo, and the running allocation count.
struct Machine<'a> {
    stack: Vec<Slot>,
    memo: HashMap<u64, (Obj, Meta)>,
    allocated: u64,
    limits: Limits,
    path: &'a Path,
}

impl Machine<'_> {
    fn charge(&mut self, bytes: u64) -> Result<()> {
        self.allocated = self.allocated.saturating_add(bytes);
        if self.allocated > self.limits.max_bytes {
            return Err(bad(
                self.path,
                format!(
                    "pickle needs more than {} bytes of memory to read (a malicious or corrupt \
                     file?)",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Checks a value's depth and expanded size against the limits.
    fn check(&self, m: Meta) -> Result<Meta> {
        if m.depth > self.limits.max_depth {
            return Err(bad(
                self.path,
                format!(
                    "pickle values nest deeper than {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        if m.size > self.limits.max_bytes {
            return Err(bad(
                self.path,
                format!(
                    "pickle value expands to more than {} bytes (shared references repeated: \
                     a malicious or corrupt file?)",
                    self.limits.max_bytes
                ),
            ));
        }
        Ok(m)
    }

    /// Pushes a leaf with `payload` bytes of its own.
    fn leaf(&mut self, v: Value, payload: usize) -> Result<()> {
        let size = NODE.saturating_add(payload as u64);
        self.charge(size + PTR)?;
        let m = self.check(Meta { depth: 1, size })?;
        self.stack.push(Slot::Val(Rc::new(v), m));
        Ok(())
    }

    /// The meta of a new node holding `children`.
    fn parent_meta<'m>(&self, children: impl IntoIterator<Item = &'m Meta>) -> Result<Meta> {
        let mut depth = 0u32;
        let mut size = NODE;
        for c in children {
            depth = depth.max(c.depth);
            size = size.saturating_add(c.size).saturating_add(PTR);
        }
        self.check(Meta {
            depth: depth.saturating_add(1),
            size,
        })
    }

    /// Pushes a node built from `children` (their metas) and charged for `refs` references.
    fn node(&mut self, v: Value, m: Meta, refs: usize) -> Result<()> {
        self.charge(NODE + PTR + PTR.saturating_mul(refs as u64))?;
        self.stack.push(Slot::Val(Rc::new(v), m));
        Ok(())
    }

    fn pop(&mut self) -> Result<(Obj, Meta)> {
        match self.stack.pop() {
            Some(Slot::Val(v, m)) => Ok((v, m)),
            Some(Slot::Mark) => Err(bad(self.path, "pickle MARK used as a value")),
            None => Err(bad(self.path, "pickle stack underflow")),
        }
    }

    /// The values above the topmost `MARK`, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<(Obj, Meta)>> {
        let i = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Slot::Mark))
            .ok_or_else(|| bad(self.path, "pickle MARK not found"))?;
        let items = self.stack.split_off(i + 1);
        self.stack.pop();
        items
            .into_iter()
            .map(|s| match s {
                Slot::Val(v, m) => Ok((v, m)),
                Slot::Mark => Err(bad(self.path, "pickle MARK inside a MARK")),
            })
            .collect()
    }

    /// Adds `items` to the list (or, with `pairs`, dict) on top of the stack, copying its
    /// top level first if the memo shares it.
    fn extend_top(&mut self, items: Vec<(Obj, Meta)>, pairs: bool, op: &str) -> Result<()> {
        let path = self.path;
        let (obj, meta) = match self.stack.last() {
            Some(Slot::Val(o, m)) => (o, *m),
            _ => return Err(bad(path, format!("pickle {op} with no container below"))),
        };
        let len = match obj.as_ref() {
            Value::List(l) if !pairs => l.len(),
            Value::Dict(d) if pairs => d.len() * 2,
            _ => return Err(bad(path, format!("pickle {op} on a wrong container"))),
        };
        if pairs && !items.len().is_multiple_of(2) {
            return Err(bad(path, "pickle dict with an odd number of items"));
        }
        let shared = Rc::strong_count(obj) > 1;
        let new_meta = {
            let mut m = meta;
            for (_, c) in &items {
                m.depth = m.depth.max(c.depth.saturating_add(1));
                m.size = m.size.saturating_add(c.size).saturating_add(PTR);
            }
            self.check(m)?
        };
        // A shared container is copied (references only) before it changes.
        let copy = if shared { PTR * len as u64 + NODE } else { 0 };
        self.charge(copy.saturating_add(PTR * items.len() as u64))?;
        let Some(Slot::Val(obj, meta)) = self.stack.last_mut() else {
            return Err(bad(path, format!("pickle {op} with no container below")));
        };
        *meta = new_meta;
        match Rc::make_mut(obj) {
            Value::List(l) => l.extend(items.into_iter().map(|(v, _)| v)),
            Value::Dict(d) => {
                let mut it = items.into_iter().map(|(v, _)| v);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            _ => return Err(bad(path, format!("pickle {op} on a wrong container"))),
        }
        Ok(())
    }

    fn memo_put(&mut self, id: u64) -> Result<()> {
        let top = match self.stack.last() {
            Some(Slot::Val(v, m)) => (v.clone(), *m),
            _ => return Err(bad(self.path, "pickle PUT / MEMOIZE without a value")),
        };
        self.charge(PTR + 16)?;
        self.memo.insert(id, top);
        Ok(())
    }
}

/// Unpickles `data` (the contents of `path`, named in errors) within the default
/// [`Limits::for_input`].
pub(crate) fn load(data: &[u8], path: &Path) -> Result<Obj> {
    load_with_limits(data, path, Limits::for_input(data.len()))
}

/// Unpickles `data` (the contents of `path`, named in errors) within `limits`.
pub(crate) fn load_with_limits(data: &[u8], path: &Path, limits: Limits) -> Result<Obj> {
    let mut r = Reader { data, pos: 0, path };
    let mut mc = Machine {
        stack: Vec::new(),
        memo: HashMap::new(),
        allocated: 0,
        limits,
        path,
    };
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(bad(path, format!("unsupported pickle protocol {proto}")));
                }
            }
            0x95 => {
                r.u64()?; // FRAME: a length hint only
            }
            b'.' => return Ok(mc.pop()?.0),
            b'(' => {
                mc.charge(PTR)?;
                mc.stack.push(Slot::Mark)
            }
            b'}' => mc.leaf(Value::Dict(Vec::new()), 0)?,
            b']' => mc.leaf(Value::List(Vec::new()), 0)?,
            b')' => mc.leaf(Value::Tuple(Vec::new()), 0)?,
            b'N' => mc.leaf(Value::None, 0)?,
            0x88 => mc.leaf(Value::Bool(true), 0)?,
            0x89 => mc.leaf(Value::Bool(false), 0)?,
            b'K' => {
                let v = r.u8()?;
                mc.leaf(Value::Int(i64::from(v)), 0)?
            }
            b'M' => {
                let v = r.u16()?;
                mc.leaf(Value::Int(i64::from(v)), 0)?
            }
            b'J' => {
                let v = r.u32()? as i32;
                mc.leaf(Value::Int(i64::from(v)), 0)?
            }
            0x8a => {
                let n = usize::from(r.u8()?);
                let b = r.take(n)?;
                if n > 8 {
                    return Err(bad(path, "pickle LONG1 wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &byte) in b.iter().enumerate() {
                    v |= i64::from(byte) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                mc.leaf(Value::Int(v), 0)?
            }
            b'G' => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                mc.leaf(Value::Float(f64::from_be_bytes(a)), 0)?
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => usize::from(r.u8()?),
                    b'X' => r.u32()? as usize,
                    _ => usize_of(r.u64()?, path)?,
                };
                let s = r.utf8(n)?;
                mc.leaf(Value::Str(s), n)?
            }
            b'U' | b'T' => {
                let n = if op == b'U' {
                    usize::from(r.u8()?)
                } else {
                    r.u32()? as usize
                };
                let s = String::from_utf8_lossy(r.take(n)?).into_owned();
                mc.leaf(Value::Str(s), n)?
            }
            b'C' | b'B' | 0x8e => {
                let n = match op {
                    b'C' => usize::from(r.u8()?),
                    b'B' => r.u32()? as usize,
                    _ => usize_of(r.u64()?, path)?,
                };
                let b = r.take(n)?;
                // Charged before the copy is made.
                mc.charge(n as u64)?;
                mc.leaf(Value::Bytes(b.to_vec()), n)?
            }
            b't' | b'l' => {
                let items = mc.pop_mark()?;
                let m = mc.parent_meta(items.iter().map(|(_, m)| m))?;
                let n = items.len();
                let v: Vec<Obj> = items.into_iter().map(|(v, _)| v).collect();
                let v = if op == b't' {
                    Value::Tuple(v)
                } else {
                    Value::List(v)
                };
                mc.node(v, m, n)?
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(mc.pop()?);
                }
                items.reverse();
                let m = mc.parent_meta(items.iter().map(|(_, m)| m))?;
                let v = Value::Tuple(items.into_iter().map(|(v, _)| v).collect());
                mc.node(v, m, n)?
            }
            b'd' => {
                let items = mc.pop_mark()?;
                if !items.len().is_multiple_of(2) {
                    return Err(bad(path, "pickle dict with an odd number of items"));
                }
                let m = mc.parent_meta(items.iter().map(|(_, m)| m))?;
                let n = items.len();
                let mut it = items.into_iter().map(|(v, _)| v);
                let mut pairs = Vec::with_capacity(n / 2);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                mc.node(Value::Dict(pairs), m, n)?
            }
            b'a' => {
                let v = mc.pop()?;
                mc.extend_top(vec![v], false, "APPEND")?
            }
            b'e' => {
                let items = mc.pop_mark()?;
                mc.extend_top(items, false, "APPENDS")?
            }
            b's' => {
                let v = mc.pop()?;
                let k = mc.pop()?;
                mc.extend_top(vec![k, v], true, "SETITEM")?
            }
            b'u' => {
                let items = mc.pop_mark()?;
                mc.extend_top(items, true, "SETITEMS")?
            }
            0x94 => {
                let id = mc.memo.len() as u64;
                mc.memo_put(id)?
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    u64::from(r.u8()?)
                } else {
                    u64::from(r.u32()?)
                };
                mc.memo_put(id)?
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    u64::from(r.u8()?)
                } else {
                    u64::from(r.u32()?)
                };
                let (v, m) = mc
                    .memo
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| bad(path, format!("pickle memo {id} missing")))?;
                mc.charge(PTR)?;
                mc.stack.push(Slot::Val(v, m))
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                let n = module.len() + name.len();
                mc.leaf(Value::Global(module, name), n)?
            }
            0x93 => {
                let (name, _) = mc.pop()?;
                let (module, _) = mc.pop()?;
                match (module.as_ref(), name.as_ref()) {
                    (Value::Str(m), Value::Str(n)) => {
                        let len = m.len() + n.len();
                        mc.leaf(Value::Global(m.clone(), n.clone()), len)?
                    }
                    _ => return Err(bad(path, "pickle STACK_GLOBAL without two strings")),
                }
            }
            b'R' | 0x81 => {
                let (args, am) = mc.pop()?;
                let (callable, cm) = mc.pop()?;
                // A tuple of arguments is unpacked (its items become the call's children).
                let args: Vec<Obj> = match args.as_ref() {
                    Value::Tuple(a) => a.clone(),
                    _ => vec![args],
                };
                let m = mc.parent_meta([&cm, &am])?;
                let n = args.len() + 1;
                mc.node(Value::Call(callable, args), m, n)?
            }
            b'b' => {
                let (state, sm) = mc.pop()?;
                let (obj, om) = mc.pop()?;
                let m = mc.parent_meta([&om, &sm])?;
                mc.node(Value::Built(obj, state), m, 2)?
            }
            b'Q' => {
                let (pid, pm) = mc.pop()?;
                let m = mc.parent_meta([&pm])?;
                mc.node(Value::Persistent(pid), m, 1)?
            }
            other => {
                return Err(bad(
                    path,
                    format!(
                        "unsupported pickle opcode 0x{other:02x} at offset {} (not a weight file \
                         this reader understands)",
                        r.pos - 1
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> Limits {
        Limits {
            max_depth: 64,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn small_protocol4_dict() {
        // pickle.dumps({'a': (1, 2.5, b'xy'), 'b': [None, True]}, protocol=4)
        let data: &[u8] = b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01G@\x04\x00\x00\x00\x00\x00\x00C\x02xy\x94\x87\x94\x8c\x01b\x94]\x94(N\x88eu.";
        let v = load(data, Path::new("mem")).unwrap();
        let Value::Dict(items) = &*v else {
            panic!("not a dict")
        };
        let get = |k: &str| &items.iter().find(|(a, _)| a.as_str() == Some(k)).unwrap().1;
        let a = get("a").as_seq().unwrap();
        assert_eq!(*a[0], Value::Int(1));
        assert_eq!(*a[1], Value::Float(2.5));
        assert_eq!(*a[2], Value::Bytes(b"xy".to_vec()));
        assert_eq!(
            **get("b"),
            Value::List(vec![Rc::new(Value::None), Rc::new(Value::Bool(true))])
        );
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let data: &[u8] = b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K";
        assert!(matches!(
            load(data, Path::new("mem")),
            Err(Error::Malformed { .. })
        ));
        assert!(load(b"\xff\xfe", Path::new("mem")).is_err());
        assert!(load(b"", Path::new("mem")).is_err());
        // A MARK is not a value.
        assert!(matches!(
            load(b"\x80\x04(\x85.", Path::new("mem")),
            Err(Error::Malformed { .. })
        ));
    }

    /// `[]`, then 27 times `GET 0, GET 0, TUPLE2, PUT 0`: 199 bytes describing a value of
    /// 2^27 nodes (before sharing, the reader deep-copied on every GET and needed ~10 GB).
    fn doubling_pickle() -> Vec<u8> {
        let mut d = b"\x80\x04]\x94".to_vec();
        for _ in 0..27 {
            d.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        d.push(b'.');
        d
    }

    #[test]
    fn doubling_pickle_fails_fast_with_a_typed_error() {
        let data = doubling_pickle();
        assert!(data.len() <= 200, "{}", data.len());
        for (limits, what) in [
            (small(), "1 MiB"),
            (Limits::for_input(data.len()), "default"),
        ] {
            let e = load_with_limits(&data, Path::new("doubling.pkl"), limits).unwrap_err();
            let Error::Malformed { path, reason } = &e else {
                panic!("{what}: {e}")
            };
            assert_eq!(path, Path::new("doubling.pkl"));
            assert!(reason.contains("expands to more than"), "{what}: {reason}");
        }
        // Fewer doublings than the limit allows load, sharing one node per level.
        let mut ok = b"\x80\x04]\x94".to_vec();
        for _ in 0..8 {
            ok.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        ok.push(b'.');
        let v = load_with_limits(&ok, Path::new("m"), small()).unwrap();
        let Value::Tuple(t) = &*v else { panic!() };
        assert!(Rc::ptr_eq(&t[0], &t[1]));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        // None wrapped in 1M one-tuples: built, then dropped recursively, it overflowed the stack.
        let mut d = b"\x80\x04N".to_vec();
        d.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        d.push(b'.');
        let e = load(&d, Path::new("deep.pkl")).unwrap_err();
        assert!(
            matches!(&e, Error::Malformed { reason, .. } if reason.contains("deeper than 256")),
            "{e}"
        );
        // The same through lists and APPEND.
        let mut d = b"\x80\x04".to_vec();
        d.extend(std::iter::repeat_n(b']', 100));
        d.extend(std::iter::repeat_n(b'a', 99));
        d.push(b'.');
        let e = load_with_limits(&d, Path::new("deep.pkl"), small()).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        // Within the depth limit it loads.
        let mut d = b"\x80\x04N".to_vec();
        d.extend(std::iter::repeat_n(0x85u8, 60));
        d.push(b'.');
        load_with_limits(&d, Path::new("ok.pkl"), small()).unwrap();
    }

    #[test]
    fn memory_is_bounded_without_sharing_tricks() {
        // A shared list copied on every append: GET the memoised list, append, PUT it back.
        let mut d = b"\x80\x04]\x94".to_vec();
        for _ in 0..2000 {
            d.extend_from_slice(b"(K\x01K\x02K\x03K\x04K\x05e");
        }
        d.extend_from_slice(b"q\x00");
        for _ in 0..20_000 {
            d.extend_from_slice(b"h\x00K\x01aq\x00");
        }
        d.push(b'.');
        let e = load_with_limits(&d, Path::new("grow.pkl"), small()).unwrap_err();
        assert!(
            matches!(&e, Error::Malformed { reason, .. } if reason.contains("bytes of memory")),
            "{e}"
        );
        // A bytes payload larger than the limit.
        let mut d = b"\x80\x04B".to_vec();
        d.extend_from_slice(&(2u32 << 20).to_le_bytes());
        d.extend(std::iter::repeat_n(0u8, 2 << 20));
        d.push(b'.');
        assert!(load_with_limits(&d, Path::new("big.pkl"), small()).is_err());
        assert!(load(&d, Path::new("big.pkl")).is_ok());
    }

    #[test]
    fn memo_keeps_the_value_as_memoised() {
        // d = {}; memo; d['k'] = 1; then GET 0 is the empty dict (the loaders rely on the
        // pre-BUILD snapshot of memoised numpy dtypes).
        let data: &[u8] = b"\x80\x04}\x94\x8c\x01k\x94K\x01sh\x00\x86.";
        let v = load(data, Path::new("mem")).unwrap();
        let t = v.as_seq().unwrap();
        assert!(matches!(&*t[0], Value::Dict(d) if d.len() == 1));
        assert!(matches!(&*t[1], Value::Dict(d) if d.is_empty()));
    }

    /// Pickle-ish programs: random bytes biased towards the opcodes this reader knows.
    fn program() -> impl Strategy<Value = Vec<u8>> {
        let op = prop_oneof![
            Just(b'('),
            Just(b'}'),
            Just(b']'),
            Just(b')'),
            Just(b'N'),
            Just(b't'),
            Just(b'l'),
            Just(b'd'),
            Just(b'a'),
            Just(b'e'),
            Just(b's'),
            Just(b'u'),
            Just(b'R'),
            Just(b'b'),
            Just(b'Q'),
            Just(0x81u8),
            Just(0x85u8),
            Just(0x86u8),
            Just(0x87u8),
            Just(0x93u8),
            Just(0x94u8),
            Just(b'K'),
            Just(b'h'),
            Just(b'q'),
            Just(0x8cu8),
            any::<u8>(),
        ];
        proptest::collection::vec(op, 0..300).prop_map(|mut v| {
            let mut out = b"\x80\x04".to_vec();
            out.append(&mut v);
            out.push(b'.');
            out
        })
    }

    proptest! {
        #![proptest_config(video_testkit::proptest_config(512))]

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = load_with_limits(&bytes, Path::new("fuzz.pkl"), small());
        }

        #[test]
        fn never_panics_on_opcode_soup(bytes in program()) {
            let _ = load_with_limits(&bytes, Path::new("fuzz.pkl"), small());
        }
    }
}
