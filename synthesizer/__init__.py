"""synthesizer."""
