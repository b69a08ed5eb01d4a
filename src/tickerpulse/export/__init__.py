"""Export stage: fuse an adapter into a standalone HF model (`fuse`), write GGUF for llama.cpp (`gguf`,
`gguf_vocab`), and check the GGUF answers like the PyTorch model (`roundtrip`)."""
