//! Text ↔ token ids through HF `tokenizer.json`, and chat prompts through the model's Jinja chat template.

use crate::{CoreError, Result};
use serde::Serialize;
use serde_json::Value;

/// A loaded tokenizer plus what `tokenizer_config.json` says about chat formatting.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// One chat message for [`Tokenizer::render_chat`].
#[derive(Clone, Debug, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` bytes and, when given, `tokenizer_config.json` bytes (for the chat template).
    pub fn from_bytes(tokenizer_json: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Self> {
        // UTF-8 and syntax first: the tokenizers crate panics on some syntax errors inside its untagged enums
        // (found by fuzzing; `fuzz/regressions/tokenizer`), never on valid JSON of the wrong shape.
        let json = |message: String| CoreError::Json { path: "tokenizer.json".into(), message };
        let text = std::str::from_utf8(tokenizer_json).map_err(|e| json(e.to_string()))?;
        let value: Value = serde_json::from_str(text).map_err(|e| json(e.to_string()))?;
        if let Some(p) = value.get("post_processor") {
            check_post_processor(p)?;
        }
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| CoreError::Tokenizer(format!("tokenizer.json: {e}")))?;
        let config: Value = match tokenizer_config {
            Some(b) => serde_json::from_slice(b)
                .map_err(|e| CoreError::Json { path: "tokenizer_config.json".into(), message: e.to_string() })?,
            None => Value::Null,
        };
        let chat_template = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str).map(String::from)),
            _ => None,
        };
        Ok(Tokenizer {
            inner,
            chat_template,
            bos_token: special_token(&config, "bos_token"),
            eos_token: special_token(&config, "eos_token"),
        })
    }

    /// Refuses a tokenizer that can produce ids the model's embedding has no row for (a tokenizer from another
    /// model): its largest id, added tokens included, must be below `embedding_rows`.
    pub fn check_vocab(&self, embedding_rows: usize) -> Result<()> {
        match self.inner.get_vocab(true).values().max() {
            Some(&max) if max as usize >= embedding_rows => Err(CoreError::Tokenizer(format!(
                "tokenizer.json has token id {max} but the model's embedding has only {embedding_rows} rows (a \
                 tokenizer from another model?)"
            ))),
            _ => Ok(()),
        }
    }

    /// Encodes text to ids. `add_special_tokens` applies the tokenizer's post-processor (e.g. a leading BOS) for
    /// plain prompts; rendered chat templates already contain their special tokens and pass `false`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids to text, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| CoreError::Tokenizer(e.to_string()))
    }

    /// Whether a chat template is available.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders messages through the chat template (with the generation prompt appended).
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| CoreError::Tokenizer("this model has no chat_template in tokenizer_config.json".into()))?;
        render_template(template, messages, self.bos_token.as_deref(), self.eos_token.as_deref())
    }
}

/// Refuses a `TemplateProcessing` post-processor (alone or in a `Sequence`) that names a special token it does
/// not define, or defines one with unequal `ids` and `tokens`: the tokenizers crate accepts both when it loads the
/// file and panics when it encodes (found by fuzzing).
fn check_post_processor(p: &Value) -> Result<()> {
    let bad = |m: String| CoreError::Tokenizer(format!("tokenizer.json: post_processor: {m}"));
    for inner in p.get("processors").and_then(Value::as_array).into_iter().flatten() {
        check_post_processor(inner)?;
    }
    // By shape, not by `type`: the crate falls back to untagged matching, so a misspelt type still loads.
    let defined = p.get("special_tokens").and_then(Value::as_object);
    for (name, token) in defined.into_iter().flatten() {
        let len = |k: &str| token.get(k).and_then(Value::as_array).map(Vec::len);
        if len("ids") != len("tokens") {
            return Err(bad(format!("special token `{name}` has unequal ids and tokens")));
        }
    }
    let pieces = ["single", "pair"].into_iter().filter_map(|k| p.get(k).and_then(Value::as_array));
    for piece in pieces.flatten() {
        let id = piece.get("SpecialToken").and_then(|t| t.get("id")).and_then(Value::as_str);
        if let Some(id) = id.filter(|id| defined.is_none_or(|d| !d.contains_key(*id))) {
            return Err(bad(format!("the template uses special token `{id}`, which it does not define")));
        }
    }
    Ok(())
}

/// Template instructions one render may execute: a chat template is code from a stranger's file, and this bounds
/// its running time (a long conversation through a tool-calling template takes well under a million).
pub const TEMPLATE_FUEL: u64 = 20_000_000;
/// The most bytes a rendered prompt may have.
pub const MAX_PROMPT_BYTES: usize = 16 << 20;

