//! `mamba-gguf inspect FILE.gguf [--json] [--full]`: a GGUF file's header,
//! metadata (long arrays and strings summarised), tensor table and totals.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use convert::identify::identify;
use convert::known::Models;
use gguf::{Array, GgufFile, TensorInfo, Value};
use serde_json::{json, Value as Json};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The GGUF file to inspect.
    pub file: PathBuf,
    /// Print one JSON object (metadata, tensors, totals) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show whole arrays and strings instead of summaries.
    #[arg(long)]
    pub full: bool,
}

/// How much of long values to show.
#[derive(Clone, Copy)]
struct Limits {
    /// Array items shown.
    items: usize,
    /// Characters of a string shown.
    chars: usize,
}

impl Limits {
    fn new(full: bool) -> Self {
        if full {
            Limits {
                items: usize::MAX,
                chars: usize::MAX,
            }
        } else {
            Limits {
                items: 8,
                chars: 160,
            }
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let file = GgufFile::open(&args.file)?;
    let limits = Limits::new(args.full);
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&file, &args, limits))?;
        s.push('\n');
        s
    } else {
        to_text(&file, &args, limits)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `inspect ... | head` closing the pipe early is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

/// Per-type and overall sums over the tensor table.
#[derive(Default)]
struct Totals {
    n_elements: u64,
    n_bytes: u64,
    by_type: BTreeMap<&'static str, (usize, u64, u64)>,
}

fn totals(tensors: &[TensorInfo]) -> Totals {
    let mut t = Totals::default();
    for x in tensors {
        t.n_elements += x.n_elements;
        t.n_bytes += x.n_bytes as u64;
        let e = t.by_type.entry(x.ty.name()).or_default();
        e.0 += 1;
        e.1 += x.n_elements;
        e.2 += x.n_bytes as u64;
    }
    t
}

fn bits_per_weight(bytes: u64, elements: u64) -> Option<f64> {
    (elements > 0).then(|| bytes as f64 * 8.0 / elements as f64)
}

// ---- text --------------------------------------------------------------

/// 1234567 -> "1,234,567".
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A string quoted and escaped, cut to `limits.chars` characters.
fn quoted(s: &str, limits: Limits) -> String {
    match s.char_indices().nth(limits.chars) {
        Some((cut, _)) => format!(
            "{:?}... ({} bytes, {} chars shown; --full shows all)",
            &s[..cut],
            s.len(),
            limits.chars
        ),
        None => format!("{s:?}"),
    }
}

fn scalar_text(v: &Value, limits: Limits) -> String {
    match v {
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        // Debug: shortest round-trip digits, exponent form when very large
        // or small (1e-5, 3e38).
        Value::F32(x) => format!("{x:?}"),
        Value::F64(x) => format!("{x:?}"),
        Value::Bool(x) => x.to_string(),
        Value::String(s) => quoted(s, limits),
        Value::Array(a) => array_text(a, limits),
    }
}

/// `["a", "b", ... 65022 more]`; string items are cut shorter than values.
fn array_text(a: &Array, limits: Limits) -> String {
    let shown = a.len().min(limits.items);
    let item_limits = Limits {
        items: limits.items,
        chars: limits.chars.min(40),
    };
    let mut parts: Vec<String> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| scalar_text(&v, item_limits))
        .collect();
    if a.len() > shown {
        parts.push(format!("... {} more", a.len() - shown));
    }
    format!("[{}]", parts.join(", "))
}

