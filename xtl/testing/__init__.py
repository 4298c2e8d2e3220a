"""Test support shipped with xtl (not the research API): a random model built in
code (`random_model`), small results tables built by hand (`tables`), and the
tokenizer part of the test GGUF files (`gguf`)."""
