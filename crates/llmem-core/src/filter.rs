//! A Mongo-style metadata filter language for selecting stored records.
//!
//! ```json
//! {"type": "knowledge", "tags": {"$in": ["rust", "go"]},
//!  "$or": [{"timestamp": {"$gte": "2025-01-01"}}, {"pinned": true}]}
//! ```
//!
//! Operators: `$eq $ne $gt $gte $lt $lte $in $nin $contains $and $or` (`$contains`: a string
//! field holds the text, ignoring case). Keys may be dotted (`place.city`).
//! A bare value means `$eq`; several keys (or several operators on one key) are ANDed.
//! Semantics follow MongoDB: on an array field `$eq`/`$in` match when any element matches;
//! a missing field fails `$eq`, `$gt`, … and `$in` but passes `$ne` and `$nin`. Numbers compare
//! numerically, strings lexicographically (ISO dates therefore in time order); comparing a number
//! with a string is false.

use std::cmp::Ordering;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::record::MemoryRecord;
use crate::{Error, Result};

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    /// The field is a string holding the value (a string), ignoring case; on an array, any
    /// element is.
    Contains,
}

impl CmpOp {
    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "$eq",
            CmpOp::Ne => "$ne",
            CmpOp::Gt => "$gt",
            CmpOp::Gte => "$gte",
            CmpOp::Lt => "$lt",
            CmpOp::Lte => "$lte",
            CmpOp::Contains => "$contains",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
            CmpOp::Contains => "LIKE",
        }
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches everything (the empty object `{}`).
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Cmp {
        path: String,
        op: CmpOp,
        value: Value,
    },
    In {
        path: String,
        values: Vec<Value>,
        negate: bool,
    },
}

const OPERATORS: &str = "$eq, $ne, $gt, $gte, $lt, $lte, $in, $nin, $contains, $and, $or";

impl Filter {
    /// Parses a filter from JSON, with errors that name the offending key.
    pub fn parse(v: &Value) -> Result<Filter> {
        let obj = v.as_object().ok_or_else(|| {
            Error::invalid(format!(
                "a filter must be a JSON object like {{\"type\": \"knowledge\"}}, got {v}"
            ))
        })?;
        parse_object(obj, "")
    }

