//! A pickle reader that only rebuilds tensors and plain containers, never runs anything.
//!
//! PyTorch's `torch.save` writes a pickle (protocol 2) whose objects are dicts, lists, tuples,
//! numbers, strings and tensors; a tensor is `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, ...)` where the storage comes from a persistent id
//! `("storage", torch.FloatStorage, key, location, numel)`. Python's unpickler would import and
//! call any global a file names (`os.system` included), which is how a malicious `.ckpt` runs
//! code. Here globals are matched against a short allow-list and only *described*: an allowed
//! call is interpreted by this module, anything else is an error naming the global.

use std::collections::HashMap;

use candle_core::DType;

/// A decoding failure, in words; the caller adds the file name.
pub(crate) type PickleResult<T> = std::result::Result<T, String>;

/// The storage a tensor views, as named by the persistent id.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StorageRef {
    /// The record key (`archive/data/<key>` in the zip format).
    pub key: String,
    /// Element type of the storage.
    pub dtype: DType,
    /// Elements in the storage, as the pickle claims (checked against the data later).
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    /// Offset of the first element, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// A global the allow-list knows, held as a description, never resolved to code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    /// `torch.FloatStorage` and friends: only used inside persistent ids to give the dtype.
    StorageType(DType),
}

/// What a safe pickle can hold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for i64 (torch's legacy magic number), little-endian two's complement.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage(StorageRef),
    Tensor(TensorRef),
}

/// Torch's storage classes by name; `torch.CharStorage` (int8) has no candle dtype.
fn storage_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "DoubleStorage" => DType::F64,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" => DType::U8,
        _ => return None,
    })
}

fn allowed_global(module: &str, name: &str) -> PickleResult<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", storage) if storage_dtype(storage).is_some() => Ok(Global::StorageType(
            storage_dtype(storage).unwrap_or(DType::U8),
        )),
        _ => Err(format!(
            "the pickle refers to `{module}.{name}`, which is not a tensor or a plain container; \
             refusing to load it (nothing was executed)"
        )),
    }
}

/// How deep containers may nest. torch state dicts nest a handful of levels; a hostile file
/// nesting thousands deep would overflow the stack when the value is dropped or walked.
pub(crate) const MAX_DEPTH: usize = 100;

/// Fails when putting `items` into a container would nest values deeper than [`MAX_DEPTH`].
/// Walks with its own stack (never recursion), stopping at the limit.
fn check_depth(items: &[Value]) -> PickleResult<()> {
    let mut todo: Vec<(&Value, usize)> = items.iter().map(|v| (v, 2)).collect();
    while let Some((value, depth)) = todo.pop() {
        let before = todo.len();
        match value {
            Value::Tuple(v) | Value::List(v) => todo.extend(v.iter().map(|c| (c, depth + 1))),
            Value::Dict(pairs) => todo.extend(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [(k, depth + 1), (v, depth + 1)]),
            ),
            _ => {}
        }
        if todo.len() > before && depth >= MAX_DEPTH {
            return Err(format!(
                "the pickle nests containers more than {MAX_DEPTH} deep; refusing to read it"
            ));
        }
    }
    Ok(())
}

/// Reads one pickle from the start of `data`; returns the object and the bytes consumed.
pub(crate) fn read(data: &[u8]) -> PickleResult<(Value, usize)> {
    let mut machine = Machine {
        input: data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copied: 0,
    };
    let value = machine.run()?;
    Ok((value, machine.pos))
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    // Containers are memoized by value: torch pickles never mutate a container after a later
    // reference to it, so copies are indistinguishable from shared objects here.
    memo: HashMap<u32, Value>,
    /// Values copied so far by memo writes, memo reads and DUP (see [`MAX_COPIED_VALUES`]).
    copied: usize,
}

