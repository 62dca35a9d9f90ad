//! A database call's rows, decoded straight into QuickJS values.
//!
//! Large results reach the guest as batches written by the portal with serde_json, each a JSON
//! array whose first element is the array of the column names and whose other elements are the
//! rows, each an array of its values in column order: `[["id","name"],[1,"a"],[2,"b"]]`. Each
//! row becomes the object `JSON.parse` would make of `{"id":1,"name":"a"}`. The names become
//! atoms once per batch (and are looked up in a cache kept for the call), integers are read
//! without `strtod`, and the rows of every batch are gathered for the call and made into the one
//! array the script gets when it ends, so no per-batch arrays are concatenated and no row goes
//! through an array's property definition.
//!
//! The rows of a call share their columns: a row is made with the shape of the row before it by
//! the vendored QuickJS's `JS_NewObjectLike`, which writes the values in place, where defining
//! the properties one by one would look up and extend the shape key by key, row after row. The
//! first row of a call, and every row when a name repeats, is built key by key.
//!
//! The values are exactly those `JSON.parse` makes of the row as an object: properties are
//! defined (not assigned, so a `__proto__` column is an own property), a later column of the
//! same name wins in the earlier one's place, numbers are correctly rounded. Whatever this
//! reader does not take (malformed input, a lone surrogate escape, nesting deeper than
//! [`MAX_DEPTH`], a row whose values do not match the names one for one) sends the whole batch
//! to QuickJS's own `JSON.parse` instead, and the rows are made from what it read; input that is
//! not JSON throws its usual `SyntaxError`.

use std::cell::RefCell;
use std::ffi::c_char;

use rquickjs::{Array, Ctx, qjs};

use crate::heap;

unsafe extern "C" {
    /// Added to the vendored QuickJS (`sandbox/guest/vendor/rquickjs-sys`): a new object with
    /// the shape of `model` if that is an ordinary object whose own properties are exactly the
    /// plain data properties `atoms`, in order, with `values` as their values. 1: made, in
    /// `*object`, the values taken; 0: `model` is not such an object, the values untouched;
    /// -1: an exception is pending, the values freed.
    fn JS_NewObjectLike(
        ctx: *mut qjs::JSContext,
        model: qjs::JSValue,
        count: i32,
        atoms: *const qjs::JSAtom,
        values: *mut qjs::JSValue,
        object: *mut qjs::JSValue,
    ) -> i32;
}

/// Defines `atom` on `object` as a plain data property holding `value` (one reference, taken
/// whatever happens), as `JSON.parse` does: a later duplicate key replaces the earlier one.
fn define(
    ctx: *mut qjs::JSContext,
    object: qjs::JSValue,
    atom: qjs::JSAtom,
    value: qjs::JSValue,
) -> Step<()> {
    // SAFETY: `object` is a live object and `atom` a live atom of this context; the call takes
    // the value's reference.
    let done =
        unsafe { qjs::JS_DefinePropertyValue(ctx, object, atom, value, qjs::JS_PROP_C_W_E as _) };
    if done < 0 { Err(Stop::Thrown) } else { Ok(()) }
}

/// Nesting (arrays and objects inside a row) this reader follows before handing the batch over.
const MAX_DEPTH: usize = 64;
/// Distinct keys kept as atoms for the rest of a call; further keys are looked up each time.
const MAX_CACHED_KEYS: usize = 256;

/// Why the reader stopped before the end of a batch.
enum Stop {
    /// Input it does not take: `JSON.parse` reads the batch instead.
    Unsupported,
    /// QuickJS threw (out of memory, say); the exception is pending in the context.
    Thrown,
}

type Step<T> = Result<T, Stop>;

/// The atoms of the column names (and nested keys) seen in one call's batches, and the last row
/// built key by key (the model the next rows with the same columns are made from), released when
/// the call is over.
pub struct Keys {
    ctx: *mut qjs::JSContext,
    atoms: Vec<(Box<[u8]>, qjs::JSAtom)>,
    /// One reference to a row, or `JS_UNDEFINED`.
    model: qjs::JSValue,
}