fn to_text(f: &GgufFile, args: &Args, limits: Limits) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "file: {}", args.file.display());
    let _ = writeln!(
        o,
        "GGUF v{}, {} ({} bytes), alignment {}, data section at byte {}",
        f.version(),
        human_bytes(f.file_size()),
        grouped(f.file_size()),
        f.alignment(),
        f.data_offset()
    );
    if let Some(arch) = f.architecture() {
        let _ = writeln!(o, "architecture: {arch}");
    }
    let id = identify(f, &Models::builtin());
    if let Some(fam) = id.family {
        let how = if id.family_from_key {
            "from mamba.ssm.dt_b_c_rms"
        } else {
            "no mamba.ssm.dt_b_c_rms key"
        };
        let _ = writeln!(o, "family: {fam} ({how})");
        match (&id.known, id.matched_by) {
            (Some(k), Some(by)) => {
                let _ = writeln!(o, "known model: {} ({}, matched by {by})", k.name, k.repo);
            }
            _ => {
                let _ = writeln!(o, "known model: none in models.toml");
            }
        }
        for w in &id.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
    }

    let _ = writeln!(o, "\nmetadata ({} keys):", f.metadata().len());
    let key_w = f
        .metadata()
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        .min(44);
    for (k, v) in f.metadata() {
        let _ = writeln!(
            o,
            "  {k:<key_w$}  {:<16} {}",
            v.type_description(),
            scalar_text(v, limits)
        );
    }

    let tensors = f.tensors();
    let _ = writeln!(o, "\ntensors ({}):", tensors.len());
    if !tensors.is_empty() {
        let name_w = tensors
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let dims: Vec<String> = tensors.iter().map(|t| t.dims_string()).collect();
        let dims_w = dims.iter().map(|d| d.len()).max().unwrap_or(4).max(4);
        let idx_w = tensors.len().to_string().len().max(1);
        let _ = writeln!(
            o,
            "  {:>idx_w$}  {:<name_w$}  {:<7}  {:<dims_w$}  {:>14}  {:>14}",
            "#", "name", "type", "dims", "bytes", "offset"
        );
        for (i, (t, d)) in tensors.iter().zip(&dims).enumerate() {
            let _ = writeln!(
                o,
                "  {i:>idx_w$}  {:<name_w$}  {:<7}  {d:<dims_w$}  {:>14}  {:>14}",
                t.name,
                t.ty.name(),
                grouped(t.n_bytes as u64),
                grouped(t.offset)
            );
        }
    }

    let t = totals(tensors);
    let bpw =
        bits_per_weight(t.n_bytes, t.n_elements).map_or("n/a".to_string(), |b| format!("{b:.2}"));
    let _ = writeln!(
        o,
        "\ntotals: {} tensors, {} parameters, {} bytes of tensor data ({}), {} bits per weight",
        tensors.len(),
        grouped(t.n_elements),
        grouped(t.n_bytes),
        human_bytes(t.n_bytes),
        bpw
    );
    for (ty, (count, elems, bytes)) in &t.by_type {
        let bpw = bits_per_weight(*bytes, *elems).map_or("n/a".to_string(), |b| format!("{b:.2}"));
        let _ = writeln!(
            o,
            "  {ty:<7} {count:>5} tensors  {:>16} parameters  {:>12}  {bpw} bpw",
            grouped(*elems),
            human_bytes(*bytes)
        );
    }
    o
}

// ---- JSON --------------------------------------------------------------

/// An f32 as the shortest decimal that reads back to it (1e-5, not
/// 9.999999747378752e-6); NaN and infinities as strings.
fn f32_json(x: f32) -> Json {
    if x.is_finite() {
        x.to_string()
            .parse::<f64>()
            .map_or(Json::Null, |v| json!(v))
    } else {
        json!(x.to_string())
    }
}

fn f64_json(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string())
    }
}

fn string_json(s: &str, limits: Limits) -> Json {
    match s.char_indices().nth(limits.chars) {
        Some((cut, _)) => json!({
            "type": "string",
            "value": &s[..cut],
            "len": s.len(),
            "truncated": true,
        }),
        None => json!({"type": "string", "value": s}),
    }
}

fn value_json(v: &Value, limits: Limits) -> Json {
    let t = v.type_name();
    match v {
        Value::U8(x) => json!({"type": t, "value": x}),
        Value::I8(x) => json!({"type": t, "value": x}),
        Value::U16(x) => json!({"type": t, "value": x}),
        Value::I16(x) => json!({"type": t, "value": x}),
        Value::U32(x) => json!({"type": t, "value": x}),
        Value::I32(x) => json!({"type": t, "value": x}),
        Value::U64(x) => json!({"type": t, "value": x}),
        Value::I64(x) => json!({"type": t, "value": x}),
        Value::F32(x) => json!({"type": t, "value": f32_json(*x)}),
        Value::F64(x) => json!({"type": t, "value": f64_json(*x)}),
        Value::Bool(x) => json!({"type": t, "value": x}),
        Value::String(s) => string_json(s, limits),
        Value::Array(a) => array_json(a, limits),
    }
}

