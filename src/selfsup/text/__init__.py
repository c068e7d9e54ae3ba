"""Text: corpora, tokenizers, tokenized datasets and the text downstream evaluation.

The text tasks themselves live in selfsup.tasks (mlm, nsp, mlm+nsp, clm, tlm, word2vec) and the
Transformer in selfsup.backbones.transformer; training runs in the same engine as images.
"""