impl Keys {
    pub fn new(ctx: &Ctx<'_>) -> Self {
        Self {
            ctx: ctx.as_raw().as_ptr(),
            atoms: Vec::new(),
            model: qjs::JS_UNDEFINED,
        }
    }

    /// Makes `row` the model of the rows to come.
    fn set_model(&mut self, row: &Owned) {
        // SAFETY: `row` is a live value of this context; the new reference is held until the
        // model is replaced or the call is over, and the old one released once here.
        unsafe {
            let old = std::mem::replace(&mut self.model, qjs::JS_DupValue(self.ctx, row.value));
            qjs::JS_FreeValue(self.ctx, old);
        }
    }

    /// The atom of `key` (UTF-8), the `index`th of its object or of the batch's column names,
    /// and whether the caller must free it. Keys are cached in the order they first come, so each
    /// batch's column names are found at their own index without a search.
    fn atom(&mut self, key: &[u8], index: usize) -> Step<(qjs::JSAtom, bool)> {
        if let Some((k, atom)) = self.atoms.get(index)
            && **k == *key
        {
            return Ok((*atom, false));
        }
        if let Some((_, atom)) = self.atoms.iter().find(|(k, _)| **k == *key) {
            return Ok((*atom, false));
        }
        // SAFETY: `key` is valid for `key.len()` bytes; the context outlives `self`.
        let atom =
            unsafe { qjs::JS_NewAtomLen(self.ctx, key.as_ptr().cast::<c_char>(), key.len() as _) };
        if atom == qjs::JS_ATOM_NULL {
            return Err(Stop::Thrown);
        }
        if self.atoms.len() < MAX_CACHED_KEYS {
            self.atoms.push((key.into(), atom));
            Ok((atom, false))
        } else {
            Ok((atom, true))
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // SAFETY: the one reference this holds (freeing `JS_UNDEFINED` does nothing).
        unsafe { qjs::JS_FreeValue(self.ctx, self.model) };
        for (_, atom) in self.atoms.drain(..) {
            // SAFETY: each atom was made by `JS_NewAtomLen` in this context and is freed once.
            unsafe { qjs::JS_FreeAtom(self.ctx, atom) };
        }
    }
}

/// A value this reader made and still owns.
struct Owned {
    ctx: *mut qjs::JSContext,
    value: qjs::JSValue,
}

impl Owned {
    fn new(ctx: *mut qjs::JSContext, value: qjs::JSValue) -> Step<Self> {
        // SAFETY: a tag check.
        if unsafe { qjs::JS_IsException(value) } {
            Err(Stop::Thrown)
        } else {
            Ok(Self { ctx, value })
        }
    }

    /// Hands the value (and its reference) to a QuickJS call that takes ownership.
    fn give(self) -> qjs::JSValue {
        let value = self.value;
        std::mem::forget(self);
        value
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we hold one reference to the value, released once here.
        unsafe { qjs::JS_FreeValue(self.ctx, self.value) };
    }
}

/// The values of the row being read, until they become its object.
struct Fields {
    ctx: *mut qjs::JSContext,
    /// One reference each.
    values: Vec<qjs::JSValue>,
}

impl Fields {
    fn new(ctx: *mut qjs::JSContext) -> Self {
        Self {
            ctx,
            values: Vec::new(),
        }
    }

