//! How the SQL values of a result row become tag values and metric values, the way Datadog's
//! Python check turns them: a tag is `"%s:%s" % (name, value)`, so Python's `str()` of the
//! value, and a metric value is `float(value)`.
//!
//! Decision: NULL in a tag column gives the value `None`, as Python's `str(None)` does in
//! Datadog, rather than dropping the tag. Dashboards and monitors written against Datadog's
//! series keep matching, and a row with a NULL never lands in the same series as a row
//! without that tag. Likewise booleans print `True`/`False` and whole floats keep their `.0`.

use kennel_sdk::Value;

/// Python's `str()` of a value, for a `name:value` tag. `Err` for a type the runner does not
/// decode, naming the column and the cast to add.
pub fn tag_value(value: &Value, column: &str) -> Result<String, String> {
    Ok(match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => python_float(*f),
        Value::Numeric(text) | Value::Text(text) => text.clone(),
        Value::Unsupported(type_name) => return Err(unsupported(column, type_name, "`::text`")),
    })
}

/// Python's `float()` of a value: numbers, booleans (1/0) and numeric text. `Ok(None)` for
/// NULL, which the caller decides about; `Err` says why anything else is not a number.
pub fn metric_value(value: &Value, column: &str) -> Result<Option<f64>, String> {
    match value {
        Value::Null => Ok(None),
        Value::Unsupported(type_name) => Err(unsupported(
            column,
            type_name,
            "`::float8`, or `EXTRACT(EPOCH FROM ...)` for a time",
        )),
        other => match other.as_f64() {
            Some(number) => Ok(Some(number)),
            None => Err(format!(
                "non-numeric value `{}` for metric column `{column}`",
                tag_value(other, column).unwrap_or_default()
            )),
        },
    }
}

fn unsupported(column: &str, type_name: &str, cast: &str) -> String {
    format!(
        "column `{column}` is of type {type_name}, which the runner does not decode: cast it \
         in the query ({cast})"
    )
}

/// `repr(float)` for the common cases: whole numbers keep `.0` (up to where Python switches to
/// exponents), and the non-finite ones are spelled Python's way.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        "nan".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

/// Counts the rows or values a query's results could not use, so that the run logs one warning
/// per query (its log lines count against the runner's per-run cap) rather than one per row.
#[derive(Debug, Default)]
pub struct Skipped {
    count: usize,
    first: Option<String>,
}

impl Skipped {
    pub fn note(&mut self, reason: String) {
        self.note_many(reason, 1);
    }

    /// Notes `count` skipped at once, for the same reason.
    pub fn note_many(&mut self, reason: String, count: usize) {
        self.count += count;
        self.first.get_or_insert(reason);
    }

    /// The warning to log, if anything was skipped: `what` names the config entry, `unit` what
    /// was counted ("rows", "values").
    pub fn summary(&self, what: &str, unit: &str, out_of: usize, query: &str) -> Option<String> {
        let first = self.first.as_deref()?;
        Some(format!(
            "{what}: skipped {} of {out_of} {unit}; the first because: {first}. Query: {}",
            self.count,
            query.trim()
        ))
    }
}
