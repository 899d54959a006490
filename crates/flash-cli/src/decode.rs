//! Decoding a model's cached values without the model's type. Postcard is
//! not self-describing: what a payload means comes from the layout the
//! catalog records ([`flash_sea_orm::catalog::CatalogEntry::layout_parts`]:
//! each column's name, `ColumnType` and nullability, in field order), read
//! here as the Rust types SeaORM's derive gives those column types.
//!
//! A column type this decoder does not know (JSON, enums, arrays, custom
//! types) stops the decoding: the bytes from that column on are shown as hex
//! with a note, as are bytes that do not decode (a Rust type that encodes
//! differently from its column type's usual one, e.g. a string-backed
//! `ActiveEnum`, which postcard writes as a variant index).

use flash_core::CacheKind;
use serde_json::{Map, Value};

/// What a payload decoded to.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoding {
    /// The value: a row (object) or null for an instance class, a list of
    /// rows for a list class, a flag for an existence class. Partial when
    /// `note` is set.
    pub value: Value,
    /// Why decoding stopped early, or that bytes were left over.
    pub note: Option<String>,
    /// The bytes not decoded, as hex (from where decoding stopped).
    pub rest_hex: Option<String>,
}

/// How one column's values are encoded.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Enc {
    /// `i8`: one byte.
    I8,
    /// `u8`: one byte.
    U8,
    /// `i16`/`i32`/`i64`: zigzag varint.
    Signed,
    /// `u16`/`u32`/`u64`: varint.
    Unsigned,
    F32,
    F64,
    Bool,
    /// Length-prefixed UTF-8: strings, `char`, and the types serde writes as
    /// text (chrono's dates and times, decimals).
    Str,
    /// Length-prefixed bytes (`Vec<u8>`), shown as serde_json shows them: a
    /// list of numbers.
    Bytes,
    /// `uuid::Uuid`: 16 length-prefixed bytes (postcard is not human
    /// readable), shown hyphenated.
    Uuid,
}

struct Column<'a> {
    name: &'a str,
    ty: &'a str,
    nullable: bool,
    enc: Option<Enc>,
}

/// `name:Type:nullable`, as `flash_sea_orm` derives the layout.
fn column(part: &str) -> Column<'_> {
    let (name, rest) = part.split_once(':').unwrap_or((part, ""));
    let (ty, nullable) = rest.rsplit_once(':').unwrap_or((rest, "false"));
    let head: &str = ty
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    let enc = match head {
        "TinyInteger" => Some(Enc::I8),
        "TinyUnsigned" => Some(Enc::U8),
        "SmallInteger" | "Integer" | "BigInteger" => Some(Enc::Signed),
        "SmallUnsigned" | "Unsigned" | "BigUnsigned" => Some(Enc::Unsigned),
        "Float" => Some(Enc::F32),
        "Double" => Some(Enc::F64),
        "Boolean" => Some(Enc::Bool),
        "Char"
        | "String"
        | "Text"
        | "Date"
        | "Time"
        | "DateTime"
        | "Timestamp"
        | "TimestampWithTimeZone"
        | "Decimal" => Some(Enc::Str),
        "Binary" | "VarBinary" | "Blob" => Some(Enc::Bytes),
        "Uuid" => Some(Enc::Uuid),
        _ => None,
    };
    Column {
        name,
        ty,
        nullable: nullable == "true",
        enc,
    }
}