/// How many values memo writes, memo reads and DUP may copy in all. Copies are deep, so a
/// hostile pickle that appends a list to itself through the memo doubles its size per step (a
/// 329-byte file asked for terabytes); a real state dict copies a few values per tensor, so a
/// million covers checkpoints of 100 000 tensors.
const MAX_COPIED_VALUES: usize = 1_000_000;

/// Counts a copy of `value` against [`MAX_COPIED_VALUES`] (before it is made).
fn charge_copy(copied: &mut usize, value: &Value) -> PickleResult<()> {
    let left = MAX_COPIED_VALUES.saturating_sub(*copied);
    let n = count_values(value, left);
    if n > left {
        return Err(format!(
            "the pickle copies more than {MAX_COPIED_VALUES} values through its memo or DUP; \
             refusing to read it"
        ));
    }
    *copied += n;
    Ok(())
}

/// The number of values in `v`, counting `v` (stops counting past `limit`).
fn count_values(v: &Value, limit: usize) -> usize {
    let mut n = 1;
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Tuple(items) | Value::List(items) => Box::new(items.iter()),
        Value::Dict(pairs) => Box::new(pairs.iter().flat_map(|(k, v)| [k, v])),
        _ => return 1,
    };
    for child in children {
        if n > limit {
            break;
        }
        n += count_values(child, limit - n);
    }
    n
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> PickleResult<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.input.len())
            .ok_or_else(|| {
                format!(
                    "the pickle ends early (wanted {n} bytes at offset {} of {})",
                    self.pos,
                    self.input.len()
                )
            })?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> PickleResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> PickleResult<[u8; N]> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn line(&mut self) -> PickleResult<String> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("the pickle ends inside a text line")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn utf8(&mut self, n: usize) -> PickleResult<Value> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map(Value::Str)
            .map_err(|_| "a pickle string is not UTF-8".to_string())
    }

    fn len_u64(&mut self) -> PickleResult<usize> {
        usize::try_from(u64::from_le_bytes(self.le()?))
            .map_err(|_| "a pickle length does not fit in memory".to_string())
    }

    fn pop(&mut self) -> PickleResult<Value> {
        if self.marks.last().is_some_and(|m| *m >= self.stack.len()) {
            return Err("the pickle pops past a mark".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "the pickle pops an empty stack".into())
    }

    fn pop_mark(&mut self) -> PickleResult<Vec<Value>> {
        let mark = self.marks.pop().ok_or("the pickle has no mark to pop to")?;
        if mark > self.stack.len() {
            return Err("the pickle's mark is past the stack".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> PickleResult<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| "the pickle uses an empty stack".into())
    }

    fn memo_put(&mut self, index: u32) -> PickleResult<()> {
        let value = self
            .stack
            .last()
            .ok_or("the pickle memoizes an empty stack")?;
        charge_copy(&mut self.copied, value)?;
        let value = value.clone();
        self.memo.insert(index, value);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> PickleResult<()> {
        let value = self.memo.get(&index).ok_or_else(|| {
            format!("the pickle refers to memo entry {index}, which was never set")
        })?;
        charge_copy(&mut self.copied, value)?;
        let value = value.clone();
        self.stack.push(value);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> PickleResult<()> {
        if !items.len().is_multiple_of(2) {
            return Err("the pickle sets a dict item without a value".into());
        }
        check_depth(&items)?;
        let Value::Dict(dict) = self.top()? else {
            return Err("the pickle sets items on something that is not a dict".into());
        };
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            dict.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> PickleResult<()> {
        check_depth(&items)?;
        match self.top()? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            _ => Err("the pickle appends to something that is not a list".into()),
        }
    }

    fn run(&mut self) -> PickleResult<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("pickle protocol {proto} is not supported"));
                    }
                }
                0x95 => {
                    self.le::<8>()?; // FRAME: a size hint only
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.stack.last().ok_or("the pickle uses an empty stack")?;
                    charge_copy(&mut self.copied, top)?;
                    let top = top.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'I' => {
                    let text = self.line()?;
                    let value = match text.as_str() {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        t => Value::Int(t.parse().map_err(|_| format!("bad INT {t:?} in pickle"))?),
                    };
                    self.stack.push(value);
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        u32::from_le_bytes(self.le()?) as usize
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(long_value(bytes));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?) as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(s);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.utf8(n)?;
                    self.stack.push(s);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let s = self.utf8(n)?;
                    self.stack.push(s);
                }
                b'T' | b'U' | b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'T' | b'B' => u32::from_le_bytes(self.le()?) as usize,
                        0x8e => self.len_u64()?,
                        _ => self.u8()? as usize,
                    };
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(match op {
                        // Python 2 strings: text for every key a checkpoint uses.
                        b'T' | b'U' => Value::Str(String::from_utf8_lossy(&bytes).into_owned()),
                        _ => Value::Bytes(bytes),
                    });
                }
                b']' => self.stack.push(Value::List(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    check_depth(&items)?;
                    self.stack.push(Value::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append(vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    check_depth(&items)?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                        return Err("the pickle builds a tuple from too few items".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    check_depth(&items)?;
                    self.stack.push(Value::Tuple(items));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let i = self.u8()?.into();
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = u32::from_le_bytes(self.le()?);
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| "pickle memo overflow")?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?.into();
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = u32::from_le_bytes(self.le()?);
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(allowed_global(&module, &name)?));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err("STACK_GLOBAL needs two strings".into());
                    };
                    self.stack
                        .push(Value::Global(allowed_global(&module, &name)?));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(Value::Storage(storage_from_pid(pid)?));
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(call(callable, args)?);
                }
                b'b' => {
                    // BUILD sets attributes: an OrderedDict's `_metadata`, a tensor's hooks.
                    // Neither matters for the weights, so the state is dropped unread.
                    self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        _ => return Err("the pickle sets state on an object it cannot hold".into()),
                    }
                }
                _ => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{op:02x} ({}) at offset {at}",
                        opcode_name(op)
                    ))
                }
            }
        }
    }
}