    /// Releases what is held and empties the list (keeping its room for the next row).
    fn clear(&mut self) {
        for value in self.values.drain(..) {
            // SAFETY: each value carries one reference, released once here.
            unsafe { qjs::JS_FreeValue(self.ctx, value) };
        }
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A call's rows as they are decoded, made into one array when the call is over: appending to
/// a JavaScript array row by row goes through QuickJS's general property definition for every
/// index, while [`Rows::into_array`] copies them in at once. Each value is held by one
/// reference, which QuickJS's cycle collector counts as a root, and released if the call fails.
/// The values sit in memory QuickJS allocates, so they count against the script's memory limit
/// as an array's elements do, and running out is the same catchable error.
pub struct Rows {
    ctx: *mut qjs::JSContext,
    values: *mut qjs::JSValue,
    len: usize,
    capacity: usize,
}

impl Rows {
    pub fn new(ctx: &Ctx<'_>) -> Self {
        Self {
            ctx: ctx.as_raw().as_ptr(),
            values: std::ptr::null_mut(),
            len: 0,
            capacity: 0,
        }
    }

    fn push(&mut self, value: Owned) -> Step<()> {
        if self.len == self.capacity {
            let capacity = self.capacity.saturating_mul(2).max(64);
            let bytes = capacity
                .checked_mul(size_of::<qjs::JSValue>())
                .and_then(|b| qjs::size_t::try_from(b).ok())
                .ok_or(Stop::Unsupported)?;
            // SAFETY: `values` is null or was allocated by QuickJS in this context; on failure
            // it is left as it was and an out-of-memory error is pending.
            let grown = unsafe { qjs::js_realloc(self.ctx, self.values.cast(), bytes) };
            if grown.is_null() {
                return Err(Stop::Thrown);
            }
            self.values = grown.cast();
            self.capacity = capacity;
        }
        // SAFETY: `len < capacity`, so the slot is inside the allocation.
        unsafe { self.values.add(self.len).write(value.give()) };
        self.len += 1;
        Ok(())
    }

    /// Releases the rows from `len` on.
    fn truncate(&mut self, len: usize) {
        while self.len > len {
            self.len -= 1;
            // SAFETY: each held value carries one reference, released once here.
            unsafe { qjs::JS_FreeValue(self.ctx, self.values.add(self.len).read()) };
        }
    }

    /// The rows as one array; `None` when there were none (no batches came).
    pub fn into_array<'js>(mut self, ctx: &Ctx<'js>) -> rquickjs::Result<Option<Array<'js>>> {
        if self.len == 0 {
            return Ok(None);
        }
        let count = i32::try_from(self.len)
            .map_err(|_| rquickjs::Exception::throw_range(ctx, "too many rows"))?;
        // The call takes every value, also when it fails.
        self.len = 0;
        // SAFETY: `values` holds `count` live values of this context, one reference each.
        let array = unsafe { qjs::JS_NewArrayFrom(self.ctx, count, self.values) };
        // SAFETY: a tag check.
        if unsafe { qjs::JS_IsException(array) } {
            return Err(rquickjs::Error::Exception);
        }
        // SAFETY: a new array of this context, whose one reference the wrapper takes.
        let array = unsafe { rquickjs::Value::from_raw(ctx.clone(), array) };
        Ok(array.into_array())
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        self.truncate(0);
        // SAFETY: null, or allocated by QuickJS in this context and freed once here.
        unsafe { qjs::js_free(self.ctx, self.values.cast()) };
    }
}

/// One reference to the rows array of a call, released when dropped.
struct Held {
    rt: *mut qjs::JSRuntime,
    array: qjs::JSValue,
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: the one reference `keep_latest` took, in a runtime that is still alive (the
        // guest never drops its runtime: it exits instead).
        unsafe { qjs::JS_FreeValueRT(self.rt, self.array) };
    }
}

thread_local! {
    /// The rows of the latest db call, while the guest's memory is under half its limit.
    static LATEST: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Whether the guest's memory has reached half the job's limit, from where no rows are held
/// (always, before the job: the limit is 0 until then).
fn memory_past_half() -> bool {
    heap::memory_bytes() >= heap::limit() / 2
}

/// Holds a reference to `rows`, the array the latest db call handed the script, until the next
/// call, or until the guest's memory reaches half its limit, or until the process exits.
///
/// A script nearly always ends holding its last result in a local (`const r = await
/// db.query(…)`), and the end of the script frees its locals: 100 000 rows took 4-5 ms to free,
/// one object at a time, before the outcome could go out, for a process about to exit anyway.
/// Held here, they are still referenced when the script's frame is freed, and the guest exits
/// right after its outcome. The price is that a script which drops its last result gets that
/// memory back at its next call rather than at its next `await` (QuickJS keeps an awaited value
/// until then anyway); so rows are held only while the guest's memory is under half of its
/// limit, and [`release_latest_if_large`] (run by QuickJS's interrupt handler, every ten
/// thousand or so steps of the script) lets them go once it grows past that.
pub fn keep_latest(ctx: &Ctx<'_>, rows: &Array<'_>) {
    if memory_past_half() {
        return;
    }
    // SAFETY: a new reference to a live value of this context, released by `Held`.
    let held = Held {
        rt: unsafe { qjs::JS_GetRuntime(ctx.as_raw().as_ptr()) },
        array: unsafe { qjs::JS_DupValue(ctx.as_raw().as_ptr(), rows.as_raw()) },
    };
    // The previous rows are dropped after the borrow ends: freeing them runs QuickJS code.
    drop(LATEST.with(|l| l.borrow_mut().replace(held)));
}

/// Lets go of the rows of the previous call (they are freed unless the script still holds
/// them).
pub fn release_latest() {
    drop(LATEST.with(|l| l.borrow_mut().take()));
}

/// Lets go of the held rows once the guest's memory has reached half its limit.
pub fn release_latest_if_large() {
    if memory_past_half() {
        release_latest();
    }
}

/// Appends the rows of `batch` (a JSON array) to `rows`.
pub fn append(
    ctx: &Ctx<'_>,
    rows: &mut Rows,
    batch: &[u8],
    keys: &mut Keys,
) -> rquickjs::Result<()> {
    let start = rows.len;
    let mut reader = Reader {
        ctx: ctx.as_raw().as_ptr(),
        bytes: batch,
        pos: 0,
        keys,
        scratch: Vec::new(),
        fields: Fields::new(ctx.as_raw().as_ptr()),
        columns: Columns {
            ctx: ctx.as_raw().as_ptr(),
            atoms: Vec::new(),
            own_atoms: Vec::new(),
        },
    };
    match reader.batch(rows) {
        Ok(()) => Ok(()),
        Err(Stop::Thrown) => Err(rquickjs::Error::Exception),
        Err(Stop::Unsupported) => {
            // QuickJS reads the batch instead, in place of any rows this reader appended.
            rows.truncate(start);
            append_parsed(ctx, rows, batch)
        }
    }
}

/// Appends the rows of `batch` as `JSON.parse` reads it (see [`append`]).
fn append_parsed(ctx: &Ctx<'_>, rows: &mut Rows, batch: &[u8]) -> rquickjs::Result<()> {
    let malformed = || {
        rquickjs::Exception::throw_type(
            ctx,
            "a batch of rows is not an array of column names and rows of values",
        )
    };
    let parsed = ctx.json_parse(batch)?;
    let Some(parsed) = parsed.as_array() else {
        return Err(malformed());
    };
    let mut items = parsed.iter::<rquickjs::Value>();
    let names = match items.next() {
        None => return Ok(()),
        Some(names) => names?,
    };
    let Some(names) = names.as_array() else {
        return Err(malformed());
    };
    let names = names
        .iter::<rquickjs::Value>()
        .map(|name| {
            let name = name?;
            if !name.is_string() {
                return Err(malformed());
            }
            rquickjs::Atom::from_value(ctx.clone(), &name)
        })
        .collect::<rquickjs::Result<Vec<_>>>()?;
    for row in items {
        let row = row?;
        let Some(values) = row.as_array() else {
            return Err(malformed());
        };
        if values.len() > names.len() {
            return Err(malformed());
        }
        let object = rquickjs::Object::new(ctx.clone())?;
        for (name, value) in names.iter().zip(values.iter::<rquickjs::Value>()) {
            let value = rquickjs::object::Property::from(value?)
                .writable()
                .enumerable()
                .configurable();
            object.prop(name.clone(), value)?;
        }
        // SAFETY: a new reference to a live value of this context, held by `rows`.
        let object = Owned {
            ctx: rows.ctx,
            value: unsafe { qjs::JS_DupValue(rows.ctx, object.as_raw()) },
        };
        match rows.push(object) {
            Ok(()) => {}
            Err(Stop::Thrown) => return Err(rquickjs::Error::Exception),
            Err(Stop::Unsupported) => {
                return Err(rquickjs::Exception::throw_range(ctx, "too many rows"));
            }
        }
    }
    Ok(())
}

struct Reader<'a> {
    ctx: *mut qjs::JSContext,
    bytes: &'a [u8],
    pos: usize,
    keys: &'a mut Keys,
    /// A string with escapes, decoded.
    scratch: Vec<u8>,
    /// The row being read.
    fields: Fields,
    /// The atoms of the batch's column names, in order.
    columns: Columns,
}

/// The atoms of a batch's column names; those made past the key cache are freed with it.
struct Columns {
    ctx: *mut qjs::JSContext,
    atoms: Vec<qjs::JSAtom>,
    own_atoms: Vec<qjs::JSAtom>,
}

impl Drop for Columns {
    fn drop(&mut self) {
        for atom in self.own_atoms.drain(..) {
            // SAFETY: made for this batch alone, freed once here.
            unsafe { qjs::JS_FreeAtom(self.ctx, atom) };
        }
    }
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` (after whitespace) or stops.
    fn expect(&mut self, byte: u8) -> Step<()> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Stop::Unsupported)
        }
    }

    /// `[` names `,` row `,` row … `]`, each row appended to `rows`.
    fn batch(&mut self, rows: &mut Rows) -> Step<()> {
        self.expect(b'[')?;
        self.members(b']', |reader, i| {
            if i == 0 {
                reader.names()
            } else {
                let row = reader.row()?;
                rows.push(row)
            }
        })?;
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Stop::Unsupported)
        }
    }

    /// `[` name `,` name … `]`: the batch's column names, as atoms.
    fn names(&mut self) -> Step<()> {
        self.expect(b'[')?;
        self.members(b']', |reader, i| {
            let (atom, owned) = reader.key(i)?;
            reader.columns.atoms.push(atom);
            if owned {
                reader.columns.own_atoms.push(atom);
            }
            Ok(())
        })
    }

    /// Members up to `close`, comma-separated, each read by `member` with its index; `pos` is
    /// just past the opening bracket.
    fn members(
        &mut self,
        close: u8,
        mut member: impl FnMut(&mut Self, usize) -> Step<()>,
    ) -> Step<()> {
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        let mut index = 0;
        loop {
            member(self, index)?;
            index += 1;
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Stop::Unsupported),
            }
        }
    }

    fn define_index(&mut self, array: qjs::JSValue, at: usize, value: Owned) -> Step<()> {
        let index = u32::try_from(at).map_err(|_| Stop::Unsupported)?;
        // SAFETY: `array` is a live array of this context; the call takes the value's reference.
        let done = unsafe {
            qjs::JS_DefinePropertyValueUint32(
                self.ctx,
                array,
                index,
                value.give(),
                qjs::JS_PROP_C_W_E as _,
            )
        };
        if done < 0 { Err(Stop::Thrown) } else { Ok(()) }
    }

    fn value(&mut self, depth: usize) -> Step<Owned> {
        self.skip_ws();
        let ctx = self.ctx;
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => {
                let text = self.string()?;
                let text = match text {
                    Some((from, to)) => &self.bytes[from..to],
                    None => &self.scratch[..],
                };
                // SAFETY: `text` is valid for its length; QuickJS copies it.
                Owned::new(ctx, unsafe {
                    qjs::JS_NewStringLen(ctx, text.as_ptr().cast::<c_char>(), text.len() as _)
                })
            }
            Some(b't') => self.literal(b"true", qjs::JS_TRUE),
            Some(b'f') => self.literal(b"false", qjs::JS_FALSE),
            Some(b'n') => self.literal(b"null", qjs::JS_NULL),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Stop::Unsupported),
        }
    }

    fn literal(&mut self, word: &[u8], value: qjs::JSValue) -> Step<Owned> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Owned::new(self.ctx, value)
        } else {
            Err(Stop::Unsupported)
        }
    }

    fn object(&mut self, depth: usize) -> Step<Owned> {
        if depth > MAX_DEPTH {
            return Err(Stop::Unsupported);
        }
        self.pos += 1;
        // SAFETY: a plain constructor call on a live context.
        let object = Owned::new(self.ctx, unsafe { qjs::JS_NewObject(self.ctx) })?;
        self.members(b'}', |reader, i| reader.property(object.value, i, depth))?;
        Ok(object)
    }

    /// A row: `[` value `,` value … `]`, one value per column, made into an object like the
    /// model when it has the model's keys, else built key by key and made the model.
    fn row(&mut self) -> Step<Owned> {
        self.expect(b'[')?;
        self.fields.clear();
        let width = self.columns.atoms.len();
        self.members(b']', |reader, i| {
            if i >= width {
                return Err(Stop::Unsupported);
            }
            let value = reader.value(1)?;
            reader.fields.values.push(value.give());
            Ok(())
        })?;
        if self.fields.values.len() != width {
            return Err(Stop::Unsupported);
        }
        let ctx = self.ctx;
        let atoms = &self.columns.atoms;
        let values = &mut self.fields.values;
        let count = i32::try_from(width).map_err(|_| Stop::Unsupported)?;
        let mut object = qjs::JS_UNDEFINED;
        // SAFETY: the model is a live value of this context (or undefined), the atoms live,
        // `count` is the length of both lists, and the call reports whether it took the values.
        let made = unsafe {
            JS_NewObjectLike(
                ctx,
                self.keys.model,
                count,
                atoms.as_ptr(),
                values.as_mut_ptr(),
                &mut object,
            )
        };
        match made {
            0 => {}
            1 => {
                // SAFETY: the object now holds the values' references.
                unsafe { values.set_len(0) };
                return Owned::new(ctx, object);
            }
            _ => {
                // SAFETY: QuickJS has released the values.
                unsafe { values.set_len(0) };
                return Err(Stop::Thrown);
            }
        }
        // SAFETY: a plain constructor call on a live context.
        let object = Owned::new(ctx, unsafe { qjs::JS_NewObject(ctx) })?;
        let mut values = values.drain(..);
        for (&atom, value) in atoms.iter().zip(values.by_ref()) {
            if let Err(stop) = define(ctx, object.value, atom, value) {
                for value in values {
                    // SAFETY: the values not yet given away, one reference each.
                    unsafe { qjs::JS_FreeValue(ctx, value) };
                }
                return Err(stop);
            }
        }
        drop(values);
        self.keys.set_model(&object);
        Ok(object)
    }

    /// A string (after whitespace), the `index`th key of its object or name of its batch, as
    /// an atom, and whether the caller must free it (see [`Keys::atom`]).
    fn key(&mut self, index: usize) -> Step<(qjs::JSAtom, bool)> {
        self.skip_ws();
        if self.peek() != Some(b'"') {
            return Err(Stop::Unsupported);
        }
        match self.string()? {
            Some((from, to)) => self.keys.atom(&self.bytes[from..to], index),
            None => self.keys.atom(&self.scratch, index),
        }
    }

    /// `"key": value`, the `index`th of its object: the key's atom (and whether the caller must
    /// free it) and the value.
    fn member(&mut self, index: usize, depth: usize) -> Step<((qjs::JSAtom, bool), Owned)> {
        let (atom, owned) = self.key(index)?;
        match self.expect(b':').and_then(|()| self.value(depth)) {
            Ok(value) => Ok(((atom, owned), value)),
            Err(stop) => {
                if owned {
                    // SAFETY: this atom was made for this key alone and is freed once.
                    unsafe { qjs::JS_FreeAtom(self.ctx, atom) };
                }
                Err(stop)
            }
        }
    }

    /// `"key": value`, the `index`th of its object, defined on `object`.
    fn property(&mut self, object: qjs::JSValue, index: usize, depth: usize) -> Step<()> {
        let ((atom, owned), value) = self.member(index, depth)?;
        let defined = define(self.ctx, object, atom, value.give());
        if owned {
            // SAFETY: this atom was made for this key alone and is freed once.
            unsafe { qjs::JS_FreeAtom(self.ctx, atom) };
        }
        defined
    }

    fn array(&mut self, depth: usize) -> Step<Owned> {
        if depth > MAX_DEPTH {
            return Err(Stop::Unsupported);
        }
        self.pos += 1;
        // SAFETY: a plain constructor call on a live context.
        let array = Owned::new(self.ctx, unsafe { qjs::JS_NewArray(self.ctx) })?;
        self.members(b']', |reader, i| {
            let value = reader.value(depth)?;
            reader.define_index(array.value, i, value)
        })?;
        Ok(array)
    }

    /// A JSON number, as `JSON.parse` reads it.
    fn number(&mut self) -> Step<Owned> {
        let b = self.bytes;
        let start = self.pos;
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        // One or more digits from `i`: the index after them.
        let digits = |mut i: usize| -> Step<usize> {
            if !digit(i) {
                return Err(Stop::Unsupported);
            }
            while digit(i) {
                i += 1;
            }
            Ok(i)
        };
        let mut i = start;
        let negative = b[i] == b'-';
        if negative {
            i += 1;
        }
        if b.get(i) == Some(&b'0') {
            i += 1;
            if digit(i) {
                return Err(Stop::Unsupported);
            }
        } else {
            i = digits(i)?;
        }
        let int_end = i;
        let mut integer = true;
        if b.get(i) == Some(&b'.') {
            i = digits(i + 1)?;
            integer = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            i = digits(i)?;
            integer = false;
        }
        self.pos = i;
        let first = start + usize::from(negative);
        let n = if integer && int_end - first <= 15 {
            // Below 10^15, exact in a double: no rounding to get wrong.
            let magnitude = b[first..int_end]
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0')) as f64;
            if negative { -magnitude } else { magnitude }
        } else {
            // ASCII by construction; Rust's parser rounds correctly, as strtod does.
            std::str::from_utf8(&b[start..i])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or(Stop::Unsupported)?
        };
        // Integral values that fit become QuickJS ints (-0 stays a double).
        Owned::new(self.ctx, qjs::JS_NewFloat64(n))
    }

    /// A string at `pos` (its opening quote): `Some(range)` of its bytes when it has no escapes,
    /// `None` when it had some and was decoded into `scratch`.
    fn string(&mut self) -> Step<Option<(usize, usize)>> {
        let from = self.pos + 1;
        let mut i = from;
        loop {
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(Some((from, i)));
                }
                Some(b'\\') => break,
                Some(&c) if c >= 0x20 => i += 1,
                _ => return Err(Stop::Unsupported),
            }
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.bytes[from..i]);
        loop {
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(None);
                }
                Some(b'\\') => {
                    let escaped = self.bytes.get(i + 1).ok_or(Stop::Unsupported)?;
                    i += 2;
                    let c = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let unit = self.hex4(i)?;
                            i += 4;
                            let code = match unit {
                                0xD800..=0xDBFF if self.bytes[i..].starts_with(b"\\u") => {
                                    let low = self.hex4(i + 2)?;
                                    if !(0xDC00..=0xDFFF).contains(&low) {
                                        return Err(Stop::Unsupported);
                                    }
                                    i += 6;
                                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                                }
                                // A lone surrogate: a JS string can hold it, UTF-8 cannot.
                                0xD800..=0xDFFF => return Err(Stop::Unsupported),
                                _ => unit,
                            };
                            char::from_u32(code).ok_or(Stop::Unsupported)?
                        }
                        _ => return Err(Stop::Unsupported),
                    };
                    let mut utf8 = [0u8; 4];
                    self.scratch
                        .extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
                Some(&c) if c >= 0x20 => {
                    self.scratch.push(c);
                    i += 1;
                }
                _ => return Err(Stop::Unsupported),
            }
        }
    }

    fn hex4(&self, at: usize) -> Step<u32> {
        let digits = self.bytes.get(at..at + 4).ok_or(Stop::Unsupported)?;
        digits.iter().try_fold(0u32, |n, &d| {
            let v = char::from(d).to_digit(16).ok_or(Stop::Unsupported)?;
            Ok(n * 16 + v)
        })
    }
}