/// An `io::Write` into a string that refuses to grow past [`MAX_PROMPT_BYTES`].
struct CappedOutput(Vec<u8>);

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > MAX_PROMPT_BYTES {
            return Err(std::io::ErrorKind::FileTooLarge.into());
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuses a format string (for the `format` filter or `str.format`) that minijinja 2.24 cannot format safely
/// (both found by fuzzing; `fuzz/regressions/chat_template`): a non-ASCII character inside a `%(key)` or `{key}`,
/// which it slices byte by byte and panics on, and a width or precision of five digits or more, which it allocates
/// (`'%0755094444d' | format(7)` asks for 75 GB). Real templates use ASCII keys and small widths.
fn check_format_string(value: &minijinja::Value) -> std::result::Result<(), minijinja::Error> {
    let Some(text) = value.as_str() else { return Ok(()) };
    let refuse = |why: &str| Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, why.to_string()));
    let bytes = text.as_bytes();
    let long_number = |spec: &[u8]| spec.split(|c| !c.is_ascii_digit()).any(|run| run.len() >= 5);
    for (i, &b) in bytes.iter().enumerate() {
        let rest = &bytes[i + 1..];
        let spec = match (b, rest.first()) {
            (b'%', first) => {
                let after = match first {
                    Some(b'(') => {
                        let end = rest.iter().position(|&c| c == b')').unwrap_or(rest.len());
                        if !rest[..end].is_ascii() {
                            return refuse("format keys must be ASCII names");
                        }
                        &rest[(end + 1).min(rest.len())..]
                    }
                    _ => rest,
                };
                &after[..after.iter().position(|c| !b"-+ #0123456789.*".contains(c)).unwrap_or(after.len())]
            }
            (b'{', _) => {
                let field = &rest[..rest.iter().position(|&c| c == b'}').unwrap_or(rest.len())];
                if !field.is_ascii() {
                    return refuse("format keys must be ASCII names");
                }
                field
            }
            _ => continue,
        };
        if long_number(spec) {
            return refuse("format widths and precisions above 9999 are refused");
        }
    }
    Ok(())
}

/// Renders a HF chat template (Jinja) with `messages`, `add_generation_prompt = true` and the special tokens.
///
/// The template runs sandboxed: minijinja has no file, network or environment access, templates cannot include
/// others (no loader is set), and a render stops with an error after [`TEMPLATE_FUEL`] instructions or
/// [`MAX_PROMPT_BYTES`] of output.
pub fn render_template(
    template: &str,
    messages: &[ChatMessage],
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(|state, value, method, args| {
        if method == "format" {
            check_format_string(value)?;
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
    env.add_filter(
        "format",
        |state: &minijinja::State, value: &minijinja::Value, rest: minijinja::value::Rest<minijinja::Value>| {
            check_format_string(value)?;
            minijinja::filters::format(state, value, rest)
        },
    );
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| CoreError::Tokenizer(format!("chat template does not parse: {e}")))?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos.unwrap_or(""),
        eos_token => eos.unwrap_or(""),
    };
    let mut out = CappedOutput(Vec::new());
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.get_template("chat").and_then(|t| t.render_captured_to(ctx, &mut out).map(drop)).map_err(|e| {
        match e.kind() == minijinja::ErrorKind::WriteFailure {
            // Only the capped output fails to write.
            true => CoreError::Tokenizer(format!("chat template output exceeds the {MAX_PROMPT_BYTES}-byte cap")),
            false => CoreError::Tokenizer(format!("chat template failed: {e}")),
        }
    })?;
    String::from_utf8(out.0).map_err(|_| CoreError::Tokenizer("chat template produced invalid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str =
        "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}\
        {% if add_generation_prompt %}<|assistant|>{% endif %}";

    #[test]
    fn chat_template_renders_with_python_methods() {
        let msgs = vec![ChatMessage { role: "user".into(), content: "  hi  ".into() }];
        let out = render_template(TEMPLATE, &msgs, Some("<s>"), None).unwrap();
        assert_eq!(out, "<s><|user|>hi\n<|assistant|>");
    }

    #[test]
    fn raise_exception_and_bad_templates_become_errors() {
        let e = render_template("{{ raise_exception('no system role') }}", &[], None, None).unwrap_err();
        assert!(e.to_string().contains("no system role"), "{e}");
        assert!(render_template("{% for %}", &[], None, None).is_err());
    }

    #[test]
    fn runaway_templates_stop_at_their_limits() {
        let msgs = vec![ChatMessage { role: "user".into(), content: "x".repeat(1 << 16) }];
        let cases = [
            ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "fuel"),
            ("{% for i in range(100000) %}{% for m in messages %}{{ m.content }}{% endfor %}{% endfor %}", "exceed"),
            ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursion"),
            ("{% include 'other' %}", "not found"),
            ("{{ '%(\u{e9})s' | format(x=1) }}", "ASCII"),
            ("{{ '{\u{e9}}'.format(1) }}", "ASCII"),
            ("{{ '%0755094444d' | format(7) }}", "9999"),
            ("{{ '%12345d' | format(7) }}", "9999"),
            ("{{ '{:>123456}'.format(7) }}", "9999"),
        ];
        for (template, expect) in cases {
            let e = render_template(template, &msgs, None, None).unwrap_err().to_string();
            assert!(e.contains(expect) && !e.contains('\n'), "{template}: {e}");
        }
    }

    #[test]
    fn byte_tokenizer_round_trips() {
        let json =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/llama/tokenizer.json")).unwrap();
        let cfg = br#"{"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}", "eos_token": {"content": "x"}}"#;
        let tok = Tokenizer::from_bytes(&json, Some(cfg)).unwrap();
        let ids = tok.encode("héllo", true).unwrap();
        assert_eq!(ids.len(), 6);
        assert_eq!(tok.decode(&ids).unwrap(), "héllo");
        assert!(tok.has_chat_template());
        assert!(Tokenizer::from_bytes(b"{}", None).is_err());
    }
}