fn long_value(bytes: Vec<u8>) -> Value {
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut full = [if negative { 0xff } else { 0 }; 8];
        full[..bytes.len()].copy_from_slice(&bytes);
        Value::Int(i64::from_le_bytes(full))
    } else {
        Value::BigInt(bytes)
    }
}

fn as_usize(value: &Value, what: &str) -> PickleResult<usize> {
    match value {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is negative: {i}")),
        other => Err(format!("{what} should be an integer, not {other:?}")),
    }
}

fn as_usizes(value: &Value, what: &str) -> PickleResult<Vec<usize>> {
    match value {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|v| as_usize(v, what)).collect()
        }
        other => Err(format!("{what} should be a tuple, not {other:?}")),
    }
}

fn storage_from_pid(pid: Value) -> PickleResult<StorageRef> {
    let Value::Tuple(items) = pid else {
        return Err(format!("unsupported persistent id {pid:?}"));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::StorageType(dtype)), Value::Str(key), _location, numel, rest @ ..]
            if tag == "storage" =>
        {
            if rest.iter().any(|v| *v != Value::None) {
                return Err("storage views (torch < 1.0 legacy files) are not supported".into());
            }
            Ok(StorageRef {
                key: key.clone(),
                dtype: *dtype,
                numel: as_usize(numel, "a storage size")?,
            })
        }
        _ => Err(format!("unsupported persistent id {items:?}")),
    }
}

