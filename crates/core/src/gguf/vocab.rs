//! llama.cpp's tokenizer metadata (`tokenizer.ggml.*`) as Hugging Face `tokenizer.json` and
//! `tokenizer_config.json` texts, so a llama.cpp GGUF file runs on text like a Hub directory:
//!
//! - `gpt2`: byte-level BPE from `tokens` and `merges`, pre-tokenised by the regex `tokenizer.ggml.pre` names
//!   (GPT-2's own, Llama 3's, Qwen2's or SmolLM's, as in each model's HF tokenizer);
//! - `llama`: SentencePiece BPE with byte fallback from `tokens` and `scores`, its merges derived from the scores
//!   as transformers' SentencePiece converter derives them (every split of a piece into two pieces of the
//!   vocabulary, ranked by the score of the piece they make).
//!
//! Control tokens (`token_type` 3) become special added tokens, user-defined ones (4) plain added tokens;
//! `add_bos_token` becomes a post-processor; `tokenizer.chat_template` and the BOS/EOS strings go to the
//! `tokenizer_config.json`.

use super::{Gguf, Value};
use crate::{CoreError, Result};
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;

/// Pre-tokeniser regexes by `tokenizer.ggml.pre`, as the models' HF tokenizers split text before byte-level BPE.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` values mapped.
pub const PRE_TOKENIZERS: &[&str] = &["default", "gpt-2", "llama-bpe", "llama3", "qwen2", "smollm"];

/// llama.cpp's token types.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

fn bad(message: String) -> CoreError {
    CoreError::Tokenizer(format!("GGUF tokenizer metadata: {message}"))
}

fn array<'a>(header: &'a Gguf, key: &str) -> Result<Option<&'a [Value]>> {
    match header.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(bad(format!("`{key}` is not an array"))),
    }
}

fn strings<'a>(header: &'a Gguf, key: &str) -> Result<Option<Vec<&'a str>>> {
    array(header, key)?
        .map(|items| {
            items.iter().map(|v| v.as_str().ok_or_else(|| bad(format!("`{key}` holds a non-string")))).collect()
        })
        .transpose()
}

fn token_id(header: &Gguf, key: &str, tokens: &[&str]) -> Result<Option<usize>> {
    match header.get(key).map(|v| v.as_u64().ok_or_else(|| bad(format!("`{key}` is not an id")))).transpose()? {
        Some(id) if id as usize >= tokens.len() => {
            Err(bad(format!("`{key}` {id} is past the {}-token vocabulary", tokens.len())))
        }
        other => Ok(other.map(|id| id as usize)),
    }
}

fn flag(header: &Gguf, key: &str, default: bool) -> bool {
    match header.get(key) {
        Some(Value::Bool(b)) => *b,
        _ => default,
    }
}

