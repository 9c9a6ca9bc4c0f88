//! quayside's own log as text: one event, one line. Field values come from outside (label
//! values, container names, error texts), so control characters in them are escaped
//! (`\n`, `\r`, `\t`, `\u{1b}`): a value can never print a second, forged line. The JSON log
//! (`--log-json`) escapes them as JSON does.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// The fields of a text log line, as tracing-subscriber's default writes them (the message,
/// then `name=value`), with control characters escaped.
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = Visitor {
            writer: &mut writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut v);
        v.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
    first: bool,
}

impl Visitor<'_, '_> {
    fn put(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let name = field.name();
        self.result = if name == "message" {
            write!(self.writer, "{sep}{}", Escaped(value))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{sep}{name}={}", Escaped(value))
        };
    }
}

impl Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.put(field, format_args!("{value}"));
        } else {
            self.put(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format_args!("{value:?}"));
    }
}

/// Formats its text with control characters escaped.
struct Escaped<'a>(fmt::Arguments<'a>);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Passes text on, escaping control characters.
        struct Out<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Out<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    match c {
                        '\n' => self.0.write_str("\\n")?,
                        '\r' => self.0.write_str("\\r")?,
                        '\t' => self.0.write_str("\\t")?,
                        c if c.is_control() => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                        c => self.0.write_char(c)?,
                    }
                }
                Ok(())
            }
        }
        fmt::write(&mut Out(f), self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a subscriber with these fields writes.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_value_with_a_newline_stays_on_its_line() {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .without_time()
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let label = "80\n2026-12-07T00:00:00Z  INFO forged line";
            tracing::warn!(value = %label, quoted = label, n = 3, "label {label} is invalid");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r"label 80\n2026-12-07T00:00:00Z  INFO forged line is invalid"),
            "{text}"
        );
        assert!(
            text.contains(r"value=80\n2026-12-07T00:00:00Z  INFO forged line"),
            "{text}"
        );
        assert!(
            text.contains(r#"quoted="80\n2026-12-07T00:00:00Z  INFO forged line""#),
            "{text}"
        );
        assert!(text.contains(" n=3"), "{text}");
    }
}
