"""Symbolic explanation: a library of predicates over tokens in context (lexical,
grammar, meaning, spelling, structure, context), the tagger and WordNet they are
read from, and the probe texts that make each predicate true or false."""
