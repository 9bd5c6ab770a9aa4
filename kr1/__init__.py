"""kr1: Knowledge-R1, Ray-native RL for language models that reason with a search engine."""

__version__ = "0.1.0"