    /// Parses filter JSON text.
    pub fn from_json_str(s: &str) -> Result<Filter> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| Error::invalid(format!("filter is not valid JSON: {e}")))?;
        Filter::parse(&v)
    }

    /// `path == value`.
    pub fn eq(path: impl Into<String>, value: impl Into<Value>) -> Filter {
        Filter::Cmp {
            path: path.into(),
            op: CmpOp::Eq,
            value: value.into(),
        }
    }

    /// Both filters.
    #[must_use]
    pub fn and(self, other: Filter) -> Filter {
        match (self, other) {
            (Filter::All, f) | (f, Filter::All) => f,
            (Filter::And(mut a), Filter::And(b)) => {
                a.extend(b);
                Filter::And(a)
            }
            (Filter::And(mut a), f) | (f, Filter::And(mut a)) => {
                a.push(f);
                Filter::And(a)
            }
            (a, b) => Filter::And(vec![a, b]),
        }
    }

    /// Whether `record` passes.
    pub fn matches(&self, record: &MemoryRecord) -> bool {
        self.matches_with(&|p| record.field(p))
    }

    /// Whether the document seen through `get` passes.
    pub fn matches_with(&self, get: &dyn Fn(&str) -> Option<Value>) -> bool {
        match self {
            Filter::All => true,
            Filter::And(fs) => fs.iter().all(|f| f.matches_with(get)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches_with(get)),
            Filter::Cmp { path, op, value } => {
                let field = get(path);
                match op {
                    CmpOp::Eq => field.is_some_and(|f| eq_or_contains(&f, value)),
                    CmpOp::Ne => !field.is_some_and(|f| eq_or_contains(&f, value)),
                    CmpOp::Contains => field.is_some_and(|f| holds(&f, value)),
                    _ => field.is_some_and(|f| {
                        let ord = |x: &Value| compare(x, value);
                        let test = |o: Ordering| match op {
                            CmpOp::Gt => o == Ordering::Greater,
                            CmpOp::Gte => o != Ordering::Less,
                            CmpOp::Lt => o == Ordering::Less,
                            _ => o != Ordering::Greater,
                        };
                        match &f {
                            Value::Array(items) => items.iter().any(|x| ord(x).is_some_and(test)),
                            x => ord(x).is_some_and(test),
                        }
                    }),
                }
            }
            Filter::In {
                path,
                values,
                negate,
            } => {
                let hit = get(path).is_some_and(|f| values.iter().any(|v| eq_or_contains(&f, v)));
                hit != *negate
            }
        }
    }

    /// The filter back as JSON (what [`Filter::parse`] reads).
    pub fn to_json(&self) -> Value {
        match self {
            Filter::All => Value::Object(Map::new()),
            Filter::And(fs) => {
                serde_json::json!({"$and": fs.iter().map(Filter::to_json).collect::<Vec<_>>()})
            }
            Filter::Or(fs) => {
                serde_json::json!({"$or": fs.iter().map(Filter::to_json).collect::<Vec<_>>()})
            }
            Filter::Cmp { path, op, value } => {
                serde_json::json!({path.clone(): {op.name(): value}})
            }
            Filter::In {
                path,
                values,
                negate,
            } => {
                serde_json::json!({path.clone(): {if *negate {"$nin"} else {"$in"}: values}})
            }
        }
    }

    /// Translates to a SQL predicate (DataFusion/Lance dialect). `column` maps a filter path to a
    /// SQL expression, or `None` when the path cannot be filtered in SQL; then the whole
    /// translation fails and the caller filters in Rust with [`Filter::matches`].
    /// Missing-field semantics are kept: `$ne`/`$nin` also match NULL.
    pub fn to_sql(&self, column: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        let col = |p: &str| {
            column(p).ok_or_else(|| {
                Error::unsupported(format!("SQL filter on `{p}`"), "filter translation")
            })
        };
        Ok(match self {
            Filter::All => "TRUE".to_owned(),
            Filter::And(fs) | Filter::Or(fs) if fs.is_empty() => "TRUE".to_owned(),
            Filter::And(fs) => join_sql(fs, " AND ", column)?,
            Filter::Or(fs) => join_sql(fs, " OR ", column)?,
            Filter::Cmp { path, op, value } => {
                let c = col(path)?;
                match (op, value) {
                    (CmpOp::Eq, Value::Null) => format!("{c} IS NULL"),
                    (CmpOp::Ne, Value::Null) => format!("{c} IS NOT NULL"),
                    (CmpOp::Ne, v) => format!("({c} IS NULL OR {c} <> {})", sql_literal(v)?),
                    // Filtered in Rust: LIKE would need its wildcards escaped per dialect.
                    (CmpOp::Contains, _) => {
                        return Err(Error::unsupported("SQL `$contains`", "filter translation"));
                    }
                    (op, v) => format!("{c} {} {}", op.sql(), sql_literal(v)?),
                }
            }
            Filter::In {
                path,
                values,
                negate,
            } => {
                let c = col(path)?;
                if values.is_empty() {
                    return Ok(if *negate { "TRUE" } else { "FALSE" }.to_owned());
                }
                let list = values
                    .iter()
                    .map(sql_literal)
                    .collect::<Result<Vec<_>>>()?
                    .join(", ");
                if *negate {
                    format!("({c} IS NULL OR {c} NOT IN ({list}))")
                } else {
                    format!("{c} IN ({list})")
                }
            }
        })
    }
}

/// Whether `field` (a string, or an array with one) holds the string `value`, ignoring case.
fn holds(field: &Value, value: &Value) -> bool {
    let Some(needle) = value.as_str().map(str::to_lowercase) else {
        return false;
    };
    match field {
        Value::String(s) => s.to_lowercase().contains(&needle),
        Value::Array(items) => items.iter().any(|x| {
            x.as_str()
                .is_some_and(|s| s.to_lowercase().contains(&needle))
        }),
        _ => false,
    }
}

fn join_sql(fs: &[Filter], sep: &str, column: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let parts = fs
        .iter()
        .map(|f| f.to_sql(column))
        .collect::<Result<Vec<_>>>()?;
    Ok(format!("({})", parts.join(sep)))
}

/// A SQL literal for a scalar JSON value; strings are quoted with `'` doubled.
pub fn sql_literal(v: &Value) -> Result<String> {
    Ok(match v {
        Value::Null => "NULL".to_owned(),
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => {
            return Err(Error::unsupported(
                format!("SQL literal for {other}"),
                "filter translation",
            ));
        }
    })
}

