"""Test support shipped with xtl (not the research API): a random model built in
code (`random_model`) and small results tables built by hand (`tables`)."""
