//! A small, safe Python pickle reader (protocols 2–5), enough for the two weight files the
//! feature networks ship in: a TorchScript archive's `data.pkl` (module objects built with
//! `NEWOBJ` + `BUILD`, tensors through `torch._utils._rebuild_tensor_v2` and `BINPERSID`) and
//! a pickle of nested dicts of `numpy.ndarray`s (`_reconstruct` + `BUILD` with raw bytes).
//!
//! Nothing is executed: globals become [`Value::Global`] names, calls become
//! [`Value::Call`] records and `BUILD` becomes [`Value::Built`]; the loaders in
//! [`crate::weights`] interpret the few shapes they expect. Every malformed or unknown input is
//! an error, never a panic (bounds are checked on every read).

use std::collections::HashMap;
use std::path::Path;

use vidgen_video_core::{Error, Result};

/// One unpickled value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name` of a `GLOBAL` / `STACK_GLOBAL`.
    Global(String, String),
    /// `callable(*args)` from `REDUCE` or `NEWOBJ`.
    Call(Box<Value>, Vec<Value>),
    /// `obj.__setstate__(state)` from `BUILD`.
    Built(Box<Value>, Box<Value>),
    /// A persistent id (`BINPERSID`), e.g. a torch storage reference.
    Persistent(Box<Value>),
    Mark,
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
    pub(crate) fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
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

/// Unpickles `data` (the contents of `path`, named in errors).
pub(crate) fn load(data: &[u8], path: &Path) -> Result<Value> {
    let mut r = Reader { data, pos: 0, path };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u64, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>, path: &Path| -> Result<Value> {
        stack
            .pop()
            .ok_or_else(|| bad(path, "pickle stack underflow"))
    };
    let pop_mark = |stack: &mut Vec<Value>, path: &Path| -> Result<Vec<Value>> {
        let i = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| bad(path, "pickle MARK not found"))?;
        let items = stack.split_off(i + 1);
        stack.pop();
        Ok(items)
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
            b'.' => return pop(&mut stack, path),
            b'(' => stack.push(Value::Mark),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => {
                let v = r.u8()?;
                stack.push(Value::Int(i64::from(v)))
            }
            b'M' => {
                let v = r.u16()?;
                stack.push(Value::Int(i64::from(v)))
            }
            b'J' => {
                let v = r.u32()? as i32;
                stack.push(Value::Int(i64::from(v)))
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
                stack.push(Value::Int(v))
            }
            b'G' => {
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                stack.push(Value::Float(f64::from_be_bytes(a)))
            }
            0x8c => {
                let n = usize::from(r.u8()?);
                let s = r.utf8(n)?;
                stack.push(Value::Str(s))
            }
            b'X' => {
                let n = r.u32()? as usize;
                let s = r.utf8(n)?;
                stack.push(Value::Str(s))
            }
            0x8d => {
                let n = usize_of(r.u64()?, path)?;
                let s = r.utf8(n)?;
                stack.push(Value::Str(s))
            }
            b'U' => {
                let n = usize::from(r.u8()?);
                let s = String::from_utf8_lossy(r.take(n)?).into_owned();
                stack.push(Value::Str(s))
            }
            b'T' => {
                let n = r.u32()? as usize;
                let s = String::from_utf8_lossy(r.take(n)?).into_owned();
                stack.push(Value::Str(s))
            }
            b'C' => {
                let n = usize::from(r.u8()?);
                stack.push(Value::Bytes(r.take(n)?.to_vec()))
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()))
            }
            0x8e => {
                let n = usize_of(r.u64()?, path)?;
                stack.push(Value::Bytes(r.take(n)?.to_vec()))
            }
            b't' => {
                let items = pop_mark(&mut stack, path)?;
                stack.push(Value::Tuple(items))
            }
            0x85 => {
                let a = pop(&mut stack, path)?;
                stack.push(Value::Tuple(vec![a]))
            }
            0x86 => {
                let b = pop(&mut stack, path)?;
                let a = pop(&mut stack, path)?;
                stack.push(Value::Tuple(vec![a, b]))
            }
            0x87 => {
                let c = pop(&mut stack, path)?;
                let b = pop(&mut stack, path)?;
                let a = pop(&mut stack, path)?;
                stack.push(Value::Tuple(vec![a, b, c]))
            }
            b'l' => {
                let items = pop_mark(&mut stack, path)?;
                stack.push(Value::List(items))
            }
            b'd' => {
                let items = pop_mark(&mut stack, path)?;
                stack.push(Value::Dict(pairs(items, path)?))
            }
            b'a' => {
                let v = pop(&mut stack, path)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err(bad(path, "pickle APPEND on a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, path)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(bad(path, "pickle APPENDS on a non-list")),
                }
            }
            b's' => {
                let v = pop(&mut stack, path)?;
                let k = pop(&mut stack, path)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return Err(bad(path, "pickle SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, path)?;
                let kv = pairs(items, path)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(kv),
                    _ => return Err(bad(path, "pickle SETITEMS on a non-dict")),
                }
            }
            0x94 => {
                let top = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| bad(path, "pickle MEMOIZE on an empty stack"))?;
                let id = memo.len() as u64;
                memo.insert(id, top);
            }
            b'q' | b'r' => {
                let id = if op == b'q' {
                    u64::from(r.u8()?)
                } else {
                    u64::from(r.u32()?)
                };
                let top = stack
                    .last()
                    .cloned()
                    .ok_or_else(|| bad(path, "pickle PUT on an empty stack"))?;
                memo.insert(id, top);
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    u64::from(r.u8()?)
                } else {
                    u64::from(r.u32()?)
                };
                let v = memo
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| bad(path, format!("pickle memo {id} missing")))?;
                stack.push(v)
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Value::Global(module, name))
            }
            0x93 => {
                let name = pop(&mut stack, path)?;
                let module = pop(&mut stack, path)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(m, n)),
                    _ => return Err(bad(path, "pickle STACK_GLOBAL without two strings")),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack, path)?;
                let callable = pop(&mut stack, path)?;
                let args = match args {
                    Value::Tuple(a) => a,
                    other => vec![other],
                };
                stack.push(Value::Call(Box::new(callable), args))
            }
            b'b' => {
                let state = pop(&mut stack, path)?;
                let obj = pop(&mut stack, path)?;
                stack.push(Value::Built(Box::new(obj), Box::new(state)))
            }
            b'Q' => {
                let pid = pop(&mut stack, path)?;
                stack.push(Value::Persistent(Box::new(pid)))
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

fn pairs(items: Vec<Value>, path: &Path) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        return Err(bad(path, "pickle dict with an odd number of items"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn small_protocol4_dict() {
        // pickle.dumps({'a': (1, 2.5, b'xy'), 'b': [None, True]}, protocol=4)
        let data: &[u8] = b"\x80\x04\x95\x22\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01G@\x04\x00\x00\x00\x00\x00\x00C\x02xy\x94\x87\x94\x8c\x01b\x94]\x94(N\x88eu.";
        let v = load(data, Path::new("mem")).unwrap();
        let Value::Dict(items) = &v else {
            panic!("not a dict")
        };
        let get = |k: &str| &items.iter().find(|(a, _)| a.as_str() == Some(k)).unwrap().1;
        let a = get("a").as_seq().unwrap();
        assert_eq!(a[0], Value::Int(1));
        assert_eq!(a[1], Value::Float(2.5));
        assert_eq!(a[2], Value::Bytes(b"xy".to_vec()));
        assert_eq!(get("b"), &Value::List(vec![Value::None, Value::Bool(true)]));
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
    }
}
