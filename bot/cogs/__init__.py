"""One feature per extension: stylize (jobs), presets, admin."""