fn parse_object(obj: &Map<String, Value>, at: &str) -> Result<Filter> {
    let mut parts = Vec::new();
    for (key, val) in obj {
        match key.as_str() {
            "$and" | "$or" => {
                let arr = val.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                    Error::invalid(format!(
                        "`{key}`{at} needs a non-empty array of filter objects"
                    ))
                })?;
                let subs = arr
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let o = v.as_object().ok_or_else(|| {
                            Error::invalid(format!("`{key}`[{i}]{at} must be an object, got {v}"))
                        })?;
                        parse_object(o, &format!(" in `{key}`[{i}]"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                parts.push(if key == "$and" {
                    Filter::And(subs)
                } else {
                    Filter::Or(subs)
                });
            }
            k if k.starts_with('$') => {
                return Err(Error::invalid(format!(
                    "unknown operator `{k}`{at} at the top of a filter; use a field name, `$and` or `$or` (operators: {OPERATORS})"
                )));
            }
            path => parts.push(parse_field(path, val)?),
        }
    }
    Ok(match parts.len() {
        0 => Filter::All,
        1 => parts.pop().unwrap_or(Filter::All),
        _ => Filter::And(parts),
    })
}

fn parse_field(path: &str, val: &Value) -> Result<Filter> {
    if path.is_empty() {
        return Err(Error::invalid("a filter has an empty field name"));
    }
    let ops = match val {
        Value::Object(o) if o.keys().any(|k| k.starts_with('$')) => o,
        // A literal (including an object without operators) means equality.
        v => {
            return Ok(Filter::Cmp {
                path: path.to_owned(),
                op: CmpOp::Eq,
                value: v.clone(),
            });
        }
    };
    let mut parts = Vec::new();
    for (op, v) in ops {
        let cmp = |op| Filter::Cmp {
            path: path.to_owned(),
            op,
            value: v.clone(),
        };
        let f = match op.as_str() {
            "$eq" => cmp(CmpOp::Eq),
            "$ne" => cmp(CmpOp::Ne),
            "$contains" => {
                if v.as_str().is_none_or(str::is_empty) {
                    return Err(Error::invalid(format!(
                        "`{path}`: `$contains` takes a non-empty string, got {v}"
                    )));
                }
                cmp(CmpOp::Contains)
            }
            "$gt" | "$gte" | "$lt" | "$lte" => {
                if !(v.is_number() || v.is_string()) {
                    return Err(Error::invalid(format!(
                        "`{path}`: `{op}` compares numbers or strings (dates as ISO text), got {v}"
                    )));
                }
                cmp(match op.as_str() {
                    "$gt" => CmpOp::Gt,
                    "$gte" => CmpOp::Gte,
                    "$lt" => CmpOp::Lt,
                    _ => CmpOp::Lte,
                })
            }
            "$in" | "$nin" => {
                let values = v.as_array().ok_or_else(|| {
                    Error::invalid(format!(
                        "`{path}`: `{op}` needs an array of values, got {v}"
                    ))
                })?;
                Filter::In {
                    path: path.to_owned(),
                    values: values.clone(),
                    negate: op == "$nin",
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "`{path}`: unknown operator `{other}`; use one of {OPERATORS}"
                )));
            }
        };
        parts.push(f);
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Filter::And(parts)
    })
}