/// Interprets a call to an allowed global.
fn call(callable: Value, args: Value) -> PickleResult<Value> {
    let Value::Tuple(args) = args else {
        return Err("a pickle call's arguments are not a tuple".into());
    };
    match callable {
        Value::Global(Global::OrderedDict) if args.is_empty() => Ok(Value::Dict(Vec::new())),
        Value::Global(Global::RebuildParameter) => match args.into_iter().next() {
            Some(tensor @ Value::Tensor(_)) => Ok(tensor),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Value::Global(Global::RebuildTensorV2) => {
            let [Value::Storage(storage), offset, shape, stride, ..] = args.as_slice() else {
                return Err("_rebuild_tensor_v2 with unexpected arguments".into());
            };
            let shape = as_usizes(shape, "a tensor size")?;
            let stride = as_usizes(stride, "a tensor stride")?;
            if shape.len() != stride.len() {
                return Err(format!(
                    "tensor size {shape:?} and stride {stride:?} differ in rank"
                ));
            }
            Ok(Value::Tensor(TensorRef {
                storage: storage.clone(),
                offset: as_usize(offset, "a storage offset")?,
                shape,
                stride,
            }))
        }
        other => Err(format!(
            "the pickle calls {other:?}, which this reader does not allow"
        )),
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'i' => "INST",
        b'o' => "OBJ",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'F' => "FLOAT",
        b'L' => "LONG",
        b'g' => "GET",
        b'p' => "PUT",
        0x82..=0x84 => "EXT",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_containers() {
        // pickle.dumps({"a": [1, 2.5, None], "b": (True, "x")}, protocol=2)
        let data =
            b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01G@\x04\x00\x00\x00\x00\x00\x00Ne\
X\x01\x00\x00\x00bq\x03\x88X\x01\x00\x00\x00xq\x04\x86q\x05u.";
        let (value, used) = read(data).unwrap();
        assert_eq!(used, data.len());
        let expected = Value::Dict(vec![
            (
                Value::Str("a".into()),
                Value::List(vec![Value::Int(1), Value::Float(2.5), Value::None]),
            ),
            (
                Value::Str("b".into()),
                Value::Tuple(vec![Value::Bool(true), Value::Str("x".into())]),
            ),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn refuses_unknown_globals_by_name() {
        // pickle.dumps(os.system) at protocol 2: c posix\nsystem\n
        let err = read(b"\x80\x02cposix\nsystem\nq\x00.").unwrap_err();
        assert!(err.contains("posix.system"), "{err}");
    }

    #[test]
    fn refuses_unknown_opcodes_and_truncation() {
        assert!(read(b"\x80\x02\x81.").unwrap_err().contains("NEWOBJ"));
        assert!(read(b"\x80\x02X\x05\x00\x00\x00ab")
            .unwrap_err()
            .contains("ends early"));
        assert!(read(b"\x80\x02").unwrap_err().contains("ends early"));
        assert!(read(b"0").unwrap_err().contains("empty stack"));
    }

    #[test]
    fn refuses_deep_nesting_without_overflowing() {
        // The hostile file of issue 15: 30,000 empty lists appended into each other.
        let mut data = b"\x80\x02".to_vec();
        data.extend(std::iter::repeat_n(b']', 30_000));
        data.extend(std::iter::repeat_n(b'a', 29_999));
        data.push(b'.');
        assert!(read(&data).unwrap_err().contains("deep"));
        // Tuples and dicts too.
        let mut data = b"\x80\x02".to_vec();
        data.extend(std::iter::repeat_n(b')', 1));
        data.extend(std::iter::repeat_n(b"\x85", 30_000).flatten());
        data.push(b'.');
        assert!(read(&data).unwrap_err().contains("deep"));
        // Shallow nesting still reads.
        let mut data = b"\x80\x02".to_vec();
        data.extend(std::iter::repeat_n(b']', 50));
        data.extend(std::iter::repeat_n(b'a', 49));
        data.push(b'.');
        assert!(read(&data).is_ok());
    }

    #[test]
    fn wide_longs() {
        assert_eq!(long_value(vec![0xff]), Value::Int(-1));
        assert_eq!(long_value(vec![0x10, 0x27]), Value::Int(10000));
        assert!(matches!(long_value(vec![1; 10]), Value::BigInt(_)));
    }
}