/// `tokenizer.json` and `tokenizer_config.json` texts from a llama.cpp file's tokenizer metadata, or `None` when
/// it has none.
pub fn tokenizer_files(header: &Gguf) -> Result<Option<(String, String)>> {
    let Some(kind) = header.get("tokenizer.ggml.model") else { return Ok(None) };
    let kind = kind.as_str().ok_or_else(|| bad("`tokenizer.ggml.model` is not a string".into()))?;
    let tokens = strings(header, "tokenizer.ggml.tokens")?.ok_or_else(|| bad("no `tokenizer.ggml.tokens`".into()))?;
    let types: Vec<u64> = match array(header, "tokenizer.ggml.token_type")? {
        Some(items) if items.len() == tokens.len() => items.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        Some(items) => return Err(bad(format!("{} token types for {} tokens", items.len(), tokens.len()))),
        None => vec![1; tokens.len()],
    };
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        vocab.entry(token.to_string()).or_insert(json!(id));
    }
    let bos = token_id(header, "tokenizer.ggml.bos_token_id", &tokens)?;
    let eos = token_id(header, "tokenizer.ggml.eos_token_id", &tokens)?;
    let unk = token_id(header, "tokenizer.ggml.unknown_token_id", &tokens)?;
    let (model, normalizer, pre_tokenizer, decoder, add_bos_default) = match kind {
        "gpt2" => {
            let merges =
                strings(header, "tokenizer.ggml.merges")?.ok_or_else(|| bad("no `tokenizer.ggml.merges`".into()))?;
            let pre = header.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
            let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
            let split = |regex: &str| {
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                    byte_level(false)]})
            };
            let pre_tokenizer = match pre {
                "default" | "gpt-2" => byte_level(true),
                "llama-bpe" | "llama3" => split(LLAMA3_SPLIT),
                "qwen2" => split(QWEN2_SPLIT),
                "smollm" => json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                other => {
                    return Err(CoreError::Unsupported {
                        what: "GGUF pre-tokenizer",
                        name: other.to_string(),
                        supported: PRE_TOKENIZERS.join(", "),
                    })
                }
            };
            let model = json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": matches!(pre, "llama-bpe" | "llama3"), "vocab": vocab, "merges": merges});
            let decoder =
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true});
            (model, Json::Null, pre_tokenizer, decoder, false)
        }
        "llama" => {
            let scores =
                array(header, "tokenizer.ggml.scores")?.ok_or_else(|| bad("no `tokenizer.ggml.scores`".into()))?;
            if scores.len() != tokens.len() {
                return Err(bad(format!("{} scores for {} tokens", scores.len(), tokens.len())));
            }
            let scores: Vec<f64> = scores
                .iter()
                .map(|v| match v {
                    Value::Float(f) => Ok(*f),
                    _ => Err(bad("`tokenizer.ggml.scores` holds a non-float".into())),
                })
                .collect::<Result<_>>()?;
            let model = json!({"type": "BPE", "dropout": null, "unk_token": unk.map(|i| tokens[i]),
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                "ignore_merges": false, "vocab": vocab, "merges": sentencepiece_merges(&tokens, &scores)});
            let normalizer = json!({"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
            let decoder = json!({"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
            (model, normalizer, Json::Null, decoder, true)
        }
        other => {
            return Err(CoreError::Unsupported {
                what: "GGUF tokenizer model",
                name: other.to_string(),
                supported: "gpt2 (byte-level BPE), llama (SentencePiece BPE)".into(),
            })
        }
    };
    let added: Vec<Json> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == CONTROL || t == USER_DEFINED)
        .map(|(id, &t)| {
            json!({"id": id, "content": tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": t == CONTROL})
        })
        .collect();
    let post_processor = match bos.filter(|_| flag(header, "tokenizer.ggml.add_bos_token", add_bos_default)) {
        Some(b) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tokens[b], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tokens[b], "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tokens[b]: {"id": tokens[b], "ids": [b], "tokens": [tokens[b]]}}}),
        None => Json::Null,
    };
    let tokenizer = json!({"version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": decoder, "model": model});
    let mut config = json!({
        "bos_token": bos.map(|i| tokens[i]),
        "eos_token": eos.map(|i| tokens[i]),
    });
    if let Some(template) = header.get("tokenizer.chat_template").and_then(Value::as_str) {
        config["chat_template"] = json!(template);
    }
    Ok(Some((tokenizer.to_string(), config.to_string())))
}

/// BPE merges of a SentencePiece vocabulary: every split of a piece into two pieces that are themselves in the
/// vocabulary, ordered by the merged piece's score (highest first), ties by the pieces' ids.
fn sentencepiece_merges(tokens: &[&str], scores: &[f64]) -> Vec<Json> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let mut local: Vec<(usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*ids.get(&piece[..at])?, *ids.get(&piece[at..])?)))
            .collect();
        local.sort();
        merges.extend(local.into_iter().map(|(l, r)| (scores[id], id, l, r)));
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then((a.2, a.3).cmp(&(b.2, b.3))));
    merges.into_iter().map(|(_, _, l, r)| json!([tokens[l], tokens[r]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;
    use crate::tokenizer::Tokenizer;

    fn strs(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::Str(s.to_string())).collect())
    }

    fn header(meta: Vec<(&str, Value)>) -> Gguf {
        let mut w = GgufWriter::new();
        for (k, v) in meta {
            w.meta(k, v);
        }
        Gguf::parse(&w.to_bytes()).unwrap()
    }

    fn load(header: &Gguf) -> Tokenizer {
        let (json, config) = tokenizer_files(header).unwrap().unwrap();
        Tokenizer::from_bytes(json.as_bytes(), Some(config.as_bytes())).unwrap()
    }

    /// A Llama-3-style file: byte-level tokens, merges that join digits and letters, a control token, BOS added.
    /// Its tokenizer is checked against the same vocabulary written as Llama 3's `tokenizer.json` lays it out.
    #[test]
    fn llama3_style_byte_level_bpe_matches_its_hub_layout() {
        let mut tokens: Vec<String> =
            tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().map(String::from).collect();
        tokens.sort();
        let merges = ["1 2", "12 3", "4 5", "H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        tokens.extend(["<|begin_of_text|>".to_string(), "<|eot_id|>".to_string()]);
        let n = tokens.len();
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let mut types = vec![Value::Int(1); n];
        types[n - 2] = Value::Int(3);
        types[n - 1] = Value::Int(3);
        let h = header(vec![
            ("tokenizer.ggml.model", Value::Str("gpt2".into())),
            ("tokenizer.ggml.pre", Value::Str("llama-bpe".into())),
            ("tokenizer.ggml.tokens", strs(&refs)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", strs(&merges)),
            ("tokenizer.ggml.bos_token_id", Value::Uint(n as u64 - 2)),
            ("tokenizer.ggml.eos_token_id", Value::Uint(n as u64 - 1)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.chat_template", Value::Str("{% for m in messages %}{{ m.content }}{% endfor %}".into())),
        ]);
        let converted = load(&h);
        let vocab: Map<String, Json> = refs.iter().enumerate().map(|(i, t)| (t.to_string(), json!(i))).collect();
        let hub = json!({"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [
                {"id": n - 2, "content": "<|begin_of_text|>", "single_word": false, "lstrip": false, "rstrip": false,
                 "normalized": false, "special": true},
                {"id": n - 1, "content": "<|eot_id|>", "single_word": false, "lstrip": false, "rstrip": false,
                 "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [n - 2],
                                   "tokens": ["<|begin_of_text|>"]}}},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
                "vocab": vocab, "merges": merges}});
        let hub = Tokenizer::from_bytes(hub.to_string().as_bytes(), None).unwrap();
        for text in ["Hello world", "12345 1234\n\nHello<|eot_id|> it's", "  world  wor ld ", "ünïcödé 3.14"] {
            let ids = converted.encode(text, true).unwrap();
            assert_eq!(ids, hub.encode(text, true).unwrap(), "{text:?}");
            assert_eq!(converted.decode(&ids).unwrap(), text.replace("<|eot_id|>", ""), "{text:?}");
        }
        let ids = converted.encode("Hello world 12345", true).unwrap();
        let pieces: Vec<&str> = ids.iter().map(|&i| refs[i as usize]).collect();
        assert_eq!(pieces, ["<|begin_of_text|>", "Hello", "Ġworld", "Ġ", "123", "45"]);
        assert!(converted.has_chat_template());
    }

    /// A SentencePiece file: merges come from the scores, unknown characters fall back to bytes, BOS is added by
    /// default and the leading space is restored on decoding.
    #[test]
    fn sentencepiece_vocabulary_merges_by_score_and_falls_back_to_bytes() {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let pieces = [
            ("\u{2581}", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("w", -2.0),
            ("r", -2.0),
            ("d", -2.0),
            ("\u{2581}h", -3.0),
            ("he", -9.0),
            ("ll", -4.0),
            ("\u{2581}he", -5.0),
            ("llo", -6.0),
            ("\u{2581}hello", -7.0),
            ("\u{2581}w", -3.5),
            ("or", -4.5),
            ("\u{2581}wor", -6.5),
            ("ld", -5.5),
            ("\u{2581}world", -8.0),
        ];
        let mut scores: Vec<Value> = vec![Value::Float(0.0); tokens.len()];
        let mut types: Vec<Value> = [2, 3, 3].into_iter().map(Value::Int).collect();
        types.extend((0..256).map(|_| Value::Int(6)));
        for (p, s) in pieces {
            tokens.push(p.to_string());
            scores.push(Value::Float(s));
            types.push(Value::Int(1));
        }
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let h = header(vec![
            ("tokenizer.ggml.model", Value::Str("llama".into())),
            ("tokenizer.ggml.tokens", strs(&refs)),
            ("tokenizer.ggml.scores", Value::Array(scores)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.unknown_token_id", Value::Uint(0)),
            ("tokenizer.ggml.bos_token_id", Value::Uint(1)),
            ("tokenizer.ggml.eos_token_id", Value::Uint(2)),
        ]);
        let tok = load(&h);
        let ids = tok.encode("hello world hey", true).unwrap();
        let got: Vec<&str> = ids.iter().map(|&i| refs[i as usize]).collect();
        assert_eq!(got, ["<s>", "\u{2581}hello", "\u{2581}world", "\u{2581}he", "<0x79>"]);
        assert_eq!(tok.decode(&ids).unwrap(), "hello world hey");
    }

    #[test]
    fn unknown_tokenizer_kinds_and_inconsistent_arrays_are_refused() {
        let tokens = strs(&["a", "b"]);
        let cases = [
            (
                vec![("tokenizer.ggml.model", Value::Str("rwkv".into())), ("tokenizer.ggml.tokens", tokens.clone())],
                "rwkv",
            ),
            (
                vec![
                    ("tokenizer.ggml.model", Value::Str("gpt2".into())),
                    ("tokenizer.ggml.pre", Value::Str("mystery".into())),
                    ("tokenizer.ggml.tokens", tokens.clone()),
                    ("tokenizer.ggml.merges", strs(&[])),
                ],
                "mystery",
            ),
            (
                vec![
                    ("tokenizer.ggml.model", Value::Str("llama".into())),
                    ("tokenizer.ggml.tokens", tokens.clone()),
                    ("tokenizer.ggml.scores", Value::Array(vec![Value::Float(0.0)])),
                ],
                "1 scores for 2 tokens",
            ),
            (
                vec![
                    ("tokenizer.ggml.model", Value::Str("gpt2".into())),
                    ("tokenizer.ggml.tokens", tokens.clone()),
                    ("tokenizer.ggml.merges", strs(&[])),
                    ("tokenizer.ggml.bos_token_id", Value::Uint(7)),
                ],
                "past the 2-token vocabulary",
            ),
        ];
        for (meta, expect) in cases {
            let e = tokenizer_files(&header(meta)).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
        assert!(tokenizer_files(&header(vec![])).unwrap().is_none());
    }
}
