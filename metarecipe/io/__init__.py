"""Data and model I/O, below every other part: atomic writes, Kaldi tables, utterance pools, model files.

No torch is imported here, so that light commands (score, lm-text) start fast; import the module you need."""