/// Where and why decoding stopped.
struct Stop {
    at: usize,
    note: String,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn stop(&self, at: usize, note: impl Into<String>) -> Stop {
        Stop {
            at,
            note: note.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Stop> {
        match self.b.get(self.at..self.at.saturating_add(n)) {
            Some(s) => {
                self.at += n;
                Ok(s)
            }
            None => Err(self.stop(self.at, format!("the bytes end inside {what}"))),
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8, Stop> {
        Ok(self.take(1, what)?[0])
    }

    /// A postcard varint of at most 64 bits.
    fn varint(&mut self, what: &str) -> Result<u64, Stop> {
        let start = self.at;
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte(what)?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.stop(start, format!("{what}: a varint longer than 64 bits")))
    }

    /// A length prefix, checked against the bytes left.
    fn len(&mut self, what: &str) -> Result<usize, Stop> {
        let start = self.at;
        let n = self.varint(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.b.len() - self.at => Ok(n),
            _ => Err(self.stop(
                start,
                format!("{what}: a length of {n} with fewer bytes left"),
            )),
        }
    }

    fn value(&mut self, enc: Enc, what: &str) -> Result<Value, Stop> {
        let start = self.at;
        Ok(match enc {
            Enc::I8 => (self.byte(what)? as i8).into(),
            Enc::U8 => self.byte(what)?.into(),
            Enc::Signed => {
                let z = self.varint(what)?;
                (((z >> 1) as i64) ^ -((z & 1) as i64)).into()
            }
            Enc::Unsigned => self.varint(what)?.into(),
            Enc::F32 => {
                let b = self.take(4, what)?;
                let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                serde_json::to_value(f).unwrap_or(Value::Null)
            }
            Enc::F64 => {
                let b = self.take(8, what)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                serde_json::to_value(f64::from_le_bytes(a)).unwrap_or(Value::Null)
            }
            Enc::Bool => match self.byte(what)? {
                0 => false.into(),
                1 => true.into(),
                b => return Err(self.stop(start, format!("{what}: {b} is not a bool"))),
            },
            Enc::Str => {
                let n = self.len(what)?;
                match std::str::from_utf8(self.take(n, what)?) {
                    Ok(s) => s.into(),
                    Err(_) => return Err(self.stop(start, format!("{what}: not UTF-8"))),
                }
            }
            Enc::Bytes => {
                let n = self.len(what)?;
                self.take(n, what)?.to_vec().into()
            }
            Enc::Uuid => {
                let n = self.len(what)?;
                if n != 16 {
                    return Err(self.stop(start, format!("{what}: a uuid of {n} bytes")));
                }
                let h = hex(self.take(n, what)?);
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
                .into()
            }
        })
    }

    /// One row, into `out` (partial when it stops).
    fn row(&mut self, cols: &[Column<'_>], out: &mut Map<String, Value>) -> Result<(), Stop> {
        for c in cols {
            let what = format!("column {} ({})", c.name, c.ty);
            let Some(enc) = c.enc else {
                return Err(self.stop(
                    self.at,
                    format!(
                        "column {} has type {}, which this decoder does not know: \
                         the bytes from it on are not decoded",
                        c.name, c.ty
                    ),
                ));
            };
            let v = match c.nullable {
                true => {
                    let start = self.at;
                    match self.byte(&what)? {
                        0 => Value::Null,
                        1 => self.value(enc, &what)?,
                        b => {
                            return Err(
                                self.stop(start, format!("{what}: {b} is not an option tag"))
                            )
                        }
                    }
                }
                false => self.value(enc, &what)?,
            };
            out.insert(c.name.to_owned(), v);
        }
        Ok(())
    }

    fn row_value(&mut self, cols: &[Column<'_>], into: &mut Value) -> Result<(), Stop> {
        let mut row = Map::new();
        let r = self.row(cols, &mut row);
        *into = Value::Object(row);
        r
    }

    fn payload(
        &mut self,
        kind: CacheKind,
        cols: &[Column<'_>],
        out: &mut Value,
    ) -> Result<(), Stop> {
        match kind {
            CacheKind::Exists => {
                *out = self.value(Enc::Bool, "the flag")?;
                Ok(())
            }
            CacheKind::Instance => {
                let start = self.at;
                match self.byte("the row's option tag")? {
                    0 => Ok(()),
                    1 => self.row_value(cols, out),
                    b => Err(self.stop(start, format!("{b} is not an option tag"))),
                }
            }
            CacheKind::Queryset => {
                let n = self.len("the list's length")?;
                let mut rows = Vec::new();
                let mut r = Ok(());
                for _ in 0..n {
                    let mut row = Value::Null;
                    r = self.row_value(cols, &mut row);
                    rows.push(row);
                    if r.is_err() {
                        break;
                    }
                }
                *out = Value::Array(rows);
                r
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes the (decompressed) payload of a value of a `kind` class whose
/// model has the layout `parts`.
pub fn decode(kind: CacheKind, parts: &[String], payload: &[u8]) -> Decoding {
    let cols: Vec<Column<'_>> = parts.iter().map(|p| column(p)).collect();
    let mut r = Reader { b: payload, at: 0 };
    let mut value = Value::Null;
    match r.payload(kind, &cols, &mut value) {
        Ok(()) if r.at == payload.len() => Decoding {
            value,
            note: None,
            rest_hex: None,
        },
        Ok(()) => Decoding {
            value,
            note: Some(format!(
                "{} bytes left after the value",
                payload.len() - r.at
            )),
            rest_hex: Some(hex(&payload[r.at..])),
        },
        Err(stop) => Decoding {
            value,
            note: Some(stop.note),
            rest_hex: Some(hex(&payload[stop.at.min(payload.len())..])),
        },
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
