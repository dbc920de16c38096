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

/// Renders a HF chat template (Jinja) with `messages`, `add_generation_prompt = true` and the special tokens.
pub fn render_template(
    template: &str,
    messages: &[ChatMessage],
    bos: Option<&str>,
    eos: Option<&str>,
) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
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
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| CoreError::Tokenizer(format!("chat template failed: {e}")))
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