/// `{"type": "array", "elem_type": "string", "len": 65024, "items": [first
/// few], "truncated": true}`; items of an array of arrays are such objects.
fn array_json(a: &Array, limits: Limits) -> Json {
    let shown = a.len().min(limits.items);
    let items: Vec<Json> = (0..shown)
        .filter_map(|i| a.get(i))
        .map(|v| match v {
            Value::Array(inner) => array_json(&inner, limits),
            Value::String(s) => match s.char_indices().nth(limits.chars) {
                Some((cut, _)) => json!(format!("{}...", &s[..cut])),
                None => json!(s),
            },
            other => value_json(&other, limits)["value"].clone(),
        })
        .collect();
    let mut o = json!({
        "type": "array",
        "elem_type": a.elem_type().name(),
        "len": a.len(),
        "items": items,
    });
    if shown < a.len() {
        o["truncated"] = json!(true);
    }
    o
}

fn to_json(f: &GgufFile, args: &Args, limits: Limits) -> Json {
    let metadata: Vec<Json> = f
        .metadata()
        .iter()
        .map(|(k, v)| {
            let mut j = value_json(v, limits);
            j["key"] = json!(k);
            j
        })
        .collect();
    let tensors: Vec<Json> = f
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "dims": t.dims,
                "type": t.ty.name(),
                "n_elements": t.n_elements,
                "n_bytes": t.n_bytes,
                "offset": t.offset,
            })
        })
        .collect();
    let t = totals(f.tensors());
    let by_type: serde_json::Map<String, Json> = t
        .by_type
        .iter()
        .map(|(ty, (count, elems, bytes))| {
            (
                ty.to_string(),
                json!({
                    "tensors": count,
                    "n_elements": elems,
                    "n_bytes": bytes,
                    "bits_per_weight": bits_per_weight(*bytes, *elems),
                }),
            )
        })
        .collect();
    let id = identify(f, &Models::builtin());
    let model = id.family.map(|fam| {
        json!({
            "family": fam,
            "family_from_key": id.family_from_key,
            "known": id.known.as_ref().map(|k| json!({"name": k.name, "repo": k.repo})),
            "matched_by": id.matched_by,
            "warnings": id.warnings,
        })
    });
    json!({
        "file": args.file.display().to_string(),
        "model": model,
        "version": f.version(),
        "file_size": f.file_size(),
        "alignment": f.alignment(),
        "data_offset": f.data_offset(),
        "architecture": f.architecture(),
        "metadata": metadata,
        "tensors": tensors,
        "totals": {
            "n_tensors": f.tensors().len(),
            "n_parameters": t.n_elements,
            "n_bytes": t.n_bytes,
            "bits_per_weight": bits_per_weight(t.n_bytes, t.n_elements),
            "by_type": by_type,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(7_273_408_512), "7,273,408,512");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.00 MiB");
        assert_eq!(f32_json(1e-5), json!(1e-5));
        assert_eq!(f32_json(f32::NAN), json!("NaN"));
    }

    #[test]
    fn summaries_cut_long_values() {
        let l = Limits::new(false);
        let a = Array::String((0..100).map(|i| format!("t{i}")).collect());
        assert_eq!(
            array_text(&a, l),
            r#"["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", ... 92 more]"#
        );
        let j = array_json(&a, l);
        assert_eq!(j["len"], json!(100));
        assert_eq!(j["items"].as_array().map(Vec::len), Some(8));
        assert_eq!(j["truncated"], json!(true));
        let long = "x".repeat(500);
        assert!(quoted(&long, l).contains("500 bytes"));
        assert_eq!(string_json(&long, l)["truncated"], json!(true));
        assert_eq!(quoted("a\nb", l), r#""a\nb""#);
    }
}
