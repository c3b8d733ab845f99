//! The protocol's shapes over any JSON *tree*, without serde: [`Tree`] is a parsed JSON value
//! (JavaScript's, or `serde_json::Value`), [`FromTree`] reads a type from one and [`ToTree`]
//! writes one.
//!
//! Why a second codec beside serde's derive: the npm package's budget (40 KB of gzipped wasm).
//! serde_json in the wasm is a parser, exact float parsing, float formatting and a visitor per
//! type, ~40 KB on its own; the browser already has `JSON.parse` and `JSON.stringify`. The wasm
//! client reads the objects `JSON.parse` built and writes objects for `JSON.stringify` through
//! this module, and serde stays the codec of the server and of everything native.
//!
//! One codec must not drift from the other: `serde_json::Value` implements [`Tree`] too, and
//! `tests/tree_codec.rs` holds every reader and writer here to serde's derive over random values
//! and over every single-field mutation of them (removed, `null`, wrong type).
//!
//! Known difference: a JavaScript number does not remember how it was written, so an integer
//! field (`rev`, `memberCount`) accepts `2.0` here where serde_json wants `2`.
//!
//! - [`codec`]: the impls for the pushed types, playback state, requests, player and config types.

use crate::prelude::*;

mod codec;

pub use codec::frame;

use serde_json::{Number, Value};

/// A parsed JSON value. Readers return `None` for a value of another type; `field` returns
/// `None` for a missing key (and, in JavaScript, for an `undefined` one: `JSON.stringify`
/// leaves it out too).
pub trait Tree: Sized {
    fn field(&self, key: &str) -> Option<Self>;
    /// A finite number.
    fn number(&self) -> Option<f64>;
    fn string(&self) -> Option<String>;
    fn boolean(&self) -> Option<bool>;
    fn is_null(&self) -> bool;
    /// A JSON object (not an array, not `null`).
    fn is_object(&self) -> bool;
    /// The length of an array; `None` for anything else.
    fn length(&self) -> Option<usize>;
    /// Element `i` of an array.
    fn element(&self, i: usize) -> Option<Self>;

    fn null() -> Self;
    fn from_number(v: f64) -> Self;
    /// An integer (serde_json tells integers from floats; JavaScript does not).
    fn from_u64(v: u64) -> Self {
        Self::from_number(v as f64)
    }
    fn from_string(v: &str) -> Self;
    fn from_bool(v: bool) -> Self;
    fn new_array() -> Self;
    /// Appends to an array made by [`Tree::new_array`].
    fn push(&mut self, v: Self);
    fn new_object() -> Self;
    /// Sets a field of an object made by [`Tree::new_object`].
    fn insert(&mut self, key: &str, v: Self);
}

/// A field that is missing or of the wrong type or range, by its wire name (the innermost one,
/// for a nested object). An empty name is a value that is not of the wanted type at all.
///
/// The name is held by a thin pointer (`&"name"`, a `&'static &'static str`), so an error is one
/// word: every field read returns a `Result` of it, and the narrower error is 0.5 KB less of the
/// npm wasm. [`Fields`] takes its keys the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct TreeError(pub &'static &'static str);

impl TreeError {
    /// The message, built without `core::fmt` (kilobytes of wasm).
    pub fn message(&self) -> String {
        if self.0.is_empty() {
            return "invalid value".to_owned();
        }
        let mut m = String::from("missing or invalid field `");
        m.push_str(self.0);
        m.push('`');
        m
    }
}

/// A type read from a [`Tree`], accepting exactly what its serde derive accepts.
pub trait FromTree: Sized {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError>;

    /// The value of a missing field, if a missing field is allowed (`Option`: `None`).
    fn missing() -> Option<Self> {
        None
    }
}

/// A type written as a [`Tree`], the same shape its serde derive writes.
pub trait ToTree {
    fn to_tree<T: Tree>(&self) -> T;
}

/// Reads `t`'s fields; fails unless `t` is an object.
pub struct Fields<'a, T>(&'a T);

impl<'a, T: Tree> Fields<'a, T> {
    pub fn of(t: &'a T) -> Result<Self, TreeError> {
        if t.is_object() { Ok(Fields(t)) } else { Err(TreeError(&"")) }
    }

    /// A field as serde reads a field without `#[serde(default)]`: required, except an `Option`.
    pub fn get<V: FromTree>(&self, key: &'static &'static str) -> Result<V, TreeError> {
        match self.0.field(key) {
            Some(v) => V::from_tree(&v).map_err(|e| name(e, key)),
            None => V::missing().ok_or(TreeError(key)),
        }
    }

    /// A field with `#[serde(default)]`: `default` when missing.
    pub fn or<V: FromTree>(&self, key: &'static &'static str, default: V) -> Result<V, TreeError> {
        match self.0.field(key) {
            Some(v) => V::from_tree(&v).map_err(|e| name(e, key)),
            None => Ok(default),
        }
    }

    /// Overwrites `slot` with the field if present (a partial config over its defaults).
    pub fn over<V: FromTree>(&self, key: &'static &'static str, slot: &mut V) -> Result<(), TreeError> {
        if let Some(v) = self.0.field(key) {
            *slot = V::from_tree(&v).map_err(|e| name(e, key))?;
        }
        Ok(())
    }
}