fn eq_or_contains(field: &Value, want: &Value) -> bool {
    if json_eq(field, want) {
        return true;
    }
    match field {
        Value::Array(items) if !want.is_array() => items.iter().any(|x| json_eq(x, want)),
        _ => false,
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Filter::parse(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(v: Value) -> impl Fn(&str) -> Option<Value> {
        move |p: &str| {
            let Value::Object(o) = &v else { return None };
            crate::record::lookup(o, p).cloned()
        }
    }

    #[test]
    fn contains_ignores_case_and_is_not_sql() {
        let f = Filter::parse(&json!({"text": {"$contains": "Card NUMBER"}}))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(f.matches_with(&doc(json!({"text": "my card number is 4111"}))));
        assert!(f.matches_with(&doc(json!({"text": ["x", "a CARD number"]}))));
        assert!(!f.matches_with(&doc(json!({"text": "my card is blue"}))));
        assert!(!f.matches_with(&doc(json!({"other": "card number"}))));
        assert!(f.to_sql(&|p| Some(p.to_owned())).is_err());
        assert_eq!(Filter::parse(&f.to_json()).ok(), Some(f));
        let e = Filter::parse(&json!({"text": {"$contains": 3}})).unwrap_err();
        assert!(e.to_string().contains("non-empty string"), "{e}");
    }

    #[test]
    fn operators_follow_mongo_semantics() {
        let d = json!({"type": "knowledge", "n": 5, "tags": ["rust", "go"], "date": "2025-02-15",
                       "place": {"city": "Paris"}, "flag": true});
        let cases: &[(Value, bool)] = &[
            (json!({}), true),
            (json!({"type": "knowledge"}), true),
            (json!({"type": {"$eq": "episode"}}), false),
            (json!({"type": {"$ne": "episode"}}), true),
            (json!({"missing": {"$ne": 1}}), true),
            (json!({"missing": {"$nin": [1]}}), true),
            (json!({"missing": {"$in": [1]}}), false),
            (json!({"missing": {"$gt": 1}}), false),
            (json!({"n": {"$gt": 4, "$lte": 5}}), true),
            (json!({"n": {"$gt": 5}}), false),
            (json!({"n": 5.0}), true),
            (json!({"n": {"$gte": "5"}}), false),
            (json!({"n": {"$in": [1, 5]}}), true),
            (json!({"n": {"$nin": [1, 5]}}), false),
            (json!({"tags": "rust"}), true),
            (json!({"tags": {"$in": ["python", "go"]}}), true),
            (json!({"tags": {"$nin": ["python", "go"]}}), false),
            (json!({"tags": ["rust", "go"]}), true),
            (json!({"date": {"$gte": "2025-01-01"}}), true),
            (json!({"date": {"$lt": "2025-01-01"}}), false),
            (json!({"place.city": "Paris"}), true),
            (json!({"place": {"city": "Paris"}}), true),
            (json!({"$or": [{"n": 1}, {"flag": true}]}), true),
            (json!({"$and": [{"n": 5}, {"flag": false}]}), false),
            (
                json!({"type": "knowledge", "$or": [{"n": 1}, {"tags": "go"}]}),
                true,
            ),
        ];
        let get = doc(d);
        for (f, want) in cases {
            let parsed = Filter::parse(f).unwrap();
            assert_eq!(parsed.matches_with(&get), *want, "{f}");
            // JSON round trip keeps meaning.
            let again = Filter::parse(&parsed.to_json()).unwrap();
            assert_eq!(again.matches_with(&get), *want, "round trip of {f}");
        }
    }

    #[test]
    fn bad_filters_say_what_to_fix() {
        let cases = [
            (json!([1]), "must be a JSON object"),
            (json!({"n": {"$foo": 1}}), "unknown operator `$foo`"),
            (json!({"$xor": []}), "unknown operator `$xor`"),
            (json!({"n": {"$in": 3}}), "`$in` needs an array"),
            (json!({"$or": []}), "non-empty array"),
            (json!({"$and": [3]}), "must be an object"),
            (json!({"n": {"$gt": [1]}}), "compares numbers or strings"),
        ];
        for (f, want) in cases {
            let err = Filter::parse(&f).unwrap_err().to_string();
            assert!(err.contains(want), "{f}: {err}");
        }
    }

    #[test]
    fn sql_translation_quotes_and_keeps_missing_semantics() {
        let f = Filter::parse(
            &json!({"kind": "know'ledge", "n": {"$gte": 2}, "tags": {"$nin": ["a"]},
            "$or": [{"session": null}, {"x": {"$ne": true}}]}),
        )
        .unwrap();
        let sql = f.to_sql(&|p| Some(format!("\"{p}\""))).unwrap();
        assert!(sql.contains("\"kind\" = 'know''ledge'"), "{sql}");
        assert!(sql.contains("\"n\" >= 2"), "{sql}");
        assert!(
            sql.contains("(\"tags\" IS NULL OR \"tags\" NOT IN ('a'))"),
            "{sql}"
        );
        assert!(sql.contains("\"session\" IS NULL"), "{sql}");
        assert!(sql.contains("(\"x\" IS NULL OR \"x\" <> TRUE)"), "{sql}");
        let err = f.to_sql(&|p| (p != "n").then(|| p.to_owned())).unwrap_err();
        assert!(err.to_string().contains("`n`"), "{err}");
    }
}
