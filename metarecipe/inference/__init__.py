"""Transcribing recordings: audio streaming, voice-activity detection, recognition and transcript formats."""