fn name(e: TreeError, key: &'static &'static str) -> TreeError {
    if e.0.is_empty() { TreeError(key) } else { e }
}

/// Builds an object field by field.
pub struct Object<T>(T);

impl<T: Tree> Default for Object<T> {
    fn default() -> Self {
        Object(T::new_object())
    }
}

impl<T: Tree> Object<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set<V: ToTree + ?Sized>(self, key: &'static str, v: &V) -> Self {
        self.put(key, v.to_tree())
    }

    /// Sets a field to a tree built already.
    pub fn put(mut self, key: &'static str, v: T) -> Self {
        self.0.insert(key, v);
        self
    }

    /// Sets the field only if `v` is `Some` (`skip_serializing_if = "Option::is_none"`).
    pub fn set_some<V: ToTree>(self, key: &'static str, v: &Option<V>) -> Self {
        match v {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    pub fn build(self) -> T {
        self.0
    }
}

// ---- primitives ---------------------------------------------------------------------------

impl FromTree for f64 {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        t.number().ok_or(TreeError(&""))
    }
}

impl FromTree for String {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        t.string().ok_or(TreeError(&""))
    }
}

impl FromTree for bool {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        t.boolean().ok_or(TreeError(&""))
    }
}

/// Largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

fn integer<T: Tree>(t: &T, max: f64) -> Result<f64, TreeError> {
    match t.number() {
        Some(v) if v >= 0.0 && v <= max && v == libm::trunc(v) => Ok(v),
        _ => Err(TreeError(&"")),
    }
}

impl FromTree for u64 {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        integer(t, MAX_SAFE_INTEGER).map(|v| v as u64)
    }
}

impl FromTree for usize {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        integer(t, MAX_SAFE_INTEGER.min(usize::MAX as f64)).map(|v| v as usize)
    }
}

impl FromTree for u32 {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        integer(t, f64::from(u32::MAX)).map(|v| v as u32)
    }
}

impl<V: FromTree> FromTree for Option<V> {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        if t.is_null() { Ok(None) } else { V::from_tree(t).map(Some) }
    }

    fn missing() -> Option<Self> {
        Some(None)
    }
}

impl<V: FromTree> FromTree for Vec<V> {
    fn from_tree<T: Tree>(t: &T) -> Result<Self, TreeError> {
        let n = t.length().ok_or(TreeError(&""))?;
        let mut items = Vec::with_capacity(n);
        for i in 0..n {
            items.push(V::from_tree(&t.element(i).ok_or(TreeError(&""))?)?);
        }
        Ok(items)
    }
}

impl ToTree for f64 {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_number(*self)
    }
}

impl ToTree for u64 {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_u64(*self)
    }
}

impl ToTree for usize {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_u64(*self as u64)
    }
}

impl ToTree for u32 {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_u64(u64::from(*self))
    }
}

impl ToTree for bool {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_bool(*self)
    }
}

impl ToTree for str {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_string(self)
    }
}

impl ToTree for String {
    fn to_tree<T: Tree>(&self) -> T {
        T::from_string(self)
    }
}

impl<V: ToTree> ToTree for Option<V> {
    fn to_tree<T: Tree>(&self) -> T {
        match self {
            Some(v) => v.to_tree(),
            None => T::null(),
        }
    }
}

impl<V: ToTree> ToTree for [V] {
    fn to_tree<T: Tree>(&self) -> T {
        let mut a = T::new_array();
        for v in self {
            a.push(v.to_tree());
        }
        a
    }
}

impl<V: ToTree> ToTree for Vec<V> {
    fn to_tree<T: Tree>(&self) -> T {
        self.as_slice().to_tree()
    }
}

// ---- serde_json's tree ----------------------------------------------------------------------

/// serde_json's value as a tree: the native side of the equivalence tests, and how native
/// callers (the client's unit tests) feed frames to code written against [`Tree`].
impl Tree for Value {
    fn field(&self, key: &str) -> Option<Self> {
        self.as_object()?.get(key).cloned()
    }
    fn number(&self) -> Option<f64> {
        self.as_f64()
    }
    fn string(&self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }
    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn length(&self) -> Option<usize> {
        self.as_array().map(Vec::len)
    }
    fn element(&self, i: usize) -> Option<Self> {
        self.as_array()?.get(i).cloned()
    }
    fn null() -> Self {
        Value::Null
    }
    fn from_number(v: f64) -> Self {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
    fn from_u64(v: u64) -> Self {
        Value::Number(v.into())
    }
    fn from_string(v: &str) -> Self {
        Value::String(v.to_owned())
    }
    fn from_bool(v: bool) -> Self {
        Value::Bool(v)
    }
    fn new_array() -> Self {
        Value::Array(Vec::new())
    }
    fn push(&mut self, v: Self) {
        if let Value::Array(a) = self {
            a.push(v);
        }
    }
    fn new_object() -> Self {
        Value::Object(Default::default())
    }
    fn insert(&mut self, key: &str, v: Self) {
        if let Value::Object(o) = self {
            o.insert(key.to_owned(), v);
        }
    }
}
