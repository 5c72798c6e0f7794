"""Pure music I/O: piano-rolls, MIDI, audio."""
