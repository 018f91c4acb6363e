"""The activation service: a causal LM truncated at an SAE's hook layer, plus the SAE."""
