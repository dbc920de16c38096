"""Trains the demo model's byte-level BPE tokenizer on the training split and saves it as an HF tokenizer.json.

Usage: python tokenizer.py DATA_DIR OUT_TOKENIZER_JSON
Id 0 is <|endoftext|>, which separates documents in training; the post-processor puts it before every encoded text, so
a prompt starts where a training document starts.
"""
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB = 2048
EOT = "<|endoftext|>"


def main():
    data, out = sys.argv[1], sys.argv[2]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([f"{data}/train.txt"], trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", special_tokens=[(EOT, 0)])
    tok.save(out)
    print(f"{tok.get_vocab_size()} tokens; 'a cat (noun):' -> {tok.encode('a cat (noun):').tokens}")


if __name__ == "__main__":
    main()
