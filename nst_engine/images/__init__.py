"""Untrusted image decode and budget-fitting encode, style presets and generated styles."""
